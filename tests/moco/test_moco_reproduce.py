"""The tiny reproduction runs end to end and writes a report with three claims, numbers and figures."""

from __future__ import annotations

import json

from essence.core.report import VERDICTS
from essence.core.runs import Run
from essence.moco.reproduce import reproduce


def test_reproduce_tiny_writes_report(tmp_path):
    run = Run(tmp_path / "rep", method="moco", preset="tiny")
    report = reproduce(run, preset="tiny", device="cpu")
    path = report.write()
    text = path.read_text()
    assert len(report.claims) == 3 and all(c.verdict in VERDICTS for c in report.claims)
    assert "Scaled down" in text and "raw pixels" in text and "end_to_end" in text
    assert (run.figures_dir / "accuracy_vs_K.png").exists() and (run.figures_dir / "training_curves.png").exists()
    summary = json.loads((run.dir / "summary.json").read_text())
    res = summary["results"]
    assert {"moco_K32", "moco_K64", "end_to_end", "moco_m0.0"} <= set(res)
    for r in [*res.values(), summary["random_encoder"], summary["raw_pixels"]]:
        assert 0.0 <= r["knn_top1"] <= 100.0 and 0.0 <= r["linear_top1"] <= 100.0
    # every pre-training run kept its own metrics and checkpoint
    assert (run.dir / "runs" / "moco_K64" / "checkpoints").is_dir()
