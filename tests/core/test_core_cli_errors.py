"""User errors of the command line end in one line on stderr and exit code 2, never a traceback (issue 9):
an existing run directory as --out, checkpoints without config / step / a readable JSON header, missing devices."""

from __future__ import annotations

import json
import os
import subprocess
import sys

import pytest
import torch
from safetensors.torch import save_file

from essence.core.checkpoint import CheckpointError, read_checkpoint, save_checkpoint
from essence.core.cli import run_cli
from essence.core.runs import Run, RunExistsError, run_files
from essence.core.runtime import resolve_device
from essence.moco.cli import main as moco_main


def _one_error_line(capsys) -> str:
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1, err
    assert err[0].startswith("error:") or ": error: " in err[0], err
    return err[0]


def _header_file(path, header: dict | str):
    """A safetensors file whose 'essence' JSON header is ``header`` (a dict, or raw text)."""
    text = header if isinstance(header, str) else json.dumps(header)
    save_file({"module/moco/w": torch.zeros(2)}, str(path), metadata={"essence": text})
    return path


# -- an existing run directory as --out --------------------------------------------------------------------
def test_run_create_refuses_an_existing_run_unless_resuming(tmp_path):
    empty = tmp_path / "empty"
    empty.mkdir()
    assert Run.create("m", "tiny", empty, exact=True).dir == empty          # an empty folder is fine
    assert run_files(empty) == []                                           # (sub-folders alone are no run)
    (empty / "metrics.jsonl").write_text("{}\n")
    with pytest.raises(RunExistsError, match=r"existing run directory \(it has metrics.jsonl\); choose another"):
        Run.create("m", "tiny", empty, exact=True)
    with pytest.raises(RunExistsError, match="pass --resume to continue it or choose another --out"):
        Run.create("m", "tiny", empty, exact=True, resumable=True)
    assert Run.create("m", "tiny", empty, exact=True, resume=True).dir == empty

    ckpt_only = tmp_path / "ckpt_only"
    save_checkpoint(ckpt_only / "checkpoints" / "step-000001", step=1, rng=False)
    assert run_files(ckpt_only) == ["checkpoints/"]
    with pytest.raises(RunExistsError):
        Run.create("m", "tiny", ckpt_only, exact=True)
    # not exact: a parent folder, a fresh timestamped run inside
    assert Run.create("m", "tiny", ckpt_only).dir.parent == ckpt_only / "m"


def test_moco_train_refuses_an_existing_out(tmp_path, capsys):
    out = tmp_path / "run"
    out.mkdir()
    (out / "config.json").write_text("{}")
    (out / "metrics.jsonl").write_text('{"step": 1}\n')
    assert moco_main(["train", "--preset", "tiny", "--device", "cpu", "--out", str(out)]) == 2
    line = _one_error_line(capsys)
    assert f"--out {out} is an existing run directory" in line
    assert "pass --resume to continue it or choose another --out" in line
    assert (out / "metrics.jsonl").read_text() == '{"step": 1}\n'       # nothing appended


def test_polyencoder_resume_needs_a_run_in_out(tmp_path, capsys):
    from essence.polyencoder.cli import main as poly_main

    assert poly_main(["train", "--preset", "tiny", "--resume"]) == 2
    assert "--resume needs --out" in _one_error_line(capsys)
    assert poly_main(["train", "--preset", "tiny", "--resume", "--out", str(tmp_path / "none")]) == 2
    assert "holds no run to continue" in _one_error_line(capsys)


# -- broken checkpoints ------------------------------------------------------------------------------------
def test_checkpoint_without_config(tmp_path, capsys):
    path = save_checkpoint(tmp_path / "noconfig", modules={"moco": torch.nn.Linear(2, 2)}, step=3)
    with pytest.raises(CheckpointError, match="has no config"):
        read_checkpoint(path).require_config()
    assert moco_main(["train", "--resume", str(path), "--device", "cpu"]) == 2
    assert "has no config" in _one_error_line(capsys)
    assert moco_main(["evaluate", str(path), "--device", "cpu"]) == 2
    assert "no config" in _one_error_line(capsys)


@pytest.mark.parametrize(("header", "message"), [
    ({"format": "essence-checkpoint/1", "state": {}, "config": {}}, "has no 'step'"),
    ({"format": "essence-checkpoint/1", "step": "7", "state": {}}, "has an invalid 'step'"),
    ('{"format": "essence-checkpoint/1", "step": 3,', "JSON header is corrupt"),
    ("[1, 2]", "JSON header is not an object"),
    ({"format": "essence-checkpoint/1", "step": 1, "state": [1]}, "'state' is not an object"),
    ({"format": "other/9", "step": 1}, "unsupported checkpoint format"),
])
def test_malformed_checkpoint_headers(tmp_path, capsys, header, message):
    path = _header_file(tmp_path / "bad.safetensors", header)
    with pytest.raises(CheckpointError, match=message):
        read_checkpoint(path)
    assert moco_main(["train", "--resume", str(path), "--device", "cpu"]) == 2
    line = _one_error_line(capsys)
    assert message.replace("\\", "") in line and str(path) in line


def test_not_a_safetensors_file(tmp_path, capsys):
    path = tmp_path / "junk.safetensors"
    path.write_bytes(b"\x00junk")
    assert moco_main(["train", "--resume", str(path), "--device", "cpu"]) == 2
    assert "not a readable safetensors checkpoint" in _one_error_line(capsys)


# -- devices -----------------------------------------------------------------------------------------------
def _exits_2(argv):
    """--device is checked while parsing: argparse exits with code 2 (no usage block, see ArgumentParser)."""
    with pytest.raises(SystemExit) as exc:
        moco_main(argv)
    assert exc.value.code == 2


def test_missing_cuda_devices(monkeypatch, capsys, tmp_path):
    monkeypatch.setattr(torch.cuda, "is_available", lambda: False)
    with pytest.raises(ValueError, match="torch sees no CUDA GPU"):
        resolve_device("cuda")
    with pytest.raises(ValueError, match="torch sees no CUDA GPU"):
        resolve_device(torch.device("cuda", 0))
    _exits_2(["train", "--preset", "tiny", "--device", "cuda", "--out", str(tmp_path / "a")])
    assert "device 'cuda' was requested but torch sees no CUDA GPU" in _one_error_line(capsys)
    assert not (tmp_path / "a").exists()                                   # refused before a run dir is made

    monkeypatch.setattr(torch.cuda, "is_available", lambda: True)
    monkeypatch.setattr(torch.cuda, "device_count", lambda: 2)
    with pytest.raises(ValueError, match=r"has 2 CUDA GPUs \(cuda:0 to cuda:1\)"):
        resolve_device("cuda:7")
    assert resolve_device("cuda:1") == torch.device("cuda", 1)
    _exits_2(["train", "--preset", "tiny", "--device", "cuda:7", "--out", str(tmp_path / "b")])
    assert "device 'cuda:7' was requested but this machine has 2 CUDA GPUs" in _one_error_line(capsys)
    for bad in ("cuda:x", "gpu", "cuda:-1"):
        with pytest.raises(ValueError, match="device must be auto, cpu, cuda, cuda:N or mps"):
            resolve_device(bad)


def test_long_errors_are_not_wrapped(capsys):
    msg = "a message " * 30 + "[red]not markup[/]"
    assert run_cli(lambda: (_ for _ in ()).throw(ValueError(msg))) == 2
    assert _one_error_line(capsys) == f"error: {msg}"


def test_entry_point_prints_one_line_and_no_traceback(tmp_path):
    """The real ``python -m essence`` with stderr a pipe (rich would wrap at 80 columns)."""
    bad = _header_file(tmp_path / "a-rather-long-file-name-so-that-the-message-is-longer-than-80.safetensors",
                       {"format": "essence-checkpoint/1", "state": {}})
    env = {**os.environ, "COLUMNS": "80"}
    for args, expected in ((["moco", "train", "--resume", str(bad)], "has no 'step'"),
                           (["moco", "train", "--device", "cuda:7"], "device 'cuda:7' was requested")):
        proc = subprocess.run([sys.executable, "-m", "essence", *args], capture_output=True, text=True, env=env,
                              cwd=tmp_path, timeout=120)
        assert proc.returncode == 2, proc.stderr
        assert "Traceback" not in proc.stderr
        lines = proc.stderr.strip().splitlines()
        assert len(lines) == 1 and expected in lines[0], proc.stderr


# -- a failed command leaves no empty run directory (issue 18: a failed distill left one) --------------------
def test_a_command_that_fails_before_any_result_removes_its_new_run_dir(tmp_path, monkeypatch):
    from essence.core.runs import Run

    monkeypatch.chdir(tmp_path)

    def fails_early():
        run = Run.create("m", "p", tmp_path / "early", exact=True)
        run.save_config({"a": 1})
        (run.dir / "encoder").mkdir()
        (run.dir / "encoder" / "vocab.txt").write_text("x")        # setup files are not results
        raise ValueError("teacher has no MLM head")

    assert run_cli(fails_early) == 2
    assert not (tmp_path / "early").exists()

    def fails_late():
        run = Run.create("m", "p", tmp_path / "late", exact=True)
        run.log(1, loss=1.0)
        raise ValueError("diverged")

    assert run_cli(fails_late) == 2
    assert (tmp_path / "late" / "metrics.jsonl").exists()             # results are never removed

    def interrupted_with_checkpoint():
        run = Run.create("m", "p", tmp_path / "ckpt", exact=True)
        (run.checkpoints_dir / "step-000001.safetensors").write_bytes(b"x")
        raise KeyboardInterrupt

    assert run_cli(interrupted_with_checkpoint) == 130
    assert (tmp_path / "ckpt" / "checkpoints" / "step-000001.safetensors").exists()


def test_a_failed_resume_or_a_pre_existing_dir_is_never_removed(tmp_path):
    from essence.core.runs import Run

    (tmp_path / "mine").mkdir()

    def fails():
        Run.create("m", "p", tmp_path / "mine", exact=True)                # the user's own (empty) directory
        Run.create("m", "p", tmp_path / "resumed", exact=True, resume=True)
        raise ValueError("bad")

    assert run_cli(fails) == 2
    assert (tmp_path / "mine").is_dir() and (tmp_path / "resumed").is_dir()


def test_a_successful_command_keeps_its_run_dir_even_without_results(tmp_path):
    from essence.core.runs import Run

    assert run_cli(lambda: Run.create("m", "p", tmp_path / "ok", exact=True) and 0) == 0
    assert run_cli(lambda: (_ for _ in ()).throw(ValueError("a later, unrelated failure"))) == 2
    assert (tmp_path / "ok").is_dir()
