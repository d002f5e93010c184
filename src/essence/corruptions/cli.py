"""``essence corruptions``: list, apply, gallery, export, train, evaluate, reproduce."""

from __future__ import annotations

import argparse
from pathlib import Path

import numpy as np

from essence.core.cli import UsageError, add_run_args, method_parser, run_cli

__all__ = ["main"]

DESCRIPTION = ("ImageNet-C/P (Hendrycks & Dietterich, ICLR 2019): 19 corruptions, perturbation sequences and the "
               "robustness benchmark (CE, mCE, relative mCE, FP, T5D)")
IMAGE_SUFFIXES = {".png", ".jpg", ".jpeg", ".bmp", ".tif", ".tiff", ".webp"}


def _names(spec: str) -> list[str]:
    from essence.corruptions import CORRUPTIONS, SUBSETS, corruption_names

    if spec in SUBSETS:
        return corruption_names(spec)
    names = [s.strip() for s in spec.split(",") if s.strip()]
    for n in names:
        CORRUPTIONS.get(n)
    if not names:
        raise UsageError("--names must be a subset (common, all, noise, blur, weather, digital, extra) or names")
    return names


def _read_image(path: str, size: int | None = None) -> np.ndarray:
    from PIL import Image, UnidentifiedImageError

    p = Path(path)
    if not p.exists():
        raise FileNotFoundError(f"image not found: {path}")
    try:
        img = Image.open(p)
        img.load()
    except (UnidentifiedImageError, OSError) as err:
        raise ValueError(f"{path} is not a readable image: {err}") from None
    img = img if img.mode in ("L", "RGB") else img.convert("RGB")
    if size:
        img = img.resize((size, size), Image.BILINEAR)
    return np.asarray(img)


def _cmd_list(args) -> int:
    from essence.core.progress import print_table
    from essence.corruptions import CORRUPTIONS, ORDER
    from essence.corruptions.perturbations import PERTURBATIONS

    print_table(["corruption", "family", "random"],
                [(n, CORRUPTIONS.get(n).family, "yes" if CORRUPTIONS.get(n).random else "no") for n in ORDER],
                title="ImageNet-C corruptions (subsets: common = the 15 of noise/blur/weather/digital; extra)")
    print_table(["perturbation", "frames", "compared with", "set"],
                [(n, p.frames, "frame 0" if p.noise else "previous frame", "test" if p.test else "validation")
                 for n, p in ((n, PERTURBATIONS.get(n)) for n in PERTURBATIONS)], title="ImageNet-P perturbations")
    return 0


def _cmd_apply(args) -> int:
    from PIL import Image

    from essence.corruptions import corrupt

    out = Path(args.output)
    single_file = len(args.images) == 1 and out.suffix.lower() in IMAGE_SUFFIXES
    if not single_file:
        out.mkdir(parents=True, exist_ok=True)
    for i, path in enumerate(args.images):
        img = _read_image(path)
        seed = None if args.seed is None else args.seed + i
        y = corrupt(img, args.name, args.severity, seed=seed, param_set=args.param_set)
        target = out if single_file else out / f"{Path(path).stem}_{args.name}_s{args.severity}.png"
        Image.fromarray(y).save(target)
        print(target)
    return 0


def _cmd_gallery(args) -> int:
    from essence.core.report import save_figure
    from essence.corruptions.evaluate import gallery_figure

    img = _read_image(args.image, args.size)
    path = save_figure(gallery_figure(img, _names(args.names), seed=args.seed, param_set=args.param_set),
                       args.output)
    print(path)
    return 0


def _cmd_export(args) -> int:
    from essence.corruptions.export import export, read_image_folder

    src = Path(args.input)
    files = None
    if src.is_dir():
        images, labels, files = read_image_folder(src, size=args.size)
    elif src.suffix == ".npy":
        images = np.load(src)
        if images.ndim == 3:
            images = images[..., None]
        if args.labels is None:
            raise UsageError("a .npy input needs --labels LABELS.npy (one integer per image)")
        labels = np.load(args.labels)
    else:
        raise UsageError(f"input must be an image folder (root/<class>/<image>) or a .npy array, got {src}")
    out = export(images, labels, args.output, layout=args.layout, names=_names(args.names), seed=args.seed,
                 param_set=args.param_set, files=files,
                 severities=[int(s) for s in args.severities.split(",")])
    print(f"wrote {args.layout} layout: {out} ({len(images)} images x {len(_names(args.names))} corruptions)")
    return 0


def _build_cfg(args):
    from essence.corruptions.config import PRESETS

    return PRESETS.build(args.preset, args.overrides)


def _cmd_train(args) -> int:
    from essence.core.checkpoint import save_checkpoint
    from essence.core.runs import Run
    from essence.core.runtime import resolve_device
    from essence.corruptions.model import ARCHITECTURES
    from essence.corruptions.train import train_classifier
    from essence.data import load_fashion_mnist

    ARCHITECTURES.get(args.arch)
    cfg = _build_cfg(args)
    run = Run.create("corruptions", f"train-{args.arch}", args.out, exact=args.out is not None)
    run.save_config(cfg)
    x, y = load_fashion_mnist("train", root=args.data_root)
    idx = np.random.default_rng(cfg.data.seed).permutation(len(x))[:cfg.data.train_size]
    tc = cfg.train
    model = train_classifier(args.arch, x[idx], y[idx], epochs=tc.epochs, batch_size=tc.batch_size, lr=tc.lr,
                             weight_decay=tc.weight_decay, precision=tc.precision, seed=tc.seeds[0],
                             device=resolve_device(args.device), log=lambda **kw: run.log(**kw))
    path = save_checkpoint(run.checkpoints_dir / args.arch, modules={"model": model}, config=cfg,
                           state={"arch": args.arch, "data": "fashion-mnist"})
    print(path)
    return 0


class _Normalized:
    """Wraps a model that expects normalised input: x in [0, 1] -> (x - mean) / std -> model."""

    @staticmethod
    def wrap(model, mean, std):
        import torch

        class Wrapped(torch.nn.Module):
            def __init__(self):
                super().__init__()
                self.model = model
                self.register_buffer("mean", torch.tensor(mean).view(1, -1, 1, 1))
                self.register_buffer("std", torch.tensor(std).view(1, -1, 1, 1))

            def forward(self, x):
                return self.model((x - self.mean) / self.std)

        return Wrapped()


def load_any_model(spec: str, weights: str | None = None, normalize: str = "imagenet", num_classes: int | None = None):
    """(model, name) from an essence checkpoint, ``torchvision:NAME`` or ``timm:NAME`` (+ a state-dict file in
    ``weights``, loaded with weights_only=True; nothing is downloaded). ``normalize``: the input normalisation
    the torchvision / timm model expects (``imagenet`` mean/std, or ``none``)."""
    import torch

    if spec.startswith(("torchvision:", "timm:")):
        lib, name = spec.split(":", 1)
        kw = {} if num_classes is None else {"num_classes": num_classes}
        if lib == "torchvision":
            import torchvision

            try:
                model = torchvision.models.get_model(name, weights=None, **kw)
            except ValueError as err:
                raise UsageError(f"unknown torchvision model {name!r}: {err}") from None
        else:
            try:
                import timm
            except ImportError as err:
                raise UsageError("timm models need timm: pip install timm") from err
            try:
                model = timm.create_model(name, pretrained=False, **kw)
            except RuntimeError as err:
                raise UsageError(f"unknown timm model {name!r}: {err}") from None
        if weights:
            if not Path(weights).exists():
                raise FileNotFoundError(f"weights file not found: {weights}")
            if weights.endswith(".safetensors"):
                from safetensors.torch import load_file
                state = load_file(weights)
            else:
                state = torch.load(weights, map_location="cpu", weights_only=True)
            state = state.get("state_dict", state.get("model", state)) if isinstance(state, dict) else state
            model.load_state_dict(state)
        if normalize == "imagenet":
            model = _Normalized.wrap(model, (0.485, 0.456, 0.406), (0.229, 0.224, 0.225))
        elif normalize != "none":
            raise UsageError(f"--normalize must be imagenet or none, got {normalize!r}")
        return model, name
    from essence.core.checkpoint import load_checkpoint, read_checkpoint
    from essence.corruptions.model import build_model

    ckpt = read_checkpoint(spec)
    arch = ckpt.state.get("arch")
    if arch is None:
        raise ValueError(f"{spec} has no 'arch' in its state: not a checkpoint of `essence corruptions train` "
                         "(for other models use torchvision:NAME or timm:NAME with --weights)")
    model = build_model(arch, in_channels=3 if ckpt.state.get("data") == "composite" else 1)
    load_checkpoint(ckpt.path, modules={"model": model}, restore_rng=False)
    return model, arch


def _cmd_evaluate(args) -> int:
    import torch

    from essence.core.progress import format_table_markdown
    from essence.core.report import save_figure
    from essence.core.runs import Run
    from essence.core.runtime import resolve_device
    from essence.corruptions.evaluate import (
        ce_table,
        evaluate_corruptions,
        gallery_figure,
        load_baseline,
        save_errors,
        severity_figure,
    )
    from essence.data import load_fashion_mnist
    from essence.metrics import robustness as R

    model, arch = load_any_model(args.model, args.weights, args.normalize)
    device = resolve_device(args.device)
    model = model.to(device).eval()
    baseline = load_baseline(args.baseline) if args.baseline else None
    if args.data == "fashion-mnist":
        x, y = load_fashion_mnist("test", root=args.data_root)
    elif args.data == "composite":
        from essence.data.composite import load_composite
        x, y = load_composite("test", root=args.data_root)
    elif Path(args.data).is_dir():
        from essence.corruptions.export import read_image_folder
        x, y, _ = read_image_folder(args.data, size=args.size)
    else:
        raise UsageError(f"--data must be fashion-mnist, composite or an image folder (root/<class>/<image>), "
                         f"got {args.data!r}")
    if args.test_size:
        idx = np.random.default_rng(args.seed + 1).permutation(len(x))[:args.test_size]
        x, y = x[np.sort(idx)], y[np.sort(idx)]
    names = _names(args.names)
    run = Run.create("corruptions", "evaluate", args.out, exact=args.out is not None)
    torch.manual_seed(args.seed)
    clean, errors = evaluate_corruptions({arch: model}, x, y, names=names, seed=args.seed, batch_size=500,
                                         precision="fp32")
    clean, errors = clean[arch], errors[arch]
    save_errors(run.dir / "errors.json", clean=clean, errors=errors, model=arch, checkpoint=str(args.model),
                test_images=len(x), seed=args.seed)
    lines = [f"# {args.data}-C evaluation of `{args.model}` ({arch})", "",
             f"Clean error: {100 * clean:.2f}% on {len(x)} test images. Mean corruption error (unnormalised): "
             f"{100 * R.unnormalized_mean_error(errors, names):.2f}%.", ""]
    if baseline is not None:
        b_clean, b_err = baseline
        headers, rows = ce_table(errors, clean, b_err, b_clean)
        lines += [f"CE normalised by the baseline run `{args.baseline}` (clean error {100 * b_clean:.2f}%).", "",
                  format_table_markdown(headers, rows)]
    else:
        lines += ["Top-1 error (%) per severity. Pass `--baseline RUN` (an evaluate run of the baseline model) for "
                  "CE, mCE and relative mCE.", "",
                  format_table_markdown(["corruption", "s1", "s2", "s3", "s4", "s5"],
                                        [[c, *[f"{100 * v:.1f}" for v in e]] for c, e in errors.items()])]
    (run.dir / "table.md").write_text("\n".join(lines) + "\n")
    save_figure(severity_figure({arch: errors}, {arch: clean}), run.figures_dir / "error_vs_severity.png")
    save_figure(gallery_figure(x[0], names, seed=args.seed), run.figures_dir / "gallery.png")
    print("\n".join(lines))
    print(f"\nwritten: {run.dir}/table.md, errors.json, figures/error_vs_severity.png, figures/gallery.png")
    return 0


def _cmd_reproduce(args) -> int:
    from essence.cli import reproduce_method

    reproduce_method("corruptions", preset=args.preset, out=args.out, exact=args.out is not None,
                     device=args.device, overrides=args.overrides)
    return 0


def _parser() -> argparse.ArgumentParser:
    parser, sub = method_parser("corruptions", DESCRIPTION)
    sub.add_parser("list", help="list the corruptions, subsets and perturbations")
    p = sub.add_parser("apply", help="corrupt image files")
    p.add_argument("images", nargs="+", metavar="IMAGE")
    p.add_argument("--name", required=True, help="corruption name (see `essence corruptions list`)")
    p.add_argument("--severity", type=int, default=3, help="1..5 (default 3)")
    p.add_argument("-o", "--output", required=True, help="output file (one image) or directory")
    p.add_argument("--seed", type=int, default=None)
    p.add_argument("--param-set", default="auto", choices=["auto", "imagenet", "tiny", "cifar"])
    p = sub.add_parser("gallery", help="one figure with every corruption at every severity")
    p.add_argument("image", metavar="IMAGE")
    p.add_argument("-o", "--output", required=True, help="output PNG")
    p.add_argument("--names", default="all", help="subset or comma-separated names (default: all 19)")
    p.add_argument("--size", type=int, default=None, help="resize the image to SIZE x SIZE first")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--param-set", default="auto", choices=["auto", "imagenet", "tiny", "cifar"])
    p = sub.add_parser("export", help="write a corrupted dataset: ImageNet-C folders (JPEG q85) or CIFAR-10-C .npy")
    p.add_argument("input", help="image folder (ImageFolder layout root/<class>/<image>) or a uint8 .npy (N, H, W, C)")
    p.add_argument("-o", "--output", required=True, help="output folder")
    p.add_argument("--layout", default="cifar-c", choices=["cifar-c", "imagenet-c"])
    p.add_argument("--labels", default=None, help="labels .npy for a .npy input")
    p.add_argument("--names", default="common", help="subset or comma-separated names (default: the 15)")
    p.add_argument("--severities", default="1,2,3,4,5", help="comma-separated (imagenet-c layout only)")
    p.add_argument("--size", type=int, default=None, help="resize + centre-crop folder images to SIZE x SIZE")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--param-set", default="auto", choices=["auto", "imagenet", "tiny", "cifar"])
    p = sub.add_parser("train", help="train a small Fashion-MNIST classifier (a checkpoint for evaluate)")
    p.add_argument("--arch", default="resnet", help="alexnet (the baseline) | vgg | resnet")
    p.add_argument("--data-root", default=None, help="Fashion-MNIST folder (default: the Debian package)")
    add_run_args(p)
    p = sub.add_parser("evaluate", help="clean + corrupted errors of a model on a dataset or an image folder")
    p.add_argument("--model", required=True, help="a checkpoint of `essence corruptions train`, or torchvision:NAME / "
                                                  "timm:NAME with --weights")
    p.add_argument("--weights", default=None, help="state dict (.pt/.pth/.safetensors) for torchvision:/timm: models")
    p.add_argument("--normalize", default="imagenet", help="input normalisation of torchvision/timm models: "
                                                           "imagenet | none")
    p.add_argument("--data", default="fashion-mnist", help="fashion-mnist | composite | an image folder "
                                                           "(root/<class>/<image>)")
    p.add_argument("--size", type=int, default=None, help="resize + centre-crop folder images to SIZE x SIZE")
    p.add_argument("--data-root", default=None)
    p.add_argument("--baseline", default=None, help="evaluate run (or errors.json) of the baseline model for CE")
    p.add_argument("--names", default="all", help="corruptions (default: all 19; mCE uses the 15 benchmark ones)")
    p.add_argument("--test-size", type=int, default=None, help="evaluate on a random subset of the test set")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--device", default="auto")
    p.add_argument("--out", default=None)
    p = sub.add_parser("reproduce", help="the small-scale reproduction (Fashion-MNIST-C/-P) and its report")
    add_run_args(p)
    return parser


def main(argv: list[str]) -> int:
    parser = _parser()

    def run() -> int:
        args = parser.parse_args(argv)
        if getattr(args, "severity", 1) not in range(1, 6):
            raise UsageError(f"--severity must be in 1..5, got {args.severity}")
        return {"list": _cmd_list, "apply": _cmd_apply, "gallery": _cmd_gallery, "export": _cmd_export,
                "train": _cmd_train,
                "evaluate": _cmd_evaluate, "reproduce": _cmd_reproduce}[args.command](args)

    return run_cli(run)
