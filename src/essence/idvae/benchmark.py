"""Train-step throughput of IDVAE against the VAE-GAN with the same trunk and decoder (and the VAE), same run.

The paper's cost argument: one trunk instead of two. Both models run the same step function
(:func:`essence.idvae.train.train_step`) on the same random batches; the kinds are interleaved over ``repeats``
rounds and the median images/s is reported with the ratio to VAE-GAN.

    python -m essence.idvae.benchmark --steps 20 --repeats 3 --batch 64
"""

from __future__ import annotations

import argparse
import statistics
import time

import torch

from essence.core.loop import Precision
from essence.idvae.config import PRESETS
from essence.idvae.model import count_parameters
from essence.idvae.train import build, make_optimizer, train_step

__all__ = ["throughput", "main"]


def throughput(kinds=("idvae", "vaegan", "vae"), *, steps: int = 20, repeats: int = 3, batch: int = 64,
               preset: str = "quick", precision: str = "auto", device: str = "cpu",
               threads: int = 0) -> dict[str, dict]:
    """``{kind: {"images_per_s": median, "runs": [...], "params": n}}`` for train steps of each kind."""
    if threads:
        torch.set_num_threads(threads)
    g = torch.Generator().manual_seed(0)
    out: dict[str, dict] = {}
    setups = {}
    for kind in kinds:
        cfg = PRESETS.build(preset, [f"model.kind={kind}", f"optim.batch_size={batch}",
                                     f"train.precision={precision}"])
        model = build(cfg).to(device).train()
        setups[kind] = (cfg, model, make_optimizer(model, cfg), Precision(cfg.train.precision, device))
        out[kind] = {"runs": [], "params": count_parameters(model)["total"], "precision": setups[kind][3].mode}
    d = next(iter(setups.values()))[0].model.latent
    x = torch.rand(batch, 1, 28, 28, generator=g).to(device) * 2 - 1
    eps, z_p = torch.randn(batch, d, generator=g).to(device), torch.randn(batch, d, generator=g).to(device)
    for _ in range(repeats + 1):                         # the first round is warm-up
        for kind, (cfg, model, opt, prec) in setups.items():
            t0 = time.perf_counter()
            for _ in range(steps):
                train_step(model, opt, prec, cfg, x, None, eps, z_p, None)
            out[kind]["runs"].append(steps * batch / (time.perf_counter() - t0))
    for kind in out:
        out[kind]["runs"] = out[kind]["runs"][1:]
        out[kind]["images_per_s"] = statistics.median(out[kind]["runs"])
    return out


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--steps", type=int, default=20)
    p.add_argument("--repeats", type=int, default=3)
    p.add_argument("--batch", type=int, default=64)
    p.add_argument("--precision", default="auto")
    p.add_argument("--device", default="cpu")
    p.add_argument("--threads", type=int, default=0)
    args = p.parse_args(argv)
    res = throughput(steps=args.steps, repeats=args.repeats, batch=args.batch, precision=args.precision,
                     device=args.device, threads=args.threads)
    ref = res["vaegan"]["images_per_s"]
    print(f"{'model':8s} {'params':>9s} {'images/s':>9s} {'vs VAE-GAN':>10s}  (median of {args.repeats}, "
          f"{args.steps} steps of batch {args.batch}, precision {res['idvae']['precision']})")
    for kind, r in res.items():
        print(f"{kind:8s} {r['params']:9,d} {r['images_per_s']:9.0f} {r['images_per_s'] / ref:9.2f}x")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
