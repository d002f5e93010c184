"""PPLM core on a tiny random causal LM (2 layers, d = 32, 512-token BPE): exactness, the reference algorithm,
gradients, chained bag-of-words probabilities, batching, and bad input."""

from __future__ import annotations

import warnings

import pytest
import torch

from essence.pplm import BagOfWords, Discriminator, GenerateConfig, generate, tiny_lm
from essence.pplm.attribute import AttributeModel
from essence.pplm.lm import cache_tensors, lm_forward, make_cache
from essence.pplm.reference import reference_generate

WORDS = ["space", "planet", "galaxy", "star", "telescope", "universe", "the", "and", "was", "court", "law", "war"]


@pytest.fixture(scope="module")
def lm():
    return tiny_lm(seed=0)


def _plain_greedy(lm, ids, length):
    """Greedy decoding by full recompute, written plainly (no cache)."""
    x = torch.tensor([ids])
    out = []
    with torch.no_grad():
        for _ in range(length):
            nxt = int(lm.model(input_ids=x).logits[0, -1].argmax())
            out.append(nxt)
            x = torch.cat([x, torch.tensor([[nxt]])], 1)
    return out


def test_cached_logits_equal_uncached(lm):
    ids = torch.tensor([lm.encode("The lake was calm and the sky")])
    with torch.no_grad():
        full, _, _ = lm_forward(lm.model, ids)
        logits, cache, _ = lm_forward(lm.model, ids[:, :3])
        steps = [logits[:, -1]]
        for t in range(3, ids.shape[1]):
            logits, cache, _ = lm_forward(lm.model, ids[:, t:t + 1], cache=cache)
            steps.append(logits[:, -1])
    torch.testing.assert_close(torch.stack(steps, 1), full[:, 2:], rtol=0, atol=1e-5)


@pytest.mark.parametrize("knob", [{"stepsize": 0.0}, {"num_iterations": 0}, {"gm_scale": 0.0}])
def test_no_perturbation_is_plain_greedy(lm, knob):
    bow = BagOfWords(WORDS, lm.tokenizer)
    ids = lm.encode("The lake")
    cfg = GenerateConfig(length=12, **knob)
    g = generate(lm, ids, bow, cfg)
    assert g.tokens[0].tolist() == _plain_greedy(lm, ids, 12)
    assert generate(lm, ids, None, cfg).tokens[0].tolist() == _plain_greedy(lm, ids, 12)


@pytest.mark.parametrize("knobs", [dict(stepsize=0.5), dict(stepsize=0.5, window_length=3, decay=True),
                                   dict(stepsize=0.5, grad_length=4, gamma=1.0, kl_scale=0.0)])
def test_cached_equals_reference_bow(lm, knobs):
    bow = BagOfWords(WORDS, lm.tokenizer, multi_token="drop")
    ids = lm.encode("The lake")
    cfg = GenerateConfig(length=10, **knobs)
    ours = generate(lm, ids, bow, cfg).tokens[0].tolist()
    assert ours == reference_generate(lm, ids, bow, cfg)
    assert ours != _plain_greedy(lm, ids, 10), "the perturbation must change the text for this test to mean anything"


def test_cached_equals_reference_discriminator(lm):
    torch.manual_seed(1)
    disc = Discriminator(lm.hidden_size, ["neg", "pos"], class_label="pos", fingerprint=lm.fingerprint)
    with torch.no_grad():
        disc.head.weight.mul_(30)
    ids = lm.encode("The potato")
    cfg = GenerateConfig(length=8, stepsize=0.5, num_iterations=3, horizon_length=2, gamma=1.0)
    ours = generate(lm, ids, disc, cfg).tokens[0].tolist()
    assert ours == reference_generate(lm, ids, disc, cfg)
    assert ours != _plain_greedy(lm, ids, 8)


def test_sampling_matches_reference(lm):
    bow = BagOfWords(WORDS, lm.tokenizer, multi_token="drop")
    ids = lm.encode("In this essay")
    cfg = GenerateConfig(length=8, stepsize=0.3, sample=True, seed=5)
    assert generate(lm, ids, bow, cfg).tokens[0].tolist() == reference_generate(lm, ids, bow, cfg, seed=5)


def test_perturbation_gradient_check():
    """d logits / d(delta K) by autograd equals finite differences (float64)."""
    lm = tiny_lm(seed=3)
    lm.model.double()
    ids = torch.tensor([lm.encode("The lake was")])
    with torch.no_grad():
        _, cache, _ = lm_forward(lm.model, ids[:, :-1])
    past = [(k.detach(), v.detach()) for k, v in cache_tensors(cache)]
    last = ids[:, -1:]

    def f(dk):
        layers = [(past[0][0] + dk, past[0][1]), *past[1:]]
        logits, _, _ = lm_forward(lm.model, last, cache=make_cache(layers))
        return logits[0, -1, :5]

    dk = torch.zeros_like(past[0][0], requires_grad=True)
    assert torch.autograd.gradcheck(f, (dk,), eps=1e-6, atol=1e-6)
    assert f(dk).detach().sub(f(torch.randn_like(dk))).abs().max() > 1e-3   # the past matters


def test_chained_bow_probability_equals_direct(lm):
    words = ["telescope", "astronaut", "zebra crossing", "photosynthesis", "astronomy", "lake", "the"]
    bow = BagOfWords(words, lm.tokenizer, multi_token="chain")
    assert bow.n_multi >= 3 and bow.rows.shape[1] >= 2, bow.describe()
    ids = lm.encode("The lake was calm")
    with torch.no_grad():
        logits, cache, _ = lm_forward(lm.model, torch.tensor([ids]))
        probs = logits[:, -1].softmax(-1)
        p = float(bow.bag_probability(probs, cache, lm)[0])
        direct = 0.0
        for w in words:
            toks = lm.tokenizer.encode(" " + w, add_special_tokens=False)
            full = lm.model(input_ids=torch.tensor([ids + toks])).logits[0].softmax(-1)
            pw = 1.0
            for j, t in enumerate(toks):
                pw *= float(full[len(ids) - 1 + j, t])
            direct += pw
    assert p == pytest.approx(direct, rel=1e-5)
    assert bow.coverage.multi == bow.n_multi and bow.coverage.used == len(words)


def test_batched_equals_one_at_a_time(lm):
    bow = BagOfWords(WORDS + ["telescope", "universe"], lm.tokenizer, multi_token="chain")
    ids = lm.encode("The road")
    cfg = GenerateConfig(length=8, stepsize=0.3, sample=True, num_samples=3, seed=11, window_length=2)
    batched = generate(lm, ids, bow, cfg).tokens
    singles = [generate(lm, ids, bow, cfg.replace(num_samples=1, seed=11 + i)).tokens[0] for i in range(3)]
    assert batched.tolist() == [s.tolist() for s in singles]
    assert len({tuple(r) for r in batched.tolist()}) > 1     # different seeds, different samples


def test_llama_layout_runs_and_steers():
    lm = tiny_lm(seed=0, arch="llama", heads=4)        # grouped-query attention, rotary positions
    bow = BagOfWords(WORDS, lm.tokenizer, multi_token="drop")
    ids = lm.encode("The lake")
    cfg = GenerateConfig(length=8, stepsize=0.5)
    ours = generate(lm, ids, bow, cfg).tokens[0].tolist()
    assert ours == reference_generate(lm, ids, bow, cfg)
    assert generate(lm, ids, bow, cfg.replace(stepsize=0.0)).tokens[0].tolist() == _plain_greedy(lm, ids, 8)


def test_stronger_steps_raise_bag_probability(lm):
    bow = BagOfWords(WORDS, lm.tokenizer)
    ids = lm.encode("The lake")

    def bag_mass(stepsize):
        g = generate(lm, ids, bow, GenerateConfig(length=10, stepsize=stepsize, gm_scale=1.0))
        with torch.no_grad():
            logits, _, _ = lm_forward(lm.model, g.ids)
        probs = logits[:, len(ids) - 1:-1].softmax(-1)
        return float(probs[..., bow.single_ids].sum(-1).mean())

    assert bag_mass(1.0) > bag_mass(0.0)


# -- bad input -------------------------------------------------------------------------------------------------
def test_bad_bags(lm):
    with pytest.raises(ValueError, match="is empty"):
        BagOfWords([], lm.tokenizer)
    with pytest.raises(ValueError, match="is empty"):
        BagOfWords(["  ", "# comment"], lm.tokenizer)
    with pytest.raises(ValueError, match="must be strings"):
        BagOfWords(["space", 3], lm.tokenizer)
    with pytest.raises(ValueError, match="list of words"):
        BagOfWords("space", lm.tokenizer)
    with pytest.raises(ValueError, match="multi_token"):
        BagOfWords(["space"], lm.tokenizer, multi_token="maybe")


def test_unknown_words_reported_by_coverage(lm):
    class WordLevel:            # a word-level vocabulary with an unknown token
        unk_token_id = 0

        def encode(self, text, add_special_tokens=False):
            return [{"space": 5, "star": 6}.get(text.strip(), 0)]

    with pytest.warns(UserWarning, match="not in the vocabulary"):
        bow = BagOfWords(["space", "star", "zyzzyva"], WordLevel())
    assert bow.coverage.unknown == ["zyzzyva"] and bow.coverage.used == 2
    with pytest.raises(ValueError, match="none of its"):
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            BagOfWords(["zyzzyva"], WordLevel())


def test_prompt_too_long_and_empty(lm):
    with pytest.raises(ValueError, match="context window"):
        generate(lm, list(range(1, 120)), None, GenerateConfig(length=20))
    with pytest.raises(ValueError, match="prompt is empty"):
        generate(lm, [], None, GenerateConfig(length=2))


def test_discriminator_from_another_lm_refused(lm, tmp_path):
    other = tiny_lm(seed=0, dim=48, heads=2)
    disc = Discriminator(other.hidden_size, ["a", "b"], fingerprint=other.fingerprint, lm_name="other")
    with pytest.raises(ValueError, match="hidden size 48"):
        generate(lm, "The lake", disc, GenerateConfig(length=2))
    same_size = tiny_lm(seed=7)
    disc = Discriminator(same_size.hidden_size, ["a", "b"], fingerprint=same_size.fingerprint, lm_name="seed7")
    disc.save(tmp_path / "d.safetensors")
    loaded = Discriminator.load(tmp_path / "d.safetensors", class_label="b")
    assert loaded.class_label == 1 and loaded.fingerprint == same_size.fingerprint
    with pytest.raises(ValueError, match="trained on another LM"):
        generate(lm, "The lake", loaded, GenerateConfig(length=2))
    with pytest.raises(ValueError, match="unknown class"):
        loaded.with_label("c")


def test_non_finite_gradient_falls_back_to_unperturbed(lm):
    class Poison(AttributeModel):
        def loss(self, ctx):
            return ctx.probs[:, 0] * float("nan")

    ids = lm.encode("The lake")
    cfg = GenerateConfig(length=5, stepsize=0.5)
    with pytest.warns(RuntimeWarning, match="non-finite gradient"):
        g = generate(lm, ids, Poison(), cfg)
    assert g.fallbacks == 5      # every token (the start token + 2 prompt tokens: a non-empty history)
    assert g.tokens[0].tolist() == _plain_greedy(lm, ids, 5)


def test_not_a_causal_lm_directory(tmp_path):
    import json

    from essence.pplm.lm import load_lm

    (tmp_path / "enc").mkdir()
    (tmp_path / "enc" / "config.json").write_text(json.dumps({"model_type": "bert", "architectures": ["BertModel"]}))
    with pytest.raises(ValueError, match="not a causal LM"):
        load_lm(tmp_path / "enc")
    with pytest.raises(FileNotFoundError, match="LM directory not found"):
        load_lm(tmp_path / "missing")


@pytest.fixture(scope="module")
def lm64():
    """The tiny LM in float64: batches of different sizes may sum a matmul in another order, and in float64 that
    cannot flip a near-tie between two tokens (in float32, on some CPU, it could)."""
    lm = tiny_lm(seed=0)
    lm.model.double()
    return lm


@pytest.mark.parametrize("sample", [False, True])
def test_arms_in_one_batch_equal_separate_runs(lm64, sample):
    """generate_arms: several step sizes / KL weights / fusion weights in one batch give each arm the tokens (and,
    to float rounding, the per-token losses) of its own generate call."""
    from essence.pplm import generate_arms

    bow = BagOfWords(WORDS, lm64.tokenizer)
    ids = lm64.encode("The lake")
    base = GenerateConfig(length=8, stepsize=0.3, sample=sample, num_samples=2, seed=5, window_length=3)
    arms = {"BC": base, "large": base.replace(stepsize=1.5), "no_kl_fusion": base.replace(kl_scale=0.0, gm_scale=1.0),
            "one": base.replace(stepsize=0.6, num_samples=1, seed=9), "zero": base.replace(stepsize=0.0)}
    batched = generate_arms(lm64, ids, bow, arms)
    assert list(batched) == list(arms)
    for name, cfg in arms.items():
        alone = generate(lm64, ids, bow, cfg)
        assert batched[name].tokens.tolist() == alone.tokens.tolist(), name
        assert batched[name].texts == alone.texts
        # losses agree to float rounding: a 9-row matmul may sum in another order than a 2-row one
        assert batched[name].losses == [pytest.approx(row, rel=1e-4, abs=1e-4) for row in alone.losses], name
    assert batched["zero"].tokens.tolist() == generate(lm64, ids, bow, base, perturb=False).tokens.tolist()
    assert batched["large"].tokens.tolist() != batched["BC"].tokens.tolist()    # the arms really differ


def test_arms_must_share_the_other_knobs(lm):
    from essence.pplm import generate_arms

    bow = BagOfWords(WORDS, lm.tokenizer)
    base = GenerateConfig(length=4)
    with pytest.raises(ValueError, match=r"differs .* in \['length'\]"):
        generate_arms(lm, "The lake", bow, {"a": base, "b": base.replace(length=5)})
    with pytest.raises(ValueError, match="at least one arm"):
        generate_arms(lm, "The lake", bow, {})


def test_arms_with_their_own_prompts_equal_separate_runs(lm64):
    """Prompts of one token length share a batch: each (prompt, arm) gets its own run's tokens; prompts of other
    lengths are refused."""
    from essence.pplm import generate_arms

    bow = BagOfWords(WORDS, lm64.tokenizer)
    by_length = {}
    for text in ("The lake", "The road", "The city", "The book", "A cat", "The sea", "My friend", "The potato"):
        by_length.setdefault(len(lm64.encode(text)), []).append(text)
    same = max(by_length.values(), key=len)[:2]
    assert len(same) == 2
    cfg = GenerateConfig(length=6, stepsize=0.4, sample=True, num_samples=2, seed=3)
    arms = {(p, s): cfg.replace(stepsize=s) for p in same for s in (0.4, 1.2)}
    batched = generate_arms(lm64, {k: k[0] for k in arms}, bow, arms)
    for (p, s), c in arms.items():
        assert batched[(p, s)].tokens.tolist() == generate(lm64, p, bow, c).tokens.tolist(), (p, s)
        assert batched[(p, s)].prompt == lm64.encode(p)
    other = next(t for n, ts in by_length.items() if n != len(lm64.encode(same[0])) for t in ts)
    with pytest.raises(ValueError, match="same number of tokens"):
        generate_arms(lm64, {"a": same[0], "b": other}, bow, {"a": cfg, "b": cfg})
    with pytest.raises(ValueError, match="name every arm"):
        generate_arms(lm64, {"a": same[0]}, bow, {"a": cfg, "b": cfg})
