"""``essence noisy-student train | evaluate | pseudo-label`` end to end on the tiny preset (Fashion-MNIST)."""

from __future__ import annotations

import json

import pytest

from essence.cli import main

pytest.importorskip("timm")


def _fmnist_available() -> bool:
    try:
        from essence.data.fashion_mnist import fashion_mnist_root

        fashion_mnist_root()
        return True
    except Exception:
        return False


@pytest.mark.skipif(not _fmnist_available(), reason="needs apt-get install dataset-fashion-mnist")
def test_cli_train_resume_evaluate_pseudo_label(tmp_path, capsys):
    out = tmp_path / "run"
    base = ["noisy-student", "train", "--preset", "tiny", "--device", "cpu", "--out", str(out),
            "--set", "loop.generations=1", "--set", "data.unlabeled=200", "--set", "train.threads=1"]
    assert main(base) == 0
    assert (out / "generations" / "gen1.safetensors").exists()
    assert main(base) == 2                                        # an existing run is refused without --resume
    assert "existing run directory" in capsys.readouterr().err
    assert main(["noisy-student", "train", "--resume", str(out), "--device", "cpu"]) == 0   # nothing left to do
    capsys.readouterr()
    assert main(["noisy-student", "evaluate", str(out), "--device", "cpu"]) == 0
    res = json.loads(capsys.readouterr().out)
    assert set(res["accuracy"]) == {"gen0", "gen1"} and all(0 <= v <= 1 for v in res["accuracy"].values())
    labels = tmp_path / "labels.safetensors"
    assert main(["noisy-student", "pseudo-label", str(out / "generations" / "gen1.safetensors"), "--out",
                 str(labels), "--device", "cpu", "--set", "pseudo.label_type=hard"]) == 0
    printed = capsys.readouterr().out
    stats = json.loads(printed[printed.index("{"):])
    assert labels.exists() and stats["unlabeled"] == 200 and stats["kept_total"] > 0
    from essence.noisy_student.train import load_pseudo_labels

    p = load_pseudo_labels(labels)
    assert p.label_type == "hard" and p.targets.shape == (200, 10) and set(p.targets.sum(1).tolist()) == {1.0}


def test_cli_errors_are_one_line(capsys, tmp_path):
    assert main(["noisy-student", "evaluate", str(tmp_path), "--device", "cpu"]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and "no finished generation" in err[0]
    assert main(["noisy-student", "train", "--preset", "tiny", "--set", "pseudo.label_type=medium"]) == 2
    assert "pseudo.label_type" in capsys.readouterr().err
