"""2-process gloo: a training step under torchrun equals the average of the two processes' role gradients."""

from __future__ import annotations

import torch

from essence.core import distributed as dist
from essence.idvae.config import PRESETS
from essence.idvae.data import shard_indices, step_generator, to_model_range
from essence.idvae.loss import UPDATES, compute_terms, objectives, role_gradients
from essence.idvae.train import build, make_optimizer, train


def _setup():
    cfg = PRESETS.build("tiny", ["optim.batch_size=8", "train.max_steps=1", "train.precision=fp32",
                                 "train.threads=1"])
    g = torch.Generator().manual_seed(0)
    return cfg, (torch.rand(32, 1, 28, 28, generator=g) * 255).to(torch.uint8), torch.randint(0, 10, (32,))


def _worker(rank: int) -> dict:
    cfg, x, y = _setup()
    res = train(cfg, None, device="cpu", progress=False, images=x, labels=y)
    return {k: v.clone() for k, v in res.model.named_parameters()}


def test_two_processes_step_like_averaged_gradients():
    out = dist.launch_local(_worker, world_size=2, timeout_s=240)
    for key in out[0]:
        assert torch.equal(out[0][key], out[1][key]), key           # the processes stay in sync
    # reference: one process, the two per-process half batches, gradients averaged, one Adam step
    cfg, x, y = _setup()
    model = build(cfg)
    opt = make_optimizer(model, cfg)
    grads = []
    for rank in range(2):
        model.zero_grad(set_to_none=True)
        idx = shard_indices(32, 0, 32 // 8, 4, cfg.train.seed, rank, 2)
        gen = step_generator(cfg.train.seed, 0, 10 + rank)
        eps, z_p = torch.randn(4, cfg.model.latent, generator=gen), torch.randn(4, cfg.model.latent, generator=gen)
        terms = compute_terms(model, to_model_range(x[idx]), None, eps, z_p, None, cfg.loss)
        role_gradients(model, objectives(terms, cfg.loss), UPDATES, terms)
        grads.append([p.grad.clone() if p.grad is not None else torch.zeros_like(p) for p in model.parameters()])
    for p, g0, g1 in zip(model.parameters(), *grads):
        p.grad = (g0 + g1) / 2
    opt.step()
    for key, p in model.named_parameters():
        torch.testing.assert_close(out[0][key], p.detach(), rtol=1e-5, atol=1e-6)
