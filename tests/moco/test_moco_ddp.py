"""2-process gloo: the real cross-process shuffling BN equals its single-process emulation (split BN)."""

from __future__ import annotations

import torch

from essence.core import distributed as dist
from essence.core.testing import assert_within_float32_error as _assert_within_float32_error
from essence.moco.config import ModelConfig
from essence.moco.model import MoCo

B = 4  # per process


def _cfg(shuffle_bn: str, splits: int = 2) -> ModelConfig:
    return ModelConfig(arch="resnet10", width=4, in_chans=1, dim=8, mlp=True, K=16, m=0.9, T=0.2,
                       shuffle_bn=shuffle_bn, bn_splits=splits)


def _data():
    g = torch.Generator().manual_seed(3)
    return torch.randn(2 * B, 1, 28, 28, generator=g), torch.randn(2 * B, 1, 28, 28, generator=g)


def _worker(rank: int) -> dict:
    torch.manual_seed(0)
    model = MoCo(_cfg("ddp"))
    assert model.shuffle_bn == "ddp"
    ddp = torch.nn.parallel.DistributedDataParallel(model, forward_sync_buffers=False)
    x_q, x_k = _data()
    sl = slice(rank * B, (rank + 1) * B)
    out = ddp(x_q[sl], x_k[sl], generator=torch.Generator().manual_seed(7))
    out.loss.backward()
    return {"keys": out.keys, "logits": out.logits, "queue": model.queue.clone(), "ptr": int(model.queue_ptr),
            "grads": [p.grad.clone() for p in model.encoder_q.parameters()],
            "k_params": [p.detach().clone() for p in model.encoder_k.parameters()]}


def _reference(dtype: torch.dtype, monkeypatch) -> tuple[MoCo, object]:
    """Single process: the whole global batch, BN statistics over 2 contiguous chunks (= the 2 processes), the
    same permutation (drawn from the same generator), computed in ``dtype``."""
    torch.manual_seed(0)
    ref = MoCo(_cfg("split", 2)).to(dtype)
    x_q, x_k = _data()
    with monkeypatch.context() as m:
        if dtype == torch.float64:  # the model casts features with .float() (for bf16 autocast): keep float64
            to_float = torch.Tensor.float
            m.setattr(torch.Tensor, "float", lambda t, *a, **k: t if t.dtype == torch.float64 else to_float(t, *a, **k))
        out = ref(x_q.to(dtype), x_k.to(dtype), generator=torch.Generator().manual_seed(7))
    out.loss.backward()
    return ref, out


def test_ddp_shuffle_bn_equals_single_process_split_bn(monkeypatch):
    results = dist.launch_local(_worker, world_size=2)
    ref, out = _reference(torch.float32, monkeypatch)
    ref64, out64 = _reference(torch.float64, monkeypatch)
    keys = torch.cat([r["keys"] for r in results])
    _assert_within_float32_error([keys], [out.keys], [out64.keys], what="keys")
    _assert_within_float32_error([torch.cat([r["logits"] for r in results])], [out.logits], [out64.logits],
                                 what="logits")
    for r in results:
        # every process enqueued the all-gathered keys: identical queues, pointer advanced by the global batch
        assert r["ptr"] == 2 * B == int(ref.queue_ptr)
        _assert_within_float32_error([r["queue"]], [ref.queue], [ref64.queue], what="queue")
        # DDP-averaged gradients of the per-process mean losses = gradient of the global mean loss
        _assert_within_float32_error(r["grads"], [p.grad for p in ref.encoder_q.parameters()],
                                     [p.grad for p in ref64.encoder_q.parameters()], what="gradient")
        for a, b in zip(r["k_params"], ref.encoder_k.parameters()):
            torch.testing.assert_close(a, b)
    # the two processes' keys came from different BN statistics than an unshuffled pass would give
    torch.manual_seed(0)
    plain = MoCo(_cfg("split", 2))
    _, x_k = _data()
    with torch.no_grad():
        plain._momentum_update_key_encoder()
        unshuffled = torch.nn.functional.normalize(plain.encoder_k(x_k), dim=1)
    assert not torch.allclose(keys, unshuffled, atol=1e-4)
