"""The reproduction's verdicts come from the statistics: numbers that should flip each verdict do flip it."""

from __future__ import annotations

import json

import numpy as np
import pytest

from essence.core.report import VERDICTS
from essence.core.runs import Run
from essence.core.stats import INCONCLUSIVE, NOT_REPRODUCED, REPRODUCED, SeedResults, combine
from essence.idvae.reproduce import decide_claims

EXPERTS = ("classifier", "random_cnn")
PARAMS = {"vae": 100, "idvae": 101, "vaegan": 150}


def _arm(fid, mse, acc, *, spread=0.5, seeds=3, items=200, rng=None):
    rng = rng or np.random.default_rng(0)
    r = SeedResults()
    for s in range(seeds):
        r.add(s, {**{f"fid_{e}": fid + spread * (s - 1) for e in EXPERTS},
                  "recon_mse": np.clip(mse + 0.002 * rng.standard_normal(items), 0, None),
                  "cond_acc": (rng.random(items) < acc).astype(float)})
    return r


def _results(**over):
    spec = {"vae": (60.0, 0.020, 0.10), "vaegan": (30.0, 0.030, 0.10), "idvae": (28.0, 0.025, 0.10),
            "idvae_no_prior_fakes": (45.0, 0.025, 0.10), "idvae_no_fm": (40.0, 0.060, 0.10),
            "idvae_lambda_low": (50.0, 0.022, 0.10), "idvae_lambda_high": (20.0, 0.040, 0.10),
            "cidvae": (30.0, 0.025, 0.95)}
    spec.update(over)
    rng = np.random.default_rng(1)
    return {k: _arm(*v, rng=rng) for k, v in spec.items()}


def _verdicts(results):
    return [combine(s.decisions) for s in decide_claims(results, EXPERTS, PARAMS)]


def test_clear_numbers_reproduce_every_claim():
    specs = decide_claims(_results(), EXPERTS, PARAMS)
    assert len(specs) == 7
    assert [combine(s.decisions) for s in specs][:2] == [REPRODUCED, REPRODUCED]
    verdicts = _verdicts(_results(vae=(60.0, 0.026, 0.10)))
    assert verdicts == [REPRODUCED] * 7
    assert "ratio 0.673" in specs[1].evidence


def test_flipped_numbers_flip_the_verdicts():
    # (a) IDVAE worse than the VAE under both networks
    assert _verdicts(_results(idvae=(80.0, 0.025, 0.10)))[0] == NOT_REPRODUCED
    # (b) IDVAE far worse than VAE-GAN (beyond the +10% margin)
    assert _verdicts(_results(idvae=(45.0, 0.025, 0.10)))[1] == NOT_REPRODUCED
    # (c) reconstruction much worse than both baselines
    assert _verdicts(_results(idvae=(28.0, 0.090, 0.10)))[2] == NOT_REPRODUCED
    # (d) prior fakes do not help; feature matching does not help; lambda has the opposite effect
    v = _verdicts(_results(idvae_no_prior_fakes=(15.0, 0.025, 0.10), idvae_no_fm=(40.0, 0.010, 0.10),
                           idvae_lambda_low=(15.0, 0.022, 0.10)))
    assert v[3:6] == [NOT_REPRODUCED] * 3
    # (e) conditional samples at chance
    assert _verdicts(_results(cidvae=(30.0, 0.025, 0.10)))[6] == NOT_REPRODUCED


def test_seed_noise_makes_a_verdict_inconclusive():
    res = _results(idvae=(58.0, 0.025, 0.10))
    for e in EXPERTS:                      # same mean, large spread over seeds
        res["idvae"].values[f"fid_{e}"] = [30.0, 58.0, 86.0]
    assert _verdicts(res)[0] == INCONCLUSIVE
    d = decide_claims(res, EXPERTS, PARAMS)[0].decisions[0]
    assert d.estimate.n == 3 and "Welch" in d.estimate.method and d.needed_n is not None


@pytest.mark.slow
def test_reproduce_tiny_writes_a_report(tmp_path, monkeypatch):
    monkeypatch.setenv("ESSENCE_CACHE", str(tmp_path / "cache"))
    monkeypatch.setenv("ESSENCE_PROGRESS", "0")
    from essence.idvae.reproduce import reproduce

    run = Run(tmp_path / "rep", method="idvae", preset="tiny")
    report = reproduce(run, preset="tiny", device="cpu")
    text = report.write().read_text()
    assert len(report.claims) == 7 and all(c.verdict in VERDICTS for c in report.claims)
    assert "Scaled down" in text and "Kendall tau" in text and "95% CI" in text
    for fig in ("samples", "reconstructions", "interpolations"):
        assert (run.figures_dir / f"{fig}.png").exists()
    summary = json.loads((run.dir / "summary.json").read_text())
    assert set(summary["results"]) >= {"vae", "vaegan", "idvae", "cidvae"}
    assert summary["precision"].startswith(("fp32", "bf16", "fp16"))   # the report states the precision
    assert summary["params"]["idvae"] < summary["params"]["vaegan"]
