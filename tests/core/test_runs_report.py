import json

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402
import pytest  # noqa: E402

from essence.cli import IndexEntry, _write_index, collect_reports, main  # noqa: E402
from essence.core.report import NOT_REPRODUCED, PARTLY, REPRODUCED, Report  # noqa: E402
from essence.core.runs import Run, read_metrics  # noqa: E402
from essence.methods import METHODS  # noqa: E402


def test_run_directory_layout_and_metrics(tmp_path):
    run = Run.create("moco", "tiny", tmp_path)
    assert run.dir.parent == tmp_path / "moco" and run.dir.name.endswith("-tiny")
    assert run.checkpoints_dir.is_dir() and run.figures_dir.is_dir()
    run.log(1, loss=0.5, acc=float("nan"))
    run.log(2, loss=0.25)
    rows = read_metrics(run.dir)
    assert [r["loss"] for r in rows] == [0.5, 0.25] and rows[0]["acc"] is None
    second = Run.create("moco", "tiny", tmp_path)
    assert second.dir != run.dir


def test_report_writes_markdown_figures_and_summary(tmp_path):
    run = Run.create("moco", "tiny", tmp_path)
    report = Report(run, title="MoCo", paper="He et al.", preset="tiny")
    report.table(["K", "acc"], [(256, 0.5), (4096, 0.75)])
    fig, ax = plt.subplots()
    ax.plot([1, 2], [3, 4])
    report.figure(fig, "curve", "a curve")
    report.claim("accuracy rises with K", verdict=REPRODUCED, evidence="0.50 -> 0.75")
    assert report.verdict == REPRODUCED
    report.claim("m=0 fails", verdict=NOT_REPRODUCED, evidence="0.7 vs 0.71")
    assert report.verdict == PARTLY
    path = report.write()
    text = path.read_text()
    assert "accuracy rises with K" in text and "![a curve](figures/curve.png)" in text
    assert (run.figures_dir / "curve.png").stat().st_size > 1000
    summary = json.loads((run.dir / "summary.json").read_text())
    assert summary["verdict"] == PARTLY and len(summary["claims"]) == 2
    with pytest.raises(ValueError, match="verdict must be one of"):
        report.claim("x", verdict="yes", evidence="")

    index = _write_index(tmp_path, [IndexEntry.from_report(METHODS.get("moco"), report, "", tmp_path),
                                    IndexEntry.from_report(METHODS.get("corruptions"), None, "RuntimeError: boom",
                                                           tmp_path)], "tiny")
    body = index.read_text()
    assert "[report](moco/" in body and "| partly |" in body and "RuntimeError: boom" in body

    # `essence index DIR`: the same rows rebuilt from the written summaries; the latest run of a method wins
    later = Run.create("moco", "tiny", tmp_path)
    newer = Report(later, title="MoCo", paper="He et al.", preset="tiny")
    newer.claim("accuracy rises with K", verdict=REPRODUCED, evidence="0.50 -> 0.80")
    newer.write()
    entries = collect_reports(tmp_path, "tiny")
    assert [e.title for e in entries] == [METHODS.get("moco").title]
    assert entries[0].verdict == REPRODUCED and later.dir.name in entries[0].link
    assert collect_reports(tmp_path, "standard") == []
    assert main(["index", str(tmp_path), "--preset", "tiny"]) == 0
    body = (tmp_path / "index.md").read_text()
    assert "0.50 -> 0.80" in body and "0.7 vs 0.71" not in body
    assert main(["index", str(tmp_path / "nowhere")]) == 2
    assert main(["index", str(tmp_path), "--preset", "paper"]) == 2
