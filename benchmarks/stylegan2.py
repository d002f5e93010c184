"""StyleGAN2 speed: essence.stylegan2 vs the official stylegan2-ada-pytorch networks and loss, same run, same machine.

The anchor is NVlabs/stylegan2-ada-pytorch itself (``training/networks.py``, ``training/loss.py``): on the CPU its
custom ops fall back to their pure-PyTorch reference paths (``_upfirdn2d_ref``, ``_bias_act_ref``), which is
exactly the comparison the issue asks for. Both sides build the same architecture (the parameter counts are
printed and must match): skip G, residual D, the quick preset's channels, no fp16 layers, no conv clamp.

Measured, alternating between the two libraries so that both see the same machine load:

1. generator forward (eval mode, const noise), ms per batch, each library on its own eval path: ada fuses the
   modulated convolution into one grouped convolution when not training; essence does so on accelerators and uses
   the unfused form on the CPU, where it is faster (``--fused`` times essence's grouped form instead);
2. one full training iteration: Gmain + Dmain every time, Greg (path length) every 4th and Dreg (R1) every 16th
   iteration, i.e. 16 iterations per timed block (the lazy regularisers amortised), G EMA included, Adam with the
   lazy rescaling on both sides, ms per iteration.

Ratios are anchor time / essence time (> 1: essence faster), in fp32 on both sides; essence's ``auto`` precision
is printed beside it when it differs.

    git clone https://github.com/NVlabs/stylegan2-ada-pytorch /tmp/ada      # the anchor's source (no install)
    python benchmarks/stylegan2.py --anchor /tmp/ada --batch 32 --repeats 3

``--lucidrains DIR`` adds lucidrains' ``stylegan2_pytorch`` (PyPI), run through its own ``Trainer.train()`` (its
loop, losses and schedule: hinge loss, gradient penalty every 4 steps, path length every 32, EMA every 10, Adam
(0.5, 0.9)) at its closest config: 32 px RGB, ``latent_dim`` = essence's w_dim, ``style_depth`` = the mapping
depth, ``network_capacity`` 16, ``fmap_max`` = channel_max; essence is then built with 3 channels too. Its
architecture differs (bilinear up-sampling + blur, three full-resolution convolutions per D block), so the
parameter counts differ and are printed. It is timed at step 20,001, where every one of its regularisers is on.
The package asserts CUDA at import and calls ``.cuda()``; on the CPU the benchmark lifts the assert for the import,
makes ``.cuda()`` the identity, stubs the imports its training step never uses (``aim``, ``vector_quantize_pytorch``,
``fire``, ``retry``) and passes ``fmap_max`` to its EMA generator, which 1.9.0 forgets (without that, any
``fmap_max`` but 512 fails to build)::

    pip install --no-deps --target /tmp/lucidrains stylegan2_pytorch==1.9.0 einops
    python benchmarks/stylegan2.py --lucidrains /tmp/lucidrains --batch 32 --repeats 3
"""

from __future__ import annotations

import argparse
import contextlib
import copy
import statistics
import sys
import time

import torch


def _essence(args):
    from essence.stylegan2.config import PRESETS
    from essence.stylegan2.loss import PathLength, d_logistic, g_nonsaturating, mix_styles, r1_penalty
    from essence.stylegan2.model import Discriminator, Generator
    from essence.stylegan2.train import make_optimizers

    cfg = PRESETS.build("quick", [f"model.channel_base={args.channel_base}", f"model.channel_max={args.channel_max}",
                                  f"optim.batch_size={args.batch}", f"model.img_channels={args.channels}"])
    torch.manual_seed(0)
    G, D = Generator(cfg.model), Discriminator(cfg.model)
    G_ema = copy.deepcopy(G).eval().requires_grad_(False)
    opt_G, opt_D = make_optimizers(cfg, G, D)
    pl = PathLength(0.01)
    gamma = cfg.loss.r1_gamma

    def run_G(n):
        z, z2 = torch.randn(n, G.z_dim), torch.randn(n, G.z_dim)
        ws, _ = mix_styles(G.mapping(z), G.mapping(z2), 0.9)
        return G.synthesis(ws), ws

    def iteration(i, real, autocast):
        G.requires_grad_(True)
        D.requires_grad_(False)
        with autocast():
            img, _ = run_G(args.batch)
            g_nonsaturating(D(img)).mean().backward()
        opt_G.step()
        opt_G.zero_grad(set_to_none=True)
        if i % 4 == 0:
            with autocast():
                img, ws = run_G(args.batch // 2)
            pen, _ = pl(img, ws)
            ((img[:, 0, 0, 0].float() * 0 + pen * 2).mean() * 4).backward()
            opt_G.step()
            opt_G.zero_grad(set_to_none=True)
        G.requires_grad_(False)
        D.requires_grad_(True)
        with autocast():
            with torch.no_grad():
                fake, _ = run_G(args.batch)
            d_logistic(D(fake), D(real)).backward()
        opt_D.step()
        opt_D.zero_grad(set_to_none=True)
        if i % 16 == 0:
            x = real.detach().requires_grad_(True)
            with autocast():
                logits = D(x)
            ((logits.float().flatten() * 0 + r1_penalty(x, logits) * gamma / 2).mean() * 16).backward()
            opt_D.step()
            opt_D.zero_grad(set_to_none=True)
        with torch.no_grad():
            for pe, p in zip(G_ema.parameters(), G.parameters()):
                pe.copy_(p.lerp(pe, 0.999))

    def forward(z):
        with torch.no_grad():
            return G_ema(z, noise_mode="const", fused=True if args.fused else None)
    return G, D, forward, iteration, cfg


def _anchor(args, cfg):
    sys.path.insert(0, args.anchor)
    from training.loss import StyleGAN2Loss
    from training.networks import Discriminator, Generator

    m = cfg.model
    torch.manual_seed(0)
    G = Generator(z_dim=m.z_dim, c_dim=0, w_dim=m.w_dim, img_resolution=m.resolution, img_channels=m.img_channels,
                  mapping_kwargs=dict(num_layers=m.mapping_layers),
                  synthesis_kwargs=dict(channel_base=m.channel_base, channel_max=m.channel_max, num_fp16_res=0,
                                        conv_clamp=None))
    D = Discriminator(c_dim=0, img_resolution=m.resolution, img_channels=m.img_channels,
                      channel_base=m.channel_base, channel_max=m.channel_max, num_fp16_res=0, conv_clamp=None,
                      epilogue_kwargs=dict(mbstd_group_size=4))
    G_ema = copy.deepcopy(G).eval().requires_grad_(False)
    loss = StyleGAN2Loss(torch.device("cpu"), G.mapping, G.synthesis, D, r1_gamma=cfg.loss.r1_gamma)
    opts = {}
    for name, mod, k in (("G", G, 4), ("D", D, 16)):
        c = k / (k + 1)
        opts[name] = torch.optim.Adam(mod.parameters(), lr=cfg.optim.lr * c, betas=(0.0, 0.99 ** c), eps=1e-8)
    c0 = torch.zeros(args.batch, 0)

    def phase(name, module, opt, real, gain):
        opt.zero_grad(set_to_none=True)
        module.requires_grad_(True)
        z = torch.randn(args.batch, m.z_dim)
        loss.accumulate_gradients(phase=name, real_img=real, real_c=c0, gen_z=z, gen_c=c0, sync=True, gain=gain)
        module.requires_grad_(False)
        opt.step()

    def iteration(i, real, autocast):
        phase("Gmain", G, opts["G"], real, 1)
        if i % 4 == 0:
            phase("Greg", G, opts["G"], real, 4)
        phase("Dmain", D, opts["D"], real, 1)
        if i % 16 == 0:
            phase("Dreg", D, opts["D"], real, 16)
        with torch.no_grad():
            for pe, p in zip(G_ema.parameters(), G.parameters()):
                pe.copy_(p.lerp(pe, 0.999))

    def forward(z):
        with torch.no_grad():
            return G_ema(z, None, noise_mode="const", force_fp32=True)
    return G, D, forward, iteration


def _lucidrains(args, cfg):
    """lucidrains' Trainer (CPU shims described in the module docstring) and its EMA generator's forward."""
    import functools
    import itertools
    import tempfile
    import types

    sys.path.insert(0, args.lucidrains)
    for name in ("aim", "vector_quantize_pytorch", "fire", "retry"):
        stub = types.ModuleType(name)
        stub.VectorQuantize = None
        sys.modules.setdefault(name, stub)
    available = torch.cuda.is_available
    torch.cuda.is_available = lambda: True
    try:
        import stylegan2_pytorch.stylegan2_pytorch as L
    finally:
        torch.cuda.is_available = available
    torch.Tensor.cuda = lambda self, *a, **k: self
    torch.nn.Module.cuda = lambda self, *a, **k: self
    m = cfg.model
    L.Generator = functools.partial(L.Generator, fmap_max=m.channel_max)
    torch.manual_seed(0)
    trainer = L.Trainer(name="bench", base_dir=tempfile.mkdtemp(), image_size=m.resolution, network_capacity=16,
                        fmap_max=m.channel_max, batch_size=args.batch, gradient_accumulate_every=1,
                        save_every=10**9, evaluate_every=10**9, num_workers=0, latent_dim=m.w_dim,
                        style_depth=m.mapping_layers)
    trainer.init_GAN()
    trainer.steps = 20_001
    gan, layers = trainer.GAN, trainer.GAN.G.num_layers

    def iteration(i, real, autocast):
        trainer.loader = itertools.repeat(real)
        trainer.train()

    def forward(z):
        with torch.no_grad():
            w = gan.SE(z)[:, None].expand(-1, layers, -1)
            return gan.GE(w, torch.rand(z.shape[0], m.resolution, m.resolution, 1))
    return [gan.G, gan.S], [gan.D], forward, iteration


def _time(fn, n: int) -> float:
    t = time.perf_counter()
    for i in range(n):
        fn(i)
    return (time.perf_counter() - t) / n


def _count(modules) -> int:
    modules = modules if isinstance(modules, (list, tuple)) else [modules]
    return sum(q.numel() for mod in modules for q in mod.parameters())


def _compare(args, title: str, short: str, build, *, channels: int, block: int) -> None:
    """essence against one anchor, alternating timed blocks; ``block`` iterations amortise the lazy regularisers."""
    from essence.core.loop import Precision

    args.channels = channels
    Ge, De, fwd_e, it_e, cfg = _essence(args)
    Ga, Da, fwd_a, it_a = build(args, cfg)
    print(f"\n== essence vs {title}")
    print(f"parameters G / D: essence {_count(Ge):,} / {_count(De):,}; {short} {_count(Ga):,} / {_count(Da):,}")
    m = cfg.model
    z = torch.randn(args.batch, m.z_dim)
    real = torch.rand(args.batch, m.img_channels, m.resolution, m.resolution) * 2 - 1
    fp32 = contextlib.nullcontext
    auto = Precision("auto", "cpu")
    rows = {"G forward": ([], []), "train iteration": ([], []), "train iteration (essence auto)": ([], [])}
    fwd_e(z), fwd_a(z)                                                     # warm-up
    it_e(1, real, fp32), it_a(1, real, fp32)
    for _ in range(args.repeats):
        rows["G forward"][0].append(_time(lambda i: fwd_e(z), 5))
        rows["G forward"][1].append(_time(lambda i: fwd_a(z), 5))
        rows["train iteration"][0].append(_time(lambda i: it_e(i, real, fp32), block))
        rows["train iteration"][1].append(_time(lambda i: it_a(i, real, fp32), block))
        if auto.mode != "fp32":
            rows["train iteration (essence auto)"][0].append(_time(lambda i: it_e(i, real, auto.autocast), block))
    print(f"batch {args.batch}, resolution {m.resolution}, {m.img_channels} channel(s), channels base "
          f"{args.channel_base} max {args.channel_max}, {torch.get_num_threads()} threads, median of {args.repeats} "
          f"alternating blocks of {block} iterations")
    print(f"{'':34s} {'essence ms':>11s} {short + ' ms':>9s} {'ratio':>6s}")
    for name, (e, a) in rows.items():
        if not e:
            continue
        me = statistics.median(e) * 1000
        if a:
            ma = statistics.median(a) * 1000
            print(f"{name:34s} {me:11.1f} {ma:9.1f} {ma / me:6.2f}x")
        else:
            ma = statistics.median(rows["train iteration"][1]) * 1000
            print(f"{name + ' (' + auto.mode + ')':34s} {me:11.1f} {ma:9.1f} {ma / me:6.2f}x  (anchor in fp32)")


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--anchor", help="a checkout of NVlabs/stylegan2-ada-pytorch")
    p.add_argument("--lucidrains", help="a folder holding the stylegan2_pytorch package (and einops)")
    p.add_argument("--batch", type=int, default=32)
    p.add_argument("--channel-base", type=int, default=1024)
    p.add_argument("--channel-max", type=int, default=64)
    p.add_argument("--repeats", type=int, default=3, help="alternating timed blocks per side (median reported)")
    p.add_argument("--threads", type=int, default=0)
    p.add_argument("--fused", action="store_true", help="time essence's generator forward with the grouped "
                                                        "convolution (ada's eval path) instead of its default")
    args = p.parse_args(argv)
    if args.threads:
        torch.set_num_threads(args.threads)
    from essence.core.precision import machine_line

    print(machine_line(precision="fp32"))
    if not (args.anchor or args.lucidrains):
        p.error("give --anchor (stylegan2-ada-pytorch) and/or --lucidrains (stylegan2_pytorch)")
    if args.anchor:
        _compare(args, "stylegan2-ada-pytorch", "ada", _anchor, channels=1, block=16)
    if args.lucidrains:
        _compare(args, "lucidrains stylegan2_pytorch 1.9.0 (its Trainer.train)", "lucid", _lucidrains, channels=3,
                 block=32)
    return 0


if __name__ == "__main__":
    sys.exit(main())
