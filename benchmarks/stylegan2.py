"""StyleGAN2 speed: essence.stylegan2 vs the official stylegan2-ada-pytorch networks and loss, same run, same machine.

The anchor is NVlabs/stylegan2-ada-pytorch itself (``training/networks.py``, ``training/loss.py``): on the CPU its
custom ops fall back to their pure-PyTorch reference paths (``_upfirdn2d_ref``, ``_bias_act_ref``), which is
exactly the comparison the issue asks for. Both sides build the same architecture (the parameter counts are
printed and must match): skip G, residual D, the quick preset's channels, no fp16 layers, no conv clamp.

Measured, alternating between the two libraries so that both see the same machine load:

1. generator forward (eval mode, const noise, the fused grouped modulated convolution in both: ada fuses when not
   training), ms per batch;
2. one full training iteration: Gmain + Dmain every time, Greg (path length) every 4th and Dreg (R1) every 16th
   iteration, i.e. 16 iterations per timed block (the lazy regularisers amortised), G EMA included, Adam with the
   lazy rescaling on both sides, ms per iteration.

Ratios are anchor time / essence time (> 1: essence faster), in fp32 on both sides; essence's ``auto`` precision
is printed beside it when it differs.

    git clone https://github.com/NVlabs/stylegan2-ada-pytorch /tmp/ada      # the anchor's source (no install)
    python benchmarks/stylegan2.py --anchor /tmp/ada --batch 32 --repeats 3
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
                                  f"optim.batch_size={args.batch}"])
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
            return G_ema(z, noise_mode="const", fused=True)
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


def _time(fn, n: int) -> float:
    t = time.perf_counter()
    for i in range(n):
        fn(i)
    return (time.perf_counter() - t) / n


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--anchor", required=True, help="a checkout of NVlabs/stylegan2-ada-pytorch")
    p.add_argument("--batch", type=int, default=32)
    p.add_argument("--channel-base", type=int, default=1024)
    p.add_argument("--channel-max", type=int, default=64)
    p.add_argument("--repeats", type=int, default=3, help="alternating timed blocks per side (median reported)")
    p.add_argument("--threads", type=int, default=0)
    args = p.parse_args(argv)
    if args.threads:
        torch.set_num_threads(args.threads)
    from essence.core.loop import Precision
    from essence.core.precision import machine_line

    print(machine_line(precision="fp32"))
    Ge, De, fwd_e, it_e, cfg = _essence(args)
    Ga, Da, fwd_a, it_a = _anchor(args, cfg)
    n_e = [sum(q.numel() for q in m.parameters()) for m in (Ge, De)]
    n_a = [sum(q.numel() for q in m.parameters()) for m in (Ga, Da)]
    print(f"parameters G / D: essence {n_e[0]:,} / {n_e[1]:,}; stylegan2-ada-pytorch {n_a[0]:,} / {n_a[1]:,}")
    m = cfg.model
    z = torch.randn(args.batch, m.z_dim)
    real = torch.randn(args.batch, m.img_channels, m.resolution, m.resolution)
    fp32 = contextlib.nullcontext
    auto = Precision("auto", "cpu")
    rows = {"G forward": ([], []), "train iteration": ([], []), "train iteration (essence auto)": ([], [])}
    fwd_e(z), fwd_a(z)                                                     # warm-up
    it_e(1, real, fp32), it_a(1, real, fp32)
    for _ in range(args.repeats):
        rows["G forward"][0].append(_time(lambda i: fwd_e(z), 5))
        rows["G forward"][1].append(_time(lambda i: fwd_a(z), 5))
        rows["train iteration"][0].append(_time(lambda i: it_e(i, real, fp32), 16))
        rows["train iteration"][1].append(_time(lambda i: it_a(i, real, fp32), 16))
        if auto.mode != "fp32":
            rows["train iteration (essence auto)"][0].append(_time(lambda i: it_e(i, real, auto.autocast), 16))
    print(f"batch {args.batch}, resolution {m.resolution}, channels base {args.channel_base} max "
          f"{args.channel_max}, {torch.get_num_threads()} threads, median of {args.repeats} alternating blocks")
    print(f"{'':34s} {'essence ms':>11s} {'ada ms':>9s} {'ratio':>6s}")
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
    return 0


if __name__ == "__main__":
    sys.exit(main())
