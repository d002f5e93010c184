"""``essence stylegan2 train | generate | evaluate | project | detect | reproduce``.

    essence stylegan2 train --preset quick                          # Fashion-MNIST 32 x 32
    essence stylegan2 train --preset quick --set data.source=folder --set data.path=emoji/ \\
        --set model.img_channels=3 --set model.resolution=64
    torchrun --nproc_per_node=2 -m essence stylegan2 train --preset tiny --device cpu
    essence stylegan2 train --resume runs/stylegan2/<run>           # continue exactly
    essence stylegan2 generate runs/stylegan2/<run> --seeds 0-99 --trunc 0.7 -o samples/      # PNGs + grid
    essence stylegan2 generate runs/stylegan2/<run> --seeds 0-999 -o samples.npz              # uint8 NHWC
    essence stylegan2 evaluate runs/stylegan2/<run>                 # FID / P / R / PPL / Jacobian CV
    essence stylegan2 project runs/stylegan2/<run> image.png -o proj/   # w + noise maps, progress grid
    essence stylegan2 detect runs/stylegan2/<run> real.npz --n 100    # attribution AUC (real vs generated)
    essence stylegan2 reproduce --preset standard                   # the paper's claims, with a report
"""

from __future__ import annotations

import json
import warnings
from pathlib import Path

from essence.core.cli import add_run_args, device_arg, method_parser, reproduce_command, run_cli

__all__ = ["main", "parse_seeds"]


def parse_seeds(text: str) -> list[int]:
    """``0-99`` / ``1,5,7`` / ``0-3,10`` -> a list of non-negative ints."""
    out: list[int] = []
    try:
        for part in text.split(","):
            part = part.strip()
            if "-" in part:
                a, b = (int(v) for v in part.split("-", 1))
                if b < a:
                    raise ValueError
                out.extend(range(a, b + 1))
            elif part:
                out.append(int(part))
    except ValueError:
        raise ValueError(f"--seeds expects ranges and lists such as 0-99 or 1,5,7, got {text!r}") from None
    if not out or min(out) < 0:
        raise ValueError(f"--seeds expects non-negative integers, got {text!r}")
    return out


def check_trunc(psi: float) -> float:
    if not psi >= 0:
        raise ValueError(f"--trunc must be in [0, 1] (1 = no truncation), got {psi}")
    if psi > 1:
        warnings.warn(f"--trunc {psi} > 1 extrapolates away from the average w (the paper uses psi <= 1)",
                      stacklevel=2)
    return psi


def _train(args) -> int:
    from essence.core import distributed as dist
    from essence.core.checkpoint import read_checkpoint
    from essence.core.progress import console
    from essence.core.runs import Run
    from essence.stylegan2.config import PRESETS, StyleGAN2Config
    from essence.stylegan2.train import train

    if args.resume:
        src = Path(args.resume)
        ckpt_dir = src / "checkpoints" if (src / "checkpoints").is_dir() else src
        ckpt = read_checkpoint(ckpt_dir)
        cfg = StyleGAN2Config.from_dict(ckpt.require_config()).with_overrides(args.overrides)
        run = Run(args.out or (src if (src / "checkpoints").is_dir() else ckpt.path.parent.parent),
                  method="stylegan2", preset=args.preset)
        resume = ckpt.path
    else:
        cfg = PRESETS.build(args.preset, args.overrides)
        run = Run.create("stylegan2", args.preset, args.out, exact=args.out is not None, resumable=True)
        resume = None
    eval_fn = None
    if cfg.train.eval_every and cfg.data.source == "fashion_mnist" and cfg.model.resolution == 32:
        eval_fn = _fid_monitor(cfg, args.device)
    try:
        result = train(cfg, run, device=args.device, resume=resume, eval_fn=eval_fn)
        if dist.is_main():
            console.print(f"stylegan2: {result.step} steps, {result.images_per_s:.1f} images/s; "
                          f"checkpoint {result.checkpoint}")
    finally:
        dist.cleanup()
    return 0


def _fid_monitor(cfg, device):
    from essence.core.runtime import resolve_device
    from essence.stylegan2.data import load_fashion_mnist32
    from essence.stylegan2.evaluate import classifier_features_net, features_of, fid_from_features, generate_images

    dev = resolve_device(device)
    net, _ = classifier_features_net(cfg.eval.classifier_epochs, dev)
    real_feats = features_of(net, load_fashion_mnist32("test", cfg.data.path)[:cfg.eval.n_real], device=dev)

    def monitor(G, step):
        fake = generate_images(G, cfg.eval.n_gen, seed=12345, device=dev)
        return {"fid": fid_from_features(real_feats, features_of(net, fake, device=dev))}
    return monitor


def _generate(args) -> int:
    import numpy as np
    import torch

    from essence.core.progress import console
    from essence.core.runtime import resolve_device
    from essence.stylegan2.data import to_uint8
    from essence.stylegan2.evaluate import load_generator

    psi = check_trunc(args.trunc)
    seeds = parse_seeds(args.seeds)
    dev = resolve_device(args.device)
    G, _, step = load_generator(args.run, dev)
    z = torch.stack([torch.randn(G.z_dim, generator=torch.Generator().manual_seed(s)) for s in seeds])
    with torch.no_grad():
        imgs = torch.cat([G(z[i:i + 256].to(dev), psi=psi, noise_mode=args.noise_mode).float().cpu()
                          for i in range(0, len(seeds), 256)])
    u8 = to_uint8(imgs).permute(0, 2, 3, 1).numpy()                     # (N, H, W, C)
    out = Path(args.output)
    if out.suffix == ".npz":
        out.parent.mkdir(parents=True, exist_ok=True)
        np.savez_compressed(out, images=u8, seeds=np.array(seeds), psi=psi)
        console.print(f"{len(seeds)} images (uint8 {u8.shape}) -> {out}")
        return 0
    from PIL import Image

    out.mkdir(parents=True, exist_ok=True)
    for s, im in zip(seeds, u8):
        Image.fromarray(im[..., 0] if im.shape[-1] == 1 else im).save(out / f"seed{s:04d}.png")
    ncol = int(np.ceil(np.sqrt(len(seeds))))
    nrow = int(np.ceil(len(seeds) / ncol))
    H, W, C = u8.shape[1:]
    grid = np.zeros((nrow * H, ncol * W, C), dtype=np.uint8)
    for i, im in enumerate(u8):
        r, c = divmod(i, ncol)
        grid[r * H:(r + 1) * H, c * W:(c + 1) * W] = im
    Image.fromarray(grid[..., 0] if C == 1 else grid).save(out / "grid.png")
    if args.mixing:
        from essence.stylegan2.reproduce import _grid, style_mixing_grid

        g = _grid(style_mixing_grid(G, dev), 0)
        Image.fromarray(((g + 1) * 127.5).clip(0, 255).astype(np.uint8)).save(out / "style_mixing.png")
    console.print(f"{len(seeds)} images (step {step}, psi {psi}, noise {args.noise_mode}) -> {out}/")
    return 0


def _load_targets(path: str, G):
    """Images for projection: a PNG/JPEG file, a folder of them, or a .npy/.npz array -> [-1, 1] floats."""
    from essence.stylegan2.data import IMAGE_SUFFIXES, load_folder, load_numpy, to_signed

    p = Path(path)
    if p.is_dir():
        x = load_folder(p, G.img_channels)
    elif p.suffix in (".npy", ".npz"):
        x = load_numpy(p, G.img_channels)
    elif p.suffix.lower() in IMAGE_SUFFIXES:
        import numpy as np
        import torch
        from PIL import Image

        if not p.exists():
            raise FileNotFoundError(f"image not found: {p}")
        with Image.open(p) as im:
            arr = np.asarray(im.convert("L" if G.img_channels == 1 else "RGB"))
        x = torch.from_numpy(arr.reshape(arr.shape[0], arr.shape[1], -1)).permute(2, 0, 1)[None].contiguous()
    else:
        raise ValueError(f"expected an image file, a folder of images or a .npy/.npz file, got {p}")
    if x.shape[1:] != (G.img_channels, G.resolution, G.resolution):
        raise ValueError(f"{p}: images are {tuple(x.shape[1:])} (C, H, W) but the generator makes "
                         f"({G.img_channels}, {G.resolution}, {G.resolution})")
    return to_signed(x)


def _distance(cfg, dev):
    from essence.stylegan2.evaluate import classifier_features_net
    from essence.stylegan2.project import feature_distance

    if cfg.model.img_channels == 1 and cfg.model.resolution == 32:
        net, _ = classifier_features_net(cfg.eval.classifier_epochs, dev)
        return feature_distance(net)
    return lambda a, b: (a - b).square().mean(dim=(1, 2, 3))   # no feature network for this data: pixel MSE


def _project(args) -> int:
    import numpy as np
    from PIL import Image

    from essence.core.progress import console
    from essence.core.runtime import resolve_device
    from essence.stylegan2.evaluate import load_generator
    from essence.stylegan2.project import project
    from essence.stylegan2.reproduce import _grid

    dev = resolve_device(args.device)
    G, cfg, _ = load_generator(args.run, dev)
    targets = _load_targets(args.image, G)
    res = project(G, targets, _distance(cfg, dev), steps=args.steps, record_every=max(1, args.steps // 8))
    out = Path(args.output)
    out.mkdir(parents=True, exist_ok=True)
    np.savez(out / "projected_w.npz", w=res["w"].numpy(), distance=res["distance"])
    rows = [targets.cpu(), *res["progress"], res["images"]]
    import torch

    grid = _grid(torch.stack(rows, 1), 0)        # one row per target: target, progress..., final
    Image.fromarray(((grid + 1) * 127.5).clip(0, 255).astype(np.uint8)).save(out / "progress.png")
    console.print(f"projected {targets.shape[0]} image(s): distance {np.round(res['distance'], 4).tolist()} -> {out}/")
    return 0


def _detect(args) -> int:
    import numpy as np

    from essence.core.runtime import resolve_device
    from essence.stylegan2.evaluate import generate_images, load_generator
    from essence.stylegan2.project import attribution_auc, project

    dev = resolve_device(args.device)
    G, cfg, _ = load_generator(args.run, dev)
    real = _load_targets(args.images, G)[:args.n]
    fake = generate_images(G, real.shape[0], seed=args.seed, device=dev)
    dist = _distance(cfg, dev)
    d_real = project(G, real, dist, steps=args.steps)["distance"]
    d_fake = project(G, fake, dist, steps=args.steps)["distance"]
    auc = attribution_auc(d_real, d_fake)
    print(json.dumps({"auc": auc, "n_real": int(real.shape[0]), "n_generated": int(fake.shape[0]),
                      "distance_real_median": float(np.median(d_real)),
                      "distance_generated_median": float(np.median(d_fake))}, indent=2))
    return 0


def _evaluate(args) -> int:
    from essence.stylegan2.evaluate import evaluate_checkpoint

    res = evaluate_checkpoint(args.run, device=args.device, n_gen=args.n, inception=args.inception,
                              overrides=tuple(args.overrides))
    print(json.dumps(res, indent=2))
    return 0


_reproduce = reproduce_command("stylegan2")


def main(argv: list[str]) -> int:
    parser, sub = method_parser("stylegan2", "StyleGAN2 (Karras et al. 2019) in pure PyTorch.")
    p = sub.add_parser("train", help="train G and D (resumable; works under torchrun)")
    add_run_args(p)
    p.add_argument("--resume", default=None, help="run directory or checkpoint to continue from")
    p = sub.add_parser("generate", help="images from a run's EMA generator (PNGs + grid, or .npz)")
    p.add_argument("run", help="run directory or checkpoint")
    p.add_argument("--seeds", default="0-15", help="latent seeds, e.g. 0-99 or 1,5,7 (default 0-15)")
    p.add_argument("--trunc", type=float, default=1.0, help="truncation psi in [0, 1] (default 1: none)")
    p.add_argument("--noise-mode", default="const", choices=["const", "random", "none"])
    p.add_argument("--mixing", action="store_true", help="also write a style-mixing grid")
    p.add_argument("-o", "--output", required=True, help="folder for PNGs, or a .npz file (uint8 N,H,W,C)")
    p.add_argument("--device", default="auto", type=device_arg)
    p = sub.add_parser("evaluate", help="FID / precision / recall / PPL / Jacobian CV of a run's EMA generator")
    p.add_argument("run", help="run directory or checkpoint")
    p.add_argument("--device", default="auto", type=device_arg)
    p.add_argument("--n", type=int, default=None, help="generated images (default: eval.n_gen)")
    p.add_argument("--inception", type=int, default=0, metavar="N",
                   help="also FID with the offline Inception-v3 on N images (slow on a CPU)")
    p.add_argument("--set", dest="overrides", action="append", default=[], metavar="KEY=VALUE",
                   help="override eval. keys, e.g. --set eval.ppl_samples=500")
    p = sub.add_parser("project", help="project image(s) into W + noise maps (saves w and a progress grid)")
    p.add_argument("run", help="run directory or checkpoint")
    p.add_argument("image", help="a PNG/JPEG, a folder of images or a .npy/.npz array")
    p.add_argument("--steps", type=int, default=300)
    p.add_argument("-o", "--output", required=True, help="output folder")
    p.add_argument("--device", default="auto", type=device_arg)
    p = sub.add_parser("detect", help="attribution: projection distance of real vs generated images (AUC)")
    p.add_argument("run", help="run directory or checkpoint")
    p.add_argument("images", help="real images: a folder or a .npy/.npz array")
    p.add_argument("--n", type=int, default=100, help="real images used (and as many generated)")
    p.add_argument("--steps", type=int, default=300)
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--device", default="auto", type=device_arg)
    p = sub.add_parser("reproduce", help="check the paper's claims at small scale and write a report")
    add_run_args(p)
    args = parser.parse_args(argv)
    fn = {"train": _train, "generate": _generate, "evaluate": _evaluate, "project": _project, "detect": _detect,
          "reproduce": _reproduce}[args.command]
    return run_cli(lambda: fn(args))
