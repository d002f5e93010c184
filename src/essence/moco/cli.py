"""``essence moco train | evaluate | reproduce``.

    essence moco train --preset quick --set model.K=16384 --set model.m=0.999
    torchrun --nproc_per_node=2 -m essence moco train --preset tiny --device cpu
    essence moco train --resume runs/moco/<run>            # continue (queue, pointer, key encoder restored)
    essence moco train --preset quick --data path/to/images   # a folder of images (class sub-folders optional)
    essence moco train --preset quick --data images.npz       # NumPy arrays x_train (y_train, x_test, y_test)
    essence moco evaluate runs/moco/<run>                  # kNN + linear protocol on Fashion-MNIST test
    essence moco export runs/moco/<run> -o backbone.safetensors   # plain timm/torchvision ResNet state dict
    essence moco reproduce --preset standard               # the paper's claims decided, with a report
"""

from __future__ import annotations

import json
from pathlib import Path

from essence.core.cli import add_run_args, method_parser, reproduce_command, run_cli

__all__ = ["main"]


def _data_overrides(args) -> list[str]:
    """``--data PATH``: a folder of images or a .npz/.npy file, as data.dataset / data.root overrides."""
    if not getattr(args, "data", None):
        return list(args.overrides)
    path = Path(args.data)
    if not path.exists():
        raise FileNotFoundError(f"--data {path}: no such folder or file")
    kind = "folder" if path.is_dir() else "numpy"
    return [f"data.root={path}", f"data.dataset={kind}", *args.overrides]


def _train(args) -> int:
    from essence.core import distributed as dist
    from essence.core.checkpoint import read_checkpoint
    from essence.core.progress import console
    from essence.core.runs import Run
    from essence.moco.config import PRESETS, MoCoConfig
    from essence.moco.train import train

    if args.resume:
        src = Path(args.resume)
        ckpt_dir = src / "checkpoints" if (src / "checkpoints").is_dir() else src
        ckpt = read_checkpoint(ckpt_dir)
        cfg = MoCoConfig.from_dict(ckpt.require_config()).with_overrides(_data_overrides(args))
        run = Run(args.out or (src if (src / "checkpoints").is_dir() else ckpt.path.parent.parent),
                  method="moco", preset=args.preset)
        resume = ckpt.path
    else:
        cfg = PRESETS.build(args.preset, _data_overrides(args))
        run = Run.create("moco", args.preset, args.out, exact=args.out is not None, resumable=True)
        resume = None
    try:
        result = train(cfg, run, device=args.device, resume=resume)
        if dist.is_main():
            console.print(f"moco: {result.step} steps, {result.images_per_s:.1f} images/s; "
                          f"checkpoint {result.checkpoint}")
            if result.history and "knn_top1" in result.history[-1]:
                console.print(f"kNN top-1 (k={cfg.eval.knn_k}, t={cfg.eval.knn_t}): "
                              f"{result.history[-1]['knn_top1']:.2f}%")
    finally:
        dist.cleanup()
    return 0


def _evaluate(args) -> int:
    from essence.moco.evaluate import evaluate_checkpoint

    res = evaluate_checkpoint(args.checkpoint, device=args.device, linear=not args.no_linear,
                              overrides=tuple(_data_overrides(args)))
    print(json.dumps(res, indent=2))
    return 0


def _export(args) -> int:
    from essence.moco.export import export_backbone

    path = export_backbone(args.checkpoint, args.output)
    print(f"wrote {path} (query-encoder backbone; build hint in its metadata)")
    return 0


_reproduce = reproduce_command("moco")


def main(argv: list[str]) -> int:
    parser, sub = method_parser("moco", "Momentum Contrast (He et al. 2019) and MoCo v2 (Chen et al. 2020).")
    p = sub.add_parser("train", help="pre-train MoCo on Fashion-MNIST (resumable; works under torchrun)")
    add_run_args(p)
    p.add_argument("--resume", default=None, help="run directory or checkpoint to continue from")
    p.add_argument("--data", default=None, metavar="PATH",
                   help="train on a folder of images (class sub-folders optional) or a .npz/.npy file")
    p = sub.add_parser("evaluate", help="kNN monitor and linear protocol of a trained encoder")
    p.add_argument("checkpoint", help="run directory or checkpoint file")
    p.add_argument("--device", default="auto")
    p.add_argument("--no-linear", action="store_true", help="kNN only (skip the linear protocol)")
    p.add_argument("--set", dest="overrides", action="append", default=[], metavar="KEY=VALUE",
                   help="override eval./data. keys, e.g. --set eval.linear_epochs=20")
    p.add_argument("--data", default=None, metavar="PATH",
                   help="evaluate on a folder (train/ and test/ with class sub-folders) or a .npz")
    p = sub.add_parser("export", help="write the query encoder's backbone as a plain ResNet state dict")
    p.add_argument("checkpoint", help="run directory or checkpoint file")
    p.add_argument("-o", "--output", required=True, help="output .safetensors file")
    p = sub.add_parser("reproduce", help="check the paper's claims at small scale and write a report")
    add_run_args(p)
    args = parser.parse_args(argv)
    fn = {"train": _train, "evaluate": _evaluate, "export": _export, "reproduce": _reproduce}[args.command]
    return run_cli(lambda: fn(args))
