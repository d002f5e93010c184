"""Evaluation: BN re-estimation gives the exact statistics, every encoder is evaluated the same way."""

from __future__ import annotations

import torch

from essence.moco.config import PRESETS
from essence.moco.data import normalize_for_eval
from essence.moco.evaluate import calibrate_bn, eval_encoder, evaluate_model, raw_pixel_features
from essence.moco.model import SplitBatchNorm
from essence.moco.train import build_model


def _cfg(*extra):
    return PRESETS.build("tiny", ["model.bn_splits=4", "eval.batch_size=16", *extra])


def _images(n=64, seed=0):
    g = torch.Generator().manual_seed(seed)
    return (torch.rand(n, 1, 28, 28, generator=g) * 255).to(torch.uint8)


def test_calibrate_bn_gives_exact_statistics_with_split_batchnorm():
    cfg = _cfg()
    model = build_model(cfg)
    enc = model.encoder_q
    bn = enc.backbone.bn1
    assert isinstance(bn, SplitBatchNorm) and bn.num_splits == 4
    with torch.no_grad():                    # stale statistics that must not survive
        bn.running_mean.fill_(5.0)
        bn.running_var.fill_(9.0)
    images = _images(64)
    calibrate_bn(model, images, cfg, batch_size=16)
    with torch.no_grad():
        h = enc.backbone.conv1(normalize_for_eval(images, cfg.aug))      # the first BN's input, (64, C, 28, 28)
    mean = h.mean((0, 2, 3))
    var = torch.stack([b.transpose(0, 1).flatten(1).var(1, unbiased=True) for b in h.split(16)]).mean(0)
    torch.testing.assert_close(bn.running_mean, mean, rtol=1e-4, atol=1e-5)
    torch.testing.assert_close(bn.running_var, var, rtol=1e-4, atol=1e-5)
    # the layers are restored: split statistics and the EMA momentum for training
    assert bn.num_splits == 4 and bn.momentum == 0.1 and enc.training
    # deeper layers were calibrated too (no layer kept its initial mean 0 / var 1)
    assert all(not torch.equal(m.running_var, torch.ones_like(m.running_var))
               for m in enc.modules() if isinstance(m, SplitBatchNorm))


def test_split_batchnorm_momentum_none_is_a_cumulative_average():
    bn = SplitBatchNorm(2, 2, momentum=None).train()
    xs = [torch.randn(4, 2, 3, 3) + i for i in range(3)]
    for x in xs:
        bn(x)
    chunk_means = [torch.stack([x[s::2].mean((0, 2, 3)) for s in range(2)]).mean(0) for x in xs]
    torch.testing.assert_close(bn.running_mean, torch.stack(chunk_means).mean(0), rtol=1e-5, atol=1e-6)


def test_every_encoder_gets_the_same_treatment_and_the_model_is_untouched():
    cfg = _cfg("eval.knn_bank=64", "eval.linear_epochs=1")
    model = build_model(cfg)
    before = {k: v.clone() for k, v in model.state_dict().items()}
    data = (_images(64), torch.arange(64) % 4, _images(32, 1), torch.arange(32) % 4)
    res = evaluate_model(model, cfg, data=data, per_item=True)
    for k, v in model.state_dict().items():          # the kNN monitor must not change the training model
        assert torch.equal(v, before[k]), k
    assert res["knn_correct"].shape == (32,) and res["linear_correct"].shape == (32,)
    assert abs(100 * res["knn_correct"].mean() - res["knn_top1"]) < 1e-9
    assert res["linear_lr"] in cfg.eval.linear_lrs
    # calibrated copy: eval-mode BN statistics are those of the clean images, not the initial 0 / 1
    enc = eval_encoder(model, cfg, data[0])
    assert not torch.equal(enc.encoder_q.backbone.bn1.running_mean, model.encoder_q.backbone.bn1.running_mean)
    kept = eval_encoder(model, cfg.with_overrides({"eval.bn": "keep"}), data[0])
    assert kept is model


def test_raw_pixels_at_encoder_and_native_resolution():
    cfg = _cfg("aug.size=16")
    x = _images(4)
    assert raw_pixel_features(x, cfg).shape == (4, 256)
    assert raw_pixel_features(x, cfg, size=28).shape == (4, 784)
