"""``essence noisy-student train | pseudo-label | evaluate | reproduce``.

    essence noisy-student train --preset quick --set loop.generations=3 --set pseudo.label_type=hard
    essence noisy-student train --resume runs/noisy-student/<run>       # inside or between generations
    torchrun --nproc_per_node=2 -m essence noisy-student train --preset tiny --device cpu
    essence noisy-student pseudo-label runs/noisy-student/<run>/generations/gen1.safetensors --out labels.safetensors
    essence noisy-student evaluate runs/noisy-student/<run> --robustness
    essence noisy-student reproduce --preset standard
"""

from __future__ import annotations

import json
from pathlib import Path

from essence.core.cli import add_run_args, method_parser, reproduce_command, run_cli

__all__ = ["main"]


def _train(args) -> int:
    from essence.core import distributed as dist
    from essence.core.progress import console
    from essence.core.runs import Run
    from essence.noisy_student.config import PRESETS, NoisyStudentConfig
    from essence.noisy_student.train import train

    if args.resume:
        src = Path(args.resume)
        if not (src / "config.json").exists():
            raise FileNotFoundError(f"{src} is not a noisy-student run directory (no config.json)")
        cfg = NoisyStudentConfig.from_dict(json.loads((src / "config.json").read_text())).with_overrides(args.overrides)
        run = Run(src, method="noisy-student", preset=args.preset)
    else:
        cfg = PRESETS.build(args.preset, args.overrides)
        run = Run.create("noisy-student", args.preset, args.out, exact=args.out is not None, resumable=True)
    try:
        result = train(cfg, run, device=args.device, resume=bool(args.resume))
        if dist.is_main():
            console.print(f"noisy-student: {len(result.generations)} generations in {result.seconds:.0f} s; models "
                          f"in {run.dir / 'generations'}", highlight=False)
    finally:
        dist.cleanup()
    return 0


def _pseudo_label(args) -> int:

    from essence.core.loop import Precision
    from essence.noisy_student.data import load_data, load_image_folder
    from essence.noisy_student.train import load_generation, make_pseudo_labels, save_pseudo_labels

    model, cfg, st = load_generation(args.checkpoint, device=args.device if args.device != "auto" else "cpu")
    cfg = cfg.with_overrides(args.overrides)
    data = load_data(cfg.data)
    if args.images:
        imgs, _ = load_image_folder(args.images, labeled=False, size=cfg.data.image_size)
        data.unlabeled_x = imgs
    dev = next(model.parameters()).device
    gen = int(st.get("generation", 0)) + 1
    pseudo = make_pseudo_labels(model, data, cfg, gen, precision=Precision(cfg.train.precision, dev), device=dev)
    out = Path(args.out or Path(args.checkpoint).with_name(f"pseudo{gen}-labels.safetensors"))
    save_pseudo_labels(out, pseudo, generation=gen, cfg=cfg)
    print(json.dumps({"file": str(out), **pseudo.stats()}, indent=2))
    return 0


def _evaluate(args) -> int:
    from essence.noisy_student.evaluate import evaluate_checkpoint

    res = evaluate_checkpoint(args.checkpoint, device=args.device if args.device != "auto" else "cpu",
                              robust=args.robustness, overrides=tuple(args.overrides))
    print(json.dumps(res, indent=2))
    return 0


_reproduce = reproduce_command("noisy-student")


def main(argv: list[str]) -> int:
    from essence.core.cli import device_arg

    parser, sub = method_parser("noisy-student", "Noisy Student self-training (Xie et al. 2019).")
    p = sub.add_parser("train", help="teacher + noised students, generation after generation (resumable)")
    add_run_args(p)
    p.add_argument("--resume", default=None, help="run directory to continue (inside or between generations)")
    p = sub.add_parser("pseudo-label", help="label unlabeled images with a trained generation (eval mode), "
                                            "filter and balance them")
    p.add_argument("checkpoint", help="a generations/gen<g>.safetensors file")
    p.add_argument("--images", default=None, help="a folder / .npy of images (default: the run's unlabeled split)")
    p.add_argument("--out", default=None, help="output .safetensors (default: next to the checkpoint)")
    p.add_argument("--device", default="auto", type=device_arg)
    p.add_argument("--set", dest="overrides", action="append", default=[], metavar="KEY=VALUE",
                   help="override pseudo./data. keys, e.g. --set pseudo.label_type=hard")
    p = sub.add_parser("evaluate", help="test accuracy of every generation (and robustness with --robustness)")
    p.add_argument("checkpoint", help="run directory or a generations/gen<g>.safetensors file")
    p.add_argument("--device", default="auto", type=device_arg)
    p.add_argument("--robustness", action="store_true", help="also corrupted test sets (mCE) and sequences (FP)")
    p.add_argument("--set", dest="overrides", action="append", default=[], metavar="KEY=VALUE",
                   help="override eval./data. keys, e.g. --set eval.robust_test=500")
    p = sub.add_parser("reproduce", help="check the paper's claims at small scale and write a report")
    add_run_args(p)
    args = parser.parse_args(argv)
    fn = {"train": _train, "pseudo-label": _pseudo_label, "evaluate": _evaluate, "reproduce": _reproduce}[args.command]
    return run_cli(lambda: fn(args))
