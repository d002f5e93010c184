"""MoCo train-step throughput: essence.moco vs lightly's MoCo building blocks, same run, same machine.

Both sides train the same backbone (essence's small-stem ResNet, SplitBN with 8 splits, each library's own
SplitBatchNorm), the same v2 MLP head, batch, queue size K, temperature, momentum, SGD settings and the same
augmentation (essence's batched two-view recipe, applied inside the timed step for both). lightly side, as in
its MoCo example: ``update_momentum`` on backbone and head, ``batch_shuffle`` / ``batch_unshuffle`` around the
momentum encoder, ``NTXentLoss(memory_bank_size=(K, dim))`` as the queue. Steps alternate between the two so
that both see the same machine load; the ratio is essence / lightly images per second (> 1: essence faster).

Install the anchor (benchmark only, not part of the CI install): ``pip install lightly`` after the pinned torch
pair (it pulls pytorch_lightning and hydra-core), or just its blocks: ``pip install --no-deps lightly==1.6.0``.

    python benchmarks/moco.py --steps 10 --batch 256 --K 4096 --width 16     # at the presets' 16 px crops
    python benchmarks/moco.py --size 28                                       # at the native 28 px
"""

from __future__ import annotations

import argparse
import copy
import statistics
import sys
import time

import torch


def _essence(args, aug):
    from essence.moco.config import PRESETS
    from essence.moco.model import MoCo

    cfg = PRESETS.build("quick", [f"model.arch={args.arch}", f"model.width={args.width}", f"model.K={args.K}",
                                  f"model.T={args.T}", f"model.m={args.m}", "model.shuffle_bn=split",
                                  f"model.bn_splits={args.splits}", "model.mlp=true", f"model.dim={args.dim}"])
    torch.manual_seed(0)
    model = MoCo(cfg.model)
    opt = torch.optim.SGD([p for p in model.parameters() if p.requires_grad], lr=0.03, momentum=0.9,
                          weight_decay=5e-4)

    def step(x, autocast):
        x_q, x_k = aug(x), aug(x)
        with autocast():
            out = model(x_q, x_k)
        out.loss.backward()
        opt.step()
        opt.zero_grad(set_to_none=True)
        return float(out.loss.detach())
    return step


def _lightly(args, aug):
    from lightly.loss import NTXentLoss
    from lightly.models.batchnorm import SplitBatchNorm
    from lightly.models.modules import MoCoProjectionHead
    from lightly.models.utils import batch_shuffle, batch_unshuffle, deactivate_requires_grad, update_momentum

    from essence.nn.resnet import build_resnet

    torch.manual_seed(0)
    backbone = build_resnet(args.arch, width=args.width, in_chans=1,
                            norm_layer=lambda c: SplitBatchNorm(c, args.splits))
    d = backbone.num_features
    head = MoCoProjectionHead(d, d, args.dim)
    backbone_m, head_m = copy.deepcopy(backbone), copy.deepcopy(head)
    deactivate_requires_grad(backbone_m)
    deactivate_requires_grad(head_m)
    criterion = NTXentLoss(temperature=args.T, memory_bank_size=(args.K, args.dim))
    params = list(backbone.parameters()) + list(head.parameters())
    opt = torch.optim.SGD(params, lr=0.03, momentum=0.9, weight_decay=5e-4)

    def step(x, autocast):
        x_q, x_k = aug(x), aug(x)
        update_momentum(backbone, backbone_m, m=args.m)
        update_momentum(head, head_m, m=args.m)
        with autocast():
            query = head(backbone(x_q))
            with torch.no_grad():
                x_k, shuffle = batch_shuffle(x_k)
                key = batch_unshuffle(head_m(backbone_m(x_k)), shuffle).detach()
            loss = criterion(query.float(), key.float())
        loss.backward()
        opt.step()
        opt.zero_grad(set_to_none=True)
        return float(loss)
    return step


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--steps", type=int, default=10)
    p.add_argument("--warmup", type=int, default=2)
    p.add_argument("--batch", type=int, default=256)
    p.add_argument("--K", type=int, default=4096)
    p.add_argument("--T", type=float, default=0.2)
    p.add_argument("--m", type=float, default=0.99)
    p.add_argument("--dim", type=int, default=64)
    p.add_argument("--arch", default="resnet10")
    p.add_argument("--width", type=int, default=16)
    p.add_argument("--splits", type=int, default=8)
    p.add_argument("--size", type=int, default=None,
                   help="crop side in pixels (default: the quick/standard presets' aug.size, 16)")
    p.add_argument("--precision", choices=["fp32", "bf16"], default="fp32")
    p.add_argument("--threads", type=int, default=2)
    args = p.parse_args(argv)
    try:
        import lightly  # noqa: F401
    except ImportError:
        print("lightly is not installed: pip install --no-deps lightly==1.6.0 (benchmark only)", file=sys.stderr)
        return 1
    from essence.core.precision import machine_line
    from essence.moco.config import PRESETS, aug_v2
    from essence.nn.augment import BatchAugment

    torch.set_num_threads(args.threads)
    args.size = args.size or PRESETS.build("standard").aug.size
    aug = BatchAugment(aug_v2(args.size, 1))
    print(machine_line())
    x = (torch.rand(args.batch, 1, 28, 28, generator=torch.Generator().manual_seed(0)) * 255).to(torch.uint8)

    def autocast():
        if args.precision == "bf16":
            return torch.autocast("cpu", dtype=torch.bfloat16)
        return torch.autocast("cpu", enabled=False)

    steps = {"essence": _essence(args, aug), "lightly": _lightly(args, aug)}
    times: dict[str, list[float]] = {k: [] for k in steps}
    for i in range(args.warmup + args.steps):
        for name, fn in (steps.items() if i % 2 == 0 else reversed(list(steps.items()))):
            t = time.perf_counter()
            fn(x, autocast)
            if i >= args.warmup:
                times[name].append(time.perf_counter() - t)
    ips = {k: args.batch / statistics.median(v) for k, v in times.items()}
    print(f"MoCo train step, {args.arch} width {args.width}, {args.size} px crops, batch {args.batch}, K {args.K}, "
          f"SplitBN x{args.splits}, "
          f"{args.precision}, {args.threads} threads, {args.steps} timed steps each (median), "
          f"torch {torch.__version__}")
    for name in steps:
        print(f"  {name:8s} {ips[name]:8.1f} images/s  ({statistics.median(times[name]) * 1000:.0f} ms/step)")
    print(f"  ratio essence / lightly = {ips['essence'] / ips['lightly']:.2f}x")
    return 0


if __name__ == "__main__":
    sys.exit(main())
