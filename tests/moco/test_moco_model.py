"""MoCo correctness: InfoNCE vs the paper's pseudocode, the queue, the momentum update, shuffling BN."""

from __future__ import annotations

import math

import pytest
import torch
import torch.nn.functional as F

from essence.moco.config import PRESETS, ModelConfig
from essence.moco.loss import batch_logits, infonce_logits, infonce_loss
from essence.moco.model import MoCo, SplitBatchNorm, build_encoder
from essence.nn.ema import EMA, update_momentum


def _cfg(**kw) -> ModelConfig:
    base = dict(arch="resnet10", width=4, in_chans=1, dim=8, mlp=True, K=12, m=0.9, T=0.2, shuffle_bn="split",
                bn_splits=2)
    base.update(kw)
    return ModelConfig(**base)


def _model(**kw) -> MoCo:
    torch.manual_seed(0)
    return MoCo(_cfg(**kw), bank_size=kw.pop("bank_size", None) if "bank_size" in kw else None)


# ---------------------------------------------------------------------------------------------------- loss
def _pseudocode_loss(q, k, queue, T):
    """Eq. (1), one query at a time, straight from the paper: -log exp(q.k+/T) / sum over k+ and the queue."""
    losses = []
    for n in range(q.shape[0]):
        pos = math.exp(float(q[n] @ k[n]) / T)
        neg = sum(math.exp(float(q[n] @ queue[:, i]) / T) for i in range(queue.shape[1]))
        losses.append(-math.log(pos / (pos + neg)))
    return sum(losses) / len(losses)


def test_infonce_matches_pseudocode():
    g = torch.Generator().manual_seed(1)
    q = F.normalize(torch.randn(5, 8, generator=g, dtype=torch.float64), dim=1)
    k = F.normalize(torch.randn(5, 8, generator=g, dtype=torch.float64), dim=1)
    queue = F.normalize(torch.randn(8, 7, generator=g, dtype=torch.float64), dim=0)
    loss, logits, labels = infonce_loss(q, k, queue, 0.07)
    assert logits.shape == (5, 8) and labels.tolist() == [0] * 5
    torch.testing.assert_close(logits[:, 0], (q * k).sum(1).float() / 0.07)
    torch.testing.assert_close(logits[:, 1:], (q @ queue).float() / 0.07)
    assert float(loss) == pytest.approx(_pseudocode_loss(q, k, queue, 0.07), rel=1e-5)


def test_identical_views_loss_formula():
    """With q = k (identical encoders, no augmentation) the loss is -log(e^{1/T} / (e^{1/T} + sum e^{q.k_i/T}))."""
    g = torch.Generator().manual_seed(2)
    q = F.normalize(torch.randn(3, 4, generator=g), dim=1)
    queue = F.normalize(torch.randn(4, 6, generator=g), dim=0)
    T = 0.2
    expected = torch.stack([-torch.log(math.exp(1 / T) / (math.exp(1 / T) + torch.exp(q[n] @ queue / T).sum()))
                            for n in range(3)]).mean()
    torch.testing.assert_close(infonce_loss(q, q, queue, T)[0], expected, rtol=1e-5, atol=1e-5)


def test_infonce_bad_input():
    q = torch.randn(3, 4)
    with pytest.raises(ValueError, match="queue must be"):
        infonce_logits(q, q, torch.randn(5, 6), 0.1)
    with pytest.raises(ValueError, match="temperature"):
        infonce_logits(q, q, torch.randn(4, 6), 0.0)
    with pytest.raises(ValueError, match="q and k"):
        infonce_logits(q, torch.randn(2, 4), torch.randn(4, 6), 0.1)


def test_batch_logits_end_to_end():
    q, keys = torch.randn(3, 4), torch.randn(6, 4)
    logits, labels = batch_logits(q, keys, 0.5, offset=3)
    torch.testing.assert_close(logits, q @ keys.T / 0.5)
    assert labels.tolist() == [3, 4, 5]


# --------------------------------------------------------------------------------------------------- queue
def test_queue_init_is_normalised_and_wraps():
    model = _model(K=10)
    torch.testing.assert_close(model.queue.norm(dim=0), torch.ones(10))
    keys = [F.normalize(torch.randn(4, 8), dim=1) for _ in range(3)]
    for kk in keys:
        model._dequeue_and_enqueue(kk)
    # 12 keys into K=10: slots 0..3 <- batch 0, 4..7 <- batch 1, 8,9 <- batch 2[:2], 0,1 <- batch 2[2:]
    assert int(model.queue_ptr) == 2
    torch.testing.assert_close(model.queue[:, 2:4], keys[0][2:].T)
    torch.testing.assert_close(model.queue[:, 4:8], keys[1].T)
    torch.testing.assert_close(model.queue[:, 8:10], keys[2][:2].T)
    torch.testing.assert_close(model.queue[:, 0:2], keys[2][2:].T)


def test_queue_batch_larger_than_k():
    model = _model(K=5)
    model._dequeue_and_enqueue(F.normalize(torch.randn(3, 8), dim=1))    # ptr 3
    keys = F.normalize(torch.randn(7, 8), dim=1)
    model._dequeue_and_enqueue(keys)
    # a sequential write of 7 keys from slot 3 leaves keys[2:] at slots 0..4 rotated; pointer (3 + 7) % 5 = 0
    assert int(model.queue_ptr) == 0
    expected = torch.empty(8, 5)
    for j in range(7):
        expected[:, (3 + j) % 5] = keys[j]
    torch.testing.assert_close(model.queue, expected)


def test_enqueue_happens_after_logits():
    model = _model(K=12, m=0.5)
    x_q, x_k = torch.randn(4, 1, 28, 28), torch.randn(4, 1, 28, 28)
    before = model.queue.clone()
    out = model(x_q, x_k, generator=torch.Generator().manual_seed(0))
    q = model._encode_q(model.encoder_q, x_q)  # same BN statistics (train mode, split chunks) as in the step
    # negatives in the logits are the queue *before* this step's keys were written
    torch.testing.assert_close(out.logits[:, 1:], (q @ before / model.T).detach(), rtol=1e-4, atol=1e-4)
    torch.testing.assert_close(model.queue[:, :4], out.keys.T)
    torch.testing.assert_close(model.queue[:, 4:], before[:, 4:])
    assert int(model.queue_ptr) == 4
    torch.testing.assert_close(out.logits[:, 0], (q * out.keys).sum(1).detach() / model.T, rtol=1e-4, atol=1e-4)


# ------------------------------------------------------------------------------------------------ momentum
def test_key_encoder_no_grad_and_momentum_formula():
    model = _model(m=0.9)
    opt = torch.optim.SGD([p for p in model.parameters() if p.requires_grad], lr=0.5)
    x = torch.randn(4, 1, 28, 28)
    for step in range(2):
        theta_q = [p.detach().clone() for p in model.encoder_q.parameters()]
        theta_k = [p.detach().clone() for p in model.encoder_k.parameters()]
        out = model(x, x.flip(-1), generator=torch.Generator().manual_seed(step))
        for pk, tk, tq in zip(model.encoder_k.parameters(), theta_k, theta_q):
            torch.testing.assert_close(pk, 0.9 * tk + 0.1 * tq, rtol=1e-6, atol=1e-7)  # float32 ulp
        out.loss.backward()
        assert all(p.grad is None and not p.requires_grad for p in model.encoder_k.parameters())
        assert all(p.grad is not None for p in model.encoder_q.parameters())
        assert not out.keys.requires_grad
        opt.step()
        opt.zero_grad()


def test_key_encoder_buffers_follow_the_intended_rule():
    """After a step: f_k's parameters are the EMA of f_q's, and its BN running statistics are NOT averaged with
    f_q's but come from f_k's own train-mode forward on the shuffled keys: for each BN, the mean over the split
    chunks of (0.9 * old + 0.1 * chunk statistic), computed here with an ordinary-BN copy run chunk by chunk."""
    model = _model(m=0.9, bn_splits=2)
    opt = torch.optim.SGD([p for p in model.parameters() if p.requires_grad], lr=0.5)
    g = torch.Generator().manual_seed(0)
    for step in range(3):
        x_q, x_k = torch.randn(8, 1, 28, 28, generator=g), torch.randn(8, 1, 28, 28, generator=g)
        # reference key encoder: parameters EMA-updated, buffers as they were before the step
        ref = build_encoder(model.cfg, bn_splits=1)
        ref.load_state_dict(model.encoder_k.state_dict())
        with torch.no_grad():
            for pr, pq in zip(ref.parameters(), model.encoder_q.parameters()):
                pr.mul_(0.9).add_(0.1 * pq)
        perm = torch.randperm(8, generator=torch.Generator().manual_seed(100 + step))   # the shuffle's draw
        states = []
        for chunk in x_k[perm].chunk(2):
            r = build_encoder(model.cfg, bn_splits=1)
            r.load_state_dict(ref.state_dict())
            with torch.no_grad():
                r.train()(chunk)
            states.append(r.state_dict())
        out = model(x_q, x_k, generator=torch.Generator().manual_seed(100 + step))
        got = model.encoder_k.state_dict()
        for name, value in ref.state_dict().items():
            if name.endswith(("running_mean", "running_var")):
                want = torch.stack([s[name] for s in states]).mean(0)
            elif name.endswith("num_batches_tracked"):
                want = value + 1
            else:
                want = value
            torch.testing.assert_close(got[name], want, rtol=1e-5, atol=1e-6, msg=f"step {step}: {name}")
        # and the buffers are not an EMA of the query encoder's
        assert not torch.allclose(got["backbone.bn1.running_mean"],
                                  0.9 * ref.state_dict()["backbone.bn1.running_mean"]
                                  + 0.1 * model.encoder_q.state_dict()["backbone.bn1.running_mean"], atol=1e-6)
        out.loss.backward()
        opt.step()
        opt.zero_grad()


def test_update_momentum_extremes_and_errors():
    torch.manual_seed(0)
    a, b = torch.nn.Linear(3, 2), torch.nn.Linear(3, 2)
    w = a.weight.detach().clone()
    update_momentum(a, b, 1.0)
    assert torch.equal(a.weight, w)
    update_momentum(a, b, 0.0)
    assert torch.equal(a.weight, b.weight)
    with pytest.raises(ValueError, match="momentum"):
        update_momentum(a, b, 1.5)
    with pytest.raises(ValueError, match="parameter"):
        update_momentum(a, torch.nn.Linear(3, 3), 0.5)
    ema = EMA(b, m=0.5)
    assert not any(p.requires_grad for p in ema.parameters())


# ------------------------------------------------------------------------------------------- shuffling BN
def test_split_batchnorm_matches_per_chunk_bn():
    torch.manual_seed(0)
    sbn = SplitBatchNorm(3, 4).train()
    with torch.no_grad():
        sbn.weight.uniform_(0.5, 1.5)
        sbn.bias.uniform_(-1, 1)
    x = torch.randn(8, 3, 5, 5)
    y = sbn(x)
    ref = torch.empty_like(x)
    for s in range(4):  # group s = samples s, s + 4, ...
        ref[s::4] = F.batch_norm(x[s::4], None, None, sbn.weight, sbn.bias, True, 0.1, sbn.eps)
    torch.testing.assert_close(y, ref, rtol=1e-5, atol=1e-5)
    rm = torch.stack([0.1 * x[s::4].mean((0, 2, 3)) for s in range(4)]).mean(0)
    torch.testing.assert_close(sbn.running_mean, rm, rtol=1e-5, atol=1e-6)
    with pytest.raises(ValueError, match="divisible"):
        sbn(torch.randn(6, 3, 5, 5))
    sbn.eval()
    torch.testing.assert_close(sbn(x), F.batch_norm(x, sbn.running_mean, sbn.running_var, sbn.weight, sbn.bias,
                                                    False, 0.0, sbn.eps))


def test_split_shuffle_keys_equal_per_chunk_reference():
    """shuffle_bn=split: keys = unshuffle(f_k(x[perm])) with BN statistics of each contiguous chunk of x[perm]."""
    model = _model(bn_splits=2, m=0.0)
    x = torch.randn(8, 1, 28, 28)
    g = torch.Generator().manual_seed(5)
    perm = torch.randperm(8, generator=torch.Generator().manual_seed(5))  # the draw _encode_keys makes
    with torch.no_grad():
        model._momentum_update_key_encoder()
        keys = model._encode_keys(model.encoder_k, x, g)
    # reference: an ordinary-BN encoder with the same weights, run on each chunk alone
    plain = build_encoder(model.cfg, bn_splits=1)
    plain.load_state_dict(model.encoder_k.state_dict())
    plain.train()
    with torch.no_grad():
        chunks = [F.normalize(plain(c), dim=1) for c in x[perm].chunk(2)]
    ref = torch.cat(chunks)[torch.argsort(perm)]
    torch.testing.assert_close(keys, ref, rtol=1e-4, atol=1e-5)
    # and the shuffle matters: without it the statistics differ
    with torch.no_grad():
        unshuffled = torch.cat([F.normalize(plain(c), dim=1) for c in x.chunk(2)])
    assert not torch.allclose(keys, unshuffled, atol=1e-4)


def test_shuffle_unshuffle_is_identity_in_eval_mode():
    model = _model(bn_splits=2).eval()
    x = torch.randn(6, 1, 28, 28)
    with torch.no_grad():
        a = model._encode_keys(model.encoder_k, x, torch.Generator().manual_seed(0))
        b = F.normalize(model.encoder_k(x), dim=1)
    torch.testing.assert_close(a, b, rtol=1e-5, atol=1e-6)


# ------------------------------------------------------------------------------------- other mechanisms
def test_end_to_end_backprops_both_views():
    model = _model(mechanism="end_to_end", shuffle_bn="none")
    assert not hasattr(model, "encoder_k") and not hasattr(model, "queue")
    x_q, x_k = torch.randn(4, 1, 28, 28), torch.randn(4, 1, 28, 28)
    out = model(x_q, x_k)
    assert out.logits.shape == (4, 4) and out.labels.tolist() == [0, 1, 2, 3]
    # the gradient reaches the encoder through the keys too
    x_k.requires_grad_(True)
    model(x_q, x_k).loss.backward()
    assert x_k.grad is not None and x_k.grad.abs().sum() > 0


def test_memory_bank_positive_and_update():
    torch.manual_seed(0)
    model = MoCo(_cfg(mechanism="memory_bank", K=5, bank_momentum=0.5), bank_size=20)
    x = torch.randn(4, 1, 28, 28)
    idx = torch.tensor([3, 7, 11, 19])
    bank0 = model.bank.clone()
    out = model(x, index=idx, generator=torch.Generator().manual_seed(0))
    q = out.keys
    torch.testing.assert_close(out.logits[:, 0], (q * bank0[idx]).sum(1) / model.T, rtol=1e-4, atol=1e-5)
    torch.testing.assert_close(model.bank[idx], F.normalize(0.5 * bank0[idx] + 0.5 * q, dim=1))
    others = torch.ones(20, dtype=torch.bool)
    others[idx] = False
    assert torch.equal(model.bank[others], bank0[others])
    with pytest.raises(ValueError, match="index"):
        model(x)
    with pytest.raises(ValueError, match="bank_size"):
        MoCo(_cfg(mechanism="memory_bank"))


def test_symmetric_loss_enqueues_both_views():
    model = _model(symmetric=True, K=16)
    out = model(torch.randn(4, 1, 28, 28), torch.randn(4, 1, 28, 28), generator=torch.Generator().manual_seed(0))
    assert int(model.queue_ptr) == 8 and torch.isfinite(out.loss)


def test_bad_inputs_and_configs():
    model = _model()
    with pytest.raises(ValueError, match="x_k"):
        model(torch.randn(4, 1, 28, 28), torch.randn(2, 1, 28, 28))
    with pytest.raises(ValueError, match="needs several processes"):
        MoCo(_cfg(shuffle_bn="ddp"))
    with pytest.raises(ValueError, match="model.m"):
        PRESETS.build("tiny", ["model.m=1.5"])
    with pytest.raises(ValueError, match="model.K"):
        PRESETS.build("tiny", ["model.K=0"])
    with pytest.raises(ValueError, match="model.arch"):
        PRESETS.build("tiny", ["model.arch=resnet7"])
    with pytest.raises(ValueError, match="expected images"):
        model.encoder_q(torch.randn(4, 3, 28, 28))
