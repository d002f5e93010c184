"""``essence idvae train | sample | reconstruct | interpolate | evaluate | reproduce``.

    essence idvae train --preset quick --set model.kind=vaegan        # or idvae (default) / vae
    torchrun --nproc_per_node=2 -m essence idvae train --preset tiny --device cpu
    essence idvae train --resume runs/idvae/<run>                      # continue exactly
    essence idvae sample runs/idvae/<run> --n 64 -o samples.png         # PNG grid, or .npz: images uint8 (N, H, W, C)
    essence idvae sample runs/idvae/<run> --n 64 --class 3 -o dresses.npz   (conditional model)
    essence idvae reconstruct runs/idvae/<run> images.npz -o rec.png    # a folder of images or an .npy/.npz array
    essence idvae interpolate runs/idvae/<run> -o interp.png --steps 8
    essence idvae evaluate runs/idvae/<run>                            # FID per expert, precision/recall, MSE
    essence idvae reproduce --preset standard                          # the paper's claims with CIs, a report
"""

from __future__ import annotations

import json
from pathlib import Path

from essence.core.cli import UsageError, add_run_args, method_parser, reproduce_command, run_cli

__all__ = ["main"]


def _train(args) -> int:
    from essence.core import distributed as dist
    from essence.core.checkpoint import read_checkpoint
    from essence.core.progress import console
    from essence.core.runs import Run
    from essence.idvae.config import PRESETS, IDVAEConfig
    from essence.idvae.train import train

    if args.resume:
        src = Path(args.resume)
        ckpt_dir = src / "checkpoints" if (src / "checkpoints").is_dir() else src
        ckpt = read_checkpoint(ckpt_dir)
        if ckpt.config is None:
            raise ValueError(f"{ckpt.path} carries no config; it was not written by essence idvae")
        cfg = IDVAEConfig.from_dict(ckpt.config).with_overrides(args.overrides)
        run = Run(args.out or (src if (src / "checkpoints").is_dir() else ckpt.path.parent.parent),
                  method="idvae", preset=args.preset)
        resume = ckpt.path
    else:
        cfg = PRESETS.build(args.preset, args.overrides)
        run = Run.create("idvae", args.preset, args.out, exact=args.out is not None)
        resume = None
    try:
        result = train(cfg, run, device=args.device, resume=resume, monitor=_fid_monitor(cfg, args.device))
        if dist.is_main():
            last = result.history[-1] if result.history else {}
            terms = ", ".join(f"{k} {v:.3g}" for k, v in last.items() if k.startswith(("L_", "D_")))
            console.print(f"idvae ({cfg.model.kind}): {result.step} steps, {result.images_per_s:.0f} images/s; "
                          f"{terms}; checkpoint {result.checkpoint}", highlight=False)
    finally:
        dist.cleanup()
    return 0


def _fid_monitor(cfg, device):
    """FID of prior samples under the classifier expert, for ``train.eval_every`` (None when it is 0)."""
    if not cfg.train.eval_every:
        return None
    from essence.idvae.data import load_images
    from essence.idvae.evaluate import build_experts, fid, generate, get_classifier

    dev = _device(device)
    expert = build_experts(("classifier",), data=cfg.data, cfg=cfg.eval, device=dev,
                           classifier=get_classifier(cfg.data, cfg.eval, device=dev)[0])["classifier"]
    n = min(cfg.eval.samples, 2000)
    real = expert(load_images(cfg.data, "test", limit=n)[0])

    def monitor(model) -> dict:
        labels = None
        if model.conditional:
            import torch

            labels = torch.arange(n) % cfg.model.num_classes
        return {"fid_classifier": fid(real, expert(generate(model, n, seed=99, labels=labels, device=dev)))}

    return monitor


def _load(args):
    from essence.idvae.evaluate import load_model

    return load_model(args.run, device=_device(args.device))


def _device(name: str):
    from essence.core.runtime import resolve_device

    return resolve_device(name)


def _labels(model, cfg, n: int, cls: int | None):
    import torch

    if cls is None:
        return torch.arange(n) % cfg.model.num_classes if model.conditional else None
    if not model.conditional:
        raise UsageError("--class applies to a conditional model; this run was trained with "
                         "model.conditional=false")
    if not 0 <= cls < cfg.model.num_classes:
        raise UsageError(f"--class must be in 0..{cfg.model.num_classes - 1}, got {cls}")
    return torch.full((n,), cls, dtype=torch.long)


def _sample(args) -> int:
    from essence.idvae.data import write_images
    from essence.idvae.evaluate import generate

    if args.n < 1:
        raise UsageError(f"--n must be a positive integer, got {args.n}")
    model, cfg, _ = _load(args)
    labels = _labels(model, cfg, args.n, args.cls)
    images = generate(model, args.n, seed=args.seed, labels=labels, device=_device(args.device))
    path = write_images(images, args.output)
    print(f"{args.n} samples -> {path}")
    return 0


def _reconstruct(args) -> int:
    import numpy as np
    import torch

    from essence.idvae.data import read_images, write_images
    from essence.idvae.evaluate import reconstruct_images

    model, cfg, _ = _load(args)
    images = read_images(args.images, size=cfg.model.image_size, channels=cfg.model.channels)
    labels = None
    if model.conditional:
        src = Path(args.images)
        if args.cls is not None:
            labels = _labels(model, cfg, images.shape[0], args.cls)
        elif src.suffix == ".npz" and "labels" in np.load(src):
            labels = torch.from_numpy(np.load(src)["labels"]).long()
            if labels.shape != (images.shape[0],):
                raise UsageError(f"{src.name}: labels must have shape ({images.shape[0]},), got {tuple(labels.shape)}")
            _labels(model, cfg, 1, int(labels.max()))   # range check
        else:
            raise UsageError("this model is conditional: give --class K or a 'labels' array in the .npz")
    elif args.cls is not None:
        _labels(model, cfg, 1, args.cls)                # raises: not conditional
    out = reconstruct_images(model, images, labels, device=_device(args.device))
    if Path(args.output).suffix == ".png":              # originals and reconstructions side by side
        n = images.shape[0]
        pairs = torch.stack([images, out], dim=1).reshape(2 * n, *images.shape[1:])
        path = write_images(pairs, args.output, nrow=2 * min(n, 8))
    else:
        path = write_images(out, args.output)
    print(f"{images.shape[0]} reconstructions -> {path}")
    return 0


def _interpolate(args) -> int:
    import torch

    from essence.core.loop import eval_mode
    from essence.idvae.data import read_images, to_model_range, to_uint8, write_images

    if args.steps < 2:
        raise UsageError(f"--steps must be at least 2, got {args.steps}")
    if args.pairs < 1:
        raise UsageError(f"--pairs must be a positive integer, got {args.pairs}")
    model, cfg, _ = _load(args)
    dev = _device(args.device)
    labels = _labels(model, cfg, 2 * args.pairs, args.cls)
    with eval_mode(model):
        if args.images:
            imgs = read_images(args.images, size=cfg.model.image_size, channels=cfg.model.channels)
            if imgs.shape[0] < 2 * args.pairs:
                raise UsageError(f"--images holds {imgs.shape[0]} images; {2 * args.pairs} are needed for "
                                 f"{args.pairs} pairs")
            _, z, _ = model.encode(to_model_range(imgs[:2 * args.pairs]).to(dev),
                                   labels.to(dev) if labels is not None else None)
        else:
            g = torch.Generator().manual_seed(args.seed)
            z = torch.randn(2 * args.pairs, cfg.model.latent, generator=g).to(dev)
        za, zb = z[0::2], z[1::2]                                            # (P, d) each
        t = torch.linspace(0, 1, args.steps, device=dev)[None, :, None]      # (1, T, 1)
        path_z = (za[:, None] * (1 - t) + zb[:, None] * t).reshape(-1, cfg.model.latent)   # (P*T, d)
        y = labels[0::2].repeat_interleave(args.steps).to(dev) if labels is not None else None
        images = to_uint8(model.decode(path_z, y)).cpu()
    path = write_images(images, args.output, nrow=args.steps)
    print(f"{args.pairs} interpolations x {args.steps} steps -> {path}")
    return 0


def _evaluate(args) -> int:
    from essence.idvae.evaluate import evaluate_checkpoint

    res = evaluate_checkpoint(args.run, device=_device(args.device), overrides=tuple(args.overrides))
    print(json.dumps(res, indent=2))
    return 0


_reproduce = reproduce_command("idvae")


def main(argv: list[str]) -> int:
    from essence.idvae.config import PRESETS

    presets = PRESETS.names()
    parser, sub = method_parser("idvae", "Implicit Discriminator in Variational Autoencoder (Munjal et al. 2019), "
                                         "with VAE and VAE-GAN baselines.")
    p = sub.add_parser("train", help="train IDVAE / VAE / VAE-GAN on Fashion-MNIST (resumable; works under torchrun)")
    add_run_args(p, presets=presets)
    p.add_argument("--resume", default=None, help="run directory or checkpoint to continue from")

    def model_args(p, *, n=False, cls=True):
        p.add_argument("run", help="run directory or checkpoint file")
        p.add_argument("-o", "--output", required=True, help="output file: .png (grid) or .npz (array)")
        p.add_argument("--device", default="auto")
        if cls:
            p.add_argument("--class", dest="cls", type=int, default=None,
                           help="class index for a conditional model")

    p = sub.add_parser("sample", help="decode prior samples z ~ N(0, I)")
    model_args(p)
    p.add_argument("--n", type=int, default=64, help="number of samples (default 64)")
    p.add_argument("--seed", type=int, default=0)
    p = sub.add_parser("reconstruct", help="reconstruct images G(mu(x)) (a folder of images or .npy/.npz array)")
    p.add_argument("run", help="run directory or checkpoint file")
    p.add_argument("images", help="folder of image files, or .npy / .npz (key 'images', optional 'labels')")
    p.add_argument("-o", "--output", required=True, help="output file: .png (originals | reconstructions) or .npz")
    p.add_argument("--device", default="auto")
    p.add_argument("--class", dest="cls", type=int, default=None, help="class of every image (conditional model)")
    p = sub.add_parser("interpolate", help="decode straight lines in latent space between pairs of codes")
    model_args(p)
    p.add_argument("--steps", type=int, default=8)
    p.add_argument("--pairs", type=int, default=4)
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--images", default=None, help="interpolate between the codes mu(x) of these images instead")
    p = sub.add_parser("evaluate", help="FID under each expert, precision/recall, test reconstruction MSE")
    p.add_argument("run", help="run directory or checkpoint file")
    p.add_argument("--device", default="auto")
    p.add_argument("--set", dest="overrides", action="append", default=[], metavar="KEY=VALUE",
                   help="override eval./data. keys, e.g. --set eval.samples=2000")
    p = sub.add_parser("reproduce", help="check the paper's claims at small scale and write a report")
    add_run_args(p, presets=presets)
    args = parser.parse_args(argv)
    fn = {"train": _train, "sample": _sample, "reconstruct": _reconstruct, "interpolate": _interpolate,
          "evaluate": _evaluate, "reproduce": _reproduce}[args.command]
    return run_cli(lambda: fn(args))
