"""Noisy Student throughput: essence.noisy_student vs a plain timm + torchvision loop, same model, same run.

Two measurements, each alternating the two sides step by step so that both see the same machine load:

1. **Pseudo-labeling** (forward only, eval mode): ``essence.noisy_student.pseudo_label`` (batched, autocast where
   ``auto`` picks bf16, filter + balance included) vs a plain ``model.eval(); torch.no_grad()`` loop over a
   ``DataLoader`` of the same uint8 images (normalise, forward, softmax, argmax), same precision.
2. **Student train step**: ``B`` labeled + ``ratio x B`` unlabeled images, RandAugment n=2 at magnitude m, the
   same timm ResNet with dropout and stochastic depth, SGD; essence augments the whole batch on the device in one
   call (``rand_augment``), the plain loop applies ``torchvision.transforms.v2.RandAugment`` image by image (what a
   ``Dataset.__getitem__`` does) and stacks. Both then run the same forward / backward / step. The augmentation's
   share of the step is printed for both.

Ratios > 1: essence faster. Machine, threads and precision are printed first.

    python benchmarks/noisy_student.py --steps 8 --batch 32 --ratio 3 --images 5000
"""

from __future__ import annotations

import argparse
import statistics
import time

import torch


def _model(width: float):
    from essence.noisy_student.config import ModelConfig
    from essence.noisy_student.model import build_model

    torch.manual_seed(0)
    return build_model(ModelConfig(width=width), dropout=0.5, stochastic_depth=0.2)


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--steps", type=int, default=8)
    p.add_argument("--batch", type=int, default=32)
    p.add_argument("--ratio", type=int, default=3)
    p.add_argument("--m", type=float, default=10.0)
    p.add_argument("--width", type=float, default=1.0)
    p.add_argument("--images", type=int, default=5000, help="unlabeled images for the pseudo-labeling pass")
    p.add_argument("--precision", default="auto")
    args = p.parse_args(argv)

    import torchvision.transforms.v2 as T

    from essence.core.loop import Precision
    from essence.core.precision import machine_line
    from essence.core.runtime import default_num_threads
    from essence.noisy_student.config import EvalConfig
    from essence.noisy_student.data import normalize
    from essence.noisy_student.pseudo import pseudo_label
    from essence.noisy_student.randaugment import rand_augment

    torch.set_num_threads(default_num_threads())
    prec = Precision(args.precision, "cpu")
    print(machine_line(precision=prec.mode))
    print(f"threads {torch.get_num_threads()}, precision for both sides: {prec.reason}")
    try:
        from essence.data import load_fashion_mnist

        imgs = torch.from_numpy(load_fashion_mnist("train")[0][:max(args.images, 64)].copy())[:, None]
    except Exception:
        imgs = torch.randint(0, 256, (max(args.images, 64), 1, 28, 28), dtype=torch.uint8)
    model = _model(args.width)

    # ---- 1. pseudo-labeling
    def essence_label():
        pseudo_label(model, imgs[:args.images], precision=prec, batch_size=EvalConfig().batch_size, threshold=0.0)

    def plain_label():
        loader = torch.utils.data.DataLoader(torch.utils.data.TensorDataset(imgs[:args.images]), batch_size=256)
        model.eval()
        with torch.no_grad(), prec.autocast():
            for (x,) in loader:
                torch.softmax(model((x.float() / 255 - 0.286) / 0.353), 1).argmax(1)
        model.train()

    times = {"essence": [], "plain": []}
    for _ in range(3):
        for name, fn in (("essence", essence_label), ("plain", plain_label)):
            t = time.perf_counter()
            fn()
            times[name].append(time.perf_counter() - t)
    ips = {k: args.images / statistics.median(v) for k, v in times.items()}
    print(f"pseudo-labeling {args.images} images, width {args.width}:")
    for k, v in ips.items():
        print(f"  {k:8s} {v:9.0f} images/s")
    print(f"  ratio essence / plain = {ips['essence'] / ips['plain']:.2f}x")

    # ---- 2. student train step
    B, Bu = args.batch, args.batch * args.ratio
    tv_aug = T.RandAugment(num_ops=2, magnitude=min(int(args.m * 3), 30), num_magnitude_bins=31)
    opt = torch.optim.SGD(model.parameters(), lr=0.01, momentum=0.9)
    gen = torch.Generator().manual_seed(0)

    def run(name: str, x_u8: torch.Tensor) -> tuple[float, float]:
        t0 = time.perf_counter()
        if name == "essence":
            x = normalize(rand_augment(x_u8.float().div(255), 2, args.m, generator=gen))
        else:
            x = normalize(torch.stack([tv_aug(img) for img in x_u8]).float().div(255))
        t1 = time.perf_counter()
        with prec.autocast():
            loss = torch.nn.functional.cross_entropy(model(x), torch.randint(0, 10, (x.shape[0],)))
        loss.backward()
        opt.step()
        opt.zero_grad(set_to_none=True)
        return t1 - t0, time.perf_counter() - t0

    step_t = {"essence": [], "plain": []}
    aug_t = {"essence": [], "plain": []}
    for s in range(args.steps + 1):
        x_u8 = imgs[(s * (B + Bu)) % (len(imgs) - B - Bu):][:B + Bu]
        for name in ("essence", "plain"):
            a, t = run(name, x_u8)
            if s:      # the first step warms up
                aug_t[name].append(a)
                step_t[name].append(t)
    print(f"student train step, batch {B} + {Bu}, RandAugment n=2 m={args.m:g} (torchvision magnitude "
          f"{min(int(args.m * 3), 30)}/30), timm ResNet width {args.width}:")
    for name in ("essence", "plain"):
        st, at = statistics.median(step_t[name]), statistics.median(aug_t[name])
        print(f"  {name:8s} {(B + Bu) / st:9.0f} images/s ({st * 1000:.0f} ms/step, augmentation {100 * at / st:.0f}%)")
    print(f"  ratio essence / plain = {statistics.median(step_t['plain']) / statistics.median(step_t['essence']):.2f}x")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
