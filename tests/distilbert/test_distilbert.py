"""DistilBERT: losses against plain re-computations, masking statistics, layer map, export, resume, bad input,
and the verdict logic."""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch
import torch.nn.functional as F

from essence.core.runs import Run
from essence.distilbert.config import PRESETS
from essence.distilbert.data import SPECIALS, Corpus, bucketed_batches, mask_tokens, read_text_lines, token_probs
from essence.distilbert.loss import cosine_loss, mlm_loss, soft_target_loss, triple_loss
from essence.distilbert.model import layer_map, load_teacher, save_model, student_from_teacher, tiny_bert
from essence.distilbert.reproduce import Measured, judge

V = 60


def _corpus(n: int = 96, seed: int = 0) -> Corpus:
    g = np.random.default_rng(seed)
    vocab = list(SPECIALS) + [f"w{i}" for i in range(V - len(SPECIALS))]
    zipf = 1.0 / np.arange(1, V - len(SPECIALS) + 1)
    zipf /= zipf.sum()
    seqs = [[2, *(g.choice(V - 5, size=int(g.integers(8, 20)), p=zipf) + 5).tolist(), 3] for _ in range(n)]
    counts = torch.zeros(V, dtype=torch.float64)
    for s in seqs[:80]:
        counts.index_add_(0, torch.tensor(s), torch.ones(len(s), dtype=torch.float64))
    return Corpus(seqs[:80], seqs[80:], vocab, counts, 0, 4, (0, 1, 2, 3, 4))


def _teacher(layers=4, dropout: float | None = None):
    t = tiny_bert(V, layers=layers, dim=32, heads=2, ffn=64, max_len=64, seed=0).eval()
    if dropout is not None:   # the student copies these; 0 makes runs with other RNG streams comparable
        t.config.hidden_dropout_prob = t.config.attention_probs_dropout_prob = dropout
    return t


# -- losses ---------------------------------------------------------------------------------------------------
def test_kl_and_soft_cross_entropy_give_identical_gradients():
    torch.manual_seed(0)
    s = torch.randn(7, V, requires_grad=True)
    t = torch.randn(7, V)
    sel = torch.ones(7, dtype=torch.bool)
    T = 2.0
    soft_target_loss(s, t, sel, T).backward()
    g_kl = s.grad.clone()
    s.grad = None
    ce = -(F.softmax(t / T, -1) * F.log_softmax(s / T, -1)).sum(-1).mean() * T ** 2
    ce.backward()
    assert torch.allclose(g_kl, s.grad, atol=1e-6)
    # the values differ by the teacher's entropy (constant in the student)
    ent = -(F.softmax(t / T, -1) * F.log_softmax(t / T, -1)).sum(-1).mean() * T ** 2
    assert float(soft_target_loss(s, t, sel, T).detach()) == pytest.approx(float(ce - ent), abs=1e-5)


@pytest.mark.parametrize("kind", ["bert", "distilbert"])
def test_masked_positions_head_gives_the_dense_mlm_loss_and_gradients(kind):
    """The MLM-only path projects only the masked rows; loss and every gradient equal the dense head's."""
    from essence.distilbert.model import MaskedPositionsMLM
    from essence.distilbert.train import Distiller

    c = _corpus()
    model = _teacher(2)
    if kind == "distilbert":
        model = student_from_teacher(model)
    model.eval()   # no dropout: the two forwards must see the same network
    ids, att = torch.tensor([s[:8] for s in c.train[:6]]), torch.ones(6, 8, dtype=torch.long)
    ids, labels = mask_tokens(ids, att, token_probs(c.counts, 0.7, c.special_ids), mask_id=c.mask_id,
                              vocab_size=V, generator=torch.Generator().manual_seed(0))
    assert 0 < int((labels != -100).sum()) < labels.numel()
    dense, parts = Distiller(model, None).losses(ids, att, labels)
    dense.backward()
    g_dense = {n: p.grad.clone() for n, p in model.named_parameters() if p.grad is not None}
    model.zero_grad(set_to_none=True)
    sparse, sparse_parts = Distiller(MaskedPositionsMLM(model), None).losses(ids, att, labels)
    sparse.backward()
    g_sparse = {n: p.grad for n, p in model.named_parameters() if p.grad is not None}
    assert set(sparse_parts) == set(parts) == {"mlm"}
    assert float(sparse) == pytest.approx(float(dense), rel=1e-5)
    assert g_sparse.keys() == g_dense.keys()
    for n, g in g_dense.items():   # float32 sums over a different number of rows: relative rounding only
        assert torch.allclose(g_sparse[n], g, rtol=1e-4, atol=1e-6 * float(g.abs().max())), n
    with pytest.raises(TypeError, match="BertForMaskedLM"):
        MaskedPositionsMLM(torch.nn.Linear(2, 2))


def test_losses_match_plain_recomputation():
    torch.manual_seed(1)
    s, t = torch.randn(2, 5, V), torch.randn(2, 5, V)
    hs, ht = torch.randn(2, 5, 8), torch.randn(2, 5, 8)
    att = torch.tensor([[1, 1, 1, 1, 0], [1, 1, 1, 0, 0]])
    labels = torch.full((2, 5), -100)
    labels[0, 1], labels[1, 2] = 7, 9
    T = 2.0
    kl, n = 0.0, 0
    for b in range(2):
        for i in range(5):
            if att[b, i]:
                p = F.softmax(t[b, i] / T, -1)
                kl += float((p * (p.log() - F.log_softmax(s[b, i] / T, -1))).sum())
                n += 1
    assert float(soft_target_loss(s, t, att.bool(), T)) == pytest.approx(kl / n * T * T, rel=1e-5)
    mlm = -(F.log_softmax(s[0, 1], -1)[7] + F.log_softmax(s[1, 2], -1)[9]) / 2
    assert float(mlm_loss(s, labels)) == pytest.approx(float(mlm), rel=1e-5)
    cos = np.mean([1 - float(F.cosine_similarity(hs[b, i], ht[b, i], dim=0))
                   for b in range(2) for i in range(5) if att[b, i]])
    assert float(cosine_loss(hs, ht, att)) == pytest.approx(cos, rel=1e-5)
    total, parts = triple_loss(s, hs, labels, att, t_logits=t, t_hidden=ht, temperature=T)
    assert float(total) == pytest.approx(float(5 * parts["ce"] + 2 * parts["mlm"] + parts["cos"]), rel=1e-6)
    restricted, _ = triple_loss(s, hs, labels, att, t_logits=t, t_hidden=ht, restrict_ce_to_mask=True)
    assert float(restricted) != pytest.approx(float(total), rel=1e-4)


def test_copied_student_at_equal_depth_has_zero_soft_target_and_cosine_loss():
    teacher = _teacher(4)
    student = student_from_teacher(teacher, layers="0,1,2,3", n_layers=4).eval()
    ids = torch.randint(5, V, (3, 12))
    att = torch.ones_like(ids)
    att[1, 8:] = 0
    t = teacher(input_ids=ids, attention_mask=att, output_hidden_states=True)
    s = student(input_ids=ids, attention_mask=att, output_hidden_states=True)
    assert float(soft_target_loss(s.logits, t.logits, att.bool())) < 1e-8
    assert float(cosine_loss(s.hidden_states[-1], t.hidden_states[-1], att)) < 1e-6
    # without folding the token-type vector the student differs (the official script drops it)
    unfolded = student_from_teacher(teacher, layers="0,1,2,3", n_layers=4, fold_token_type=False).eval()
    u = unfolded(input_ids=ids, attention_mask=att)
    assert float(soft_target_loss(u.logits, t.logits, att.bool())) > 1e-6


# -- student structure ----------------------------------------------------------------------------------------
def test_layer_map():
    assert layer_map(12) == [0, 2, 4, 7, 9, 11]              # extract_distilbert.py
    assert layer_map(12, how="every_other") == [0, 2, 4, 6, 8, 10]
    assert layer_map(6) == [0, 2, 5] and layer_map(4) == [0, 3] and layer_map(5) == [0, 4]
    assert layer_map(6, how="1,3,5") == [1, 3, 5]
    with pytest.raises(ValueError, match="increasing teacher layers"):
        layer_map(6, how="5,1,2")
    with pytest.raises(ValueError, match="at least|>= 2 layers"):
        layer_map(1)


def test_student_copies_every_other_layer_without_token_types_or_pooler():
    teacher = _teacher(4)
    student = student_from_teacher(teacher)
    assert student.config.n_layers == 2 and student.config.teacher_layers == [0, 3]
    names = [n for n, _ in student.named_parameters()]
    assert not any("token_type" in n or "pooler" in n for n in names)
    for si, ti in enumerate([0, 3]):
        assert torch.equal(student.distilbert.transformer.layer[si].ffn.lin1.weight,
                           teacher.bert.encoder.layer[ti].intermediate.dense.weight)
        assert torch.equal(student.distilbert.transformer.layer[si].attention.q_lin.weight,
                           teacher.bert.encoder.layer[ti].attention.self.query.weight)
    assert student.vocab_projector.weight.data_ptr() == student.distilbert.embeddings.word_embeddings.weight.data_ptr()


def test_saved_student_loads_in_plain_transformers_with_same_logits(tmp_path):
    from transformers import AutoModelForMaskedLM, AutoTokenizer

    corpus = _corpus()
    student = student_from_teacher(_teacher(4)).eval()
    save_model(student, tmp_path / "student", corpus.vocab)
    loaded = AutoModelForMaskedLM.from_pretrained(str(tmp_path / "student")).eval()
    assert type(loaded).__name__ == "DistilBertForMaskedLM"
    ids = torch.randint(5, V, (2, 9))
    assert torch.allclose(loaded(input_ids=ids).logits, student(input_ids=ids).logits, atol=1e-6)
    tok = AutoTokenizer.from_pretrained(str(tmp_path / "student"))
    assert tok.convert_tokens_to_ids("w3") == corpus.vocab.index("w3")


# -- masking --------------------------------------------------------------------------------------------------
def test_masking_statistics():
    counts = torch.zeros(40, dtype=torch.float64)
    counts[5:40] = torch.tensor([1000.0] * 5 + [10.0] * 30)      # ids 5-9 frequent, 10-39 rare
    probs = token_probs(counts, 0.7, (0, 1, 2, 3, 4))
    g = torch.Generator().manual_seed(0)
    chosen = torch.zeros(40)
    seen = torch.zeros(40)
    n_real = n_tgt = 0
    kinds = torch.zeros(3)
    for _ in range(300):
        body = torch.cat([torch.randint(5, 10, (8, 12), generator=g), torch.randint(10, 40, (8, 4), generator=g)], 1)
        ids = torch.cat([torch.full((8, 1), 2), body, torch.full((8, 1), 3), torch.zeros(8, 3, dtype=torch.long)], 1)
        att = (ids != 0).long()
        out, labels = mask_tokens(ids, att, probs, mask_id=4, vocab_size=40, generator=g)
        tgt = labels != -100
        assert not tgt[att == 0].any() and not tgt[:, 0].any() and not tgt[:, 17].any()   # pad / CLS / SEP
        n_real += int(att.sum())
        n_tgt += int(tgt.sum())
        assert int(tgt.sum()) == math.ceil(0.15 * int(att.sum()))
        assert torch.equal(labels[tgt], ids[tgt])
        assert torch.equal(out[~tgt], ids[~tgt])
        kinds[0] += int((out[tgt] == 4).sum())
        kinds[1] += int((out[tgt] == ids[tgt]).sum())
        chosen.index_add_(0, ids[tgt], torch.ones(int(tgt.sum())))
        seen.index_add_(0, ids[att.bool()], torch.ones(int(att.sum())))
    frac = kinds / n_tgt
    assert abs(frac[0] - 0.8) < 0.02
    assert abs(frac[1] - (0.1 + 0.1 / 40)) < 0.02            # kept, plus random draws of the same token
    rate = chosen / seen.clamp(min=1)
    ratio = float(rate[10:40].mean() / rate[5:10].mean())
    # without replacement the ratio is a little below (10/1000)^-0.7 = 25.1; it is far from 1 (uniform)
    assert 12 < ratio < 30


def test_uniform_masking_is_fifteen_percent_of_real_tokens():
    probs = token_probs(torch.ones(30, dtype=torch.float64), 0.0, (0, 1, 2, 3, 4))
    ids = torch.randint(5, 30, (4, 20))
    att = torch.ones_like(ids)
    _, labels = mask_tokens(ids, att, probs, mask_id=4, vocab_size=30, generator=torch.Generator().manual_seed(0))
    assert int((labels != -100).sum()) == math.ceil(0.15 * 80)


def test_bucketed_batches_group_lengths_and_are_deterministic():
    lengths = [int(x) for x in np.random.default_rng(0).integers(5, 60, 200)]
    a = bucketed_batches(lengths, 10, seed=1, epoch=0)
    assert a == bucketed_batches(lengths, 10, seed=1, epoch=0) != bucketed_batches(lengths, 10, seed=1, epoch=1)
    spreads = [max(lengths[i] for i in b) - min(lengths[i] for i in b) for b in a]
    assert max(spreads) <= 7            # a batch spans at most two bins of 4 (random batches: ~50)


# -- training -------------------------------------------------------------------------------------------------
def _tiny_cfg(**train):
    cfg = PRESETS.build("tiny")
    return cfg.replace(train=cfg.train.replace(**train), optim=cfg.optim.replace(batch_size=8))


def test_distill_resume_continues_identically(tmp_path):
    from essence.distilbert.train import distill

    corpus, teacher = _corpus(), _teacher(4)
    cfg = _tiny_cfg(steps=4, ckpt_every=2)
    full = distill(cfg, Run(tmp_path / "a"), teacher=teacher, corpus=corpus, progress=False)
    cfg2 = cfg.replace(train=cfg.train.replace(steps=4))
    part = distill(cfg2.replace(train=cfg2.train.replace(ckpt_every=2)), Run(tmp_path / "b"), teacher=teacher,
                   corpus=corpus, progress=False)
    del part
    resumed = distill(cfg, Run(tmp_path / "c"), teacher=teacher, corpus=corpus, progress=False,
                      resume=tmp_path / "b" / "checkpoints" / "distill" / "step-000002.safetensors")
    for (n, p), (_, q) in zip(full.model.state_dict().items(), resumed.model.state_dict().items()):
        assert torch.equal(p, q), n
    assert (tmp_path / "a" / "student" / "config.json").exists()


def test_gradient_accumulation_matches_one_batch(tmp_path):
    from essence.distilbert.train import distill

    corpus, teacher = _corpus(), _teacher(4)
    cfg = _tiny_cfg(steps=2)
    cfg = cfg.replace(data=cfg.data.replace(bucket=0), loss=cfg.loss.replace(alpha_mlm=0.0))  # no masking RNG split
    one = distill(cfg, None, teacher=teacher, corpus=corpus, progress=False).model
    two = distill(cfg.replace(optim=cfg.optim.replace(accumulation=2)), None, teacher=teacher, corpus=corpus,
                  progress=False).model
    # the soft-target loss averages over tokens per micro-batch, so the steps agree closely but not bit-for-bit
    diff = max(float((p - q).abs().max()) for p, q in zip(one.parameters(), two.parameters()))
    assert diff < 5e-3


def test_teacher_cache_gives_the_same_students_and_is_read_by_later_arms():
    from essence.distilbert.train import TeacherCache, distill

    corpus, teacher = _corpus(), _teacher(4)
    cfg = _tiny_cfg(steps=3)
    cache = TeacherCache(teacher)
    for alphas in [(5.0, 2.0, 1.0), (0.0, 2.0, 1.0), (5.0, 0.0, 0.0)]:    # full, no L_ce (no head), L_ce alone
        arm = cfg.replace(loss=cfg.loss.replace(alpha_ce=alphas[0], alpha_mlm=alphas[1], alpha_cos=alphas[2]))
        plain = distill(arm, None, teacher=teacher, corpus=corpus, progress=False).model
        misses = cache.misses
        cached = distill(arm, None, teacher=teacher, corpus=corpus, progress=False, teacher_cache=cache).model
        for (n, p), (_, q) in zip(plain.state_dict().items(), cached.state_dict().items()):
            assert torch.equal(p, q), n
    assert cache.misses == misses == 3 and cache.hits == 6       # 3 batches, computed once for three arms
    other = distill(cfg.replace(train=cfg.train.replace(seed=7)), None, teacher=teacher, corpus=corpus,
                    progress=False, teacher_cache=cache)         # another seed: other batches, other entries
    assert cache.misses == 6 and other.step == 3
    full = TeacherCache(teacher, max_bytes=0)                     # full: computes, stores nothing
    distill(cfg, None, teacher=teacher, corpus=corpus, progress=False, teacher_cache=full)
    assert full.bytes == 0 and full.misses == 3 and full.hits == 0
    with pytest.raises(ValueError, match="another teacher"):
        distill(cfg, None, teacher=_teacher(2), corpus=corpus, progress=False, teacher_cache=cache)
    with pytest.raises(ValueError, match="max_bytes"):
        TeacherCache(teacher, max_bytes=-1)


# -- bad input ------------------------------------------------------------------------------------------------
def test_bad_teachers_and_corpora(tmp_path):
    from transformers import BertConfig, BertModel

    with pytest.raises(FileNotFoundError, match="config.json"):
        load_teacher(tmp_path)
    cfg = BertConfig(vocab_size=V, hidden_size=16, num_hidden_layers=2, num_attention_heads=2, intermediate_size=32)
    BertModel(cfg).save_pretrained(str(tmp_path / "enc"))
    (tmp_path / "enc" / "vocab.txt").write_text("\n".join(_corpus().vocab))
    with pytest.raises(ValueError, match="no MLM head"):
        load_teacher(tmp_path / "enc")
    save_model(student_from_teacher(_teacher(4)), tmp_path / "distil", _corpus().vocab)
    with pytest.raises(ValueError, match="not BERT-like"):
        load_teacher(tmp_path / "distil")
    (tmp_path / "empty.txt").write_text("\n \n")
    with pytest.raises(ValueError, match="empty"):
        read_text_lines(tmp_path / "empty.txt")
    (tmp_path / "latin1.txt").write_bytes("caf\xe9\n".encode("latin-1"))
    with pytest.raises(ValueError, match="not UTF-8"):
        read_text_lines(tmp_path / "latin1.txt")
    with pytest.raises(ValueError, match="vocabularies differ"):
        from essence.distilbert.train import Distiller
        Distiller(student_from_teacher(tiny_bert(V + 1, layers=2, dim=32, heads=2, ffn=64)), _teacher(2))


# -- verdicts -------------------------------------------------------------------------------------------------
def _measured(student_acc: float, mlm_acc: float, rand_acc: float, speed: float, n: int = 2000) -> Measured:
    g = np.random.default_rng(0)
    teacher = (g.random(n) < 0.5).astype(float)

    def arm(p):
        return np.stack([(g.random(n) < p).astype(float) for _ in range(3)])

    times = g.uniform(0.05, 0.1, 100)
    return Measured(teacher_correct=teacher, arms={"full": arm(student_acc), "mlm_only": arm(mlm_acc),
                                                   "random_init": arm(rand_acc)},
                    base_times={"bert-base": times * speed, "distilbert": times},
                    base_params={"bert-base": 109_482_240, "distilbert": 66_362_880})


def test_verdicts_flip_with_the_numbers():
    good = {c[:3]: c for c in [x[0] for x in judge(_measured(0.49, 0.35, 0.3, 2.0))]}
    assert set(good) == {"(a)", "(b)", "(c)", "(d)"}
    from essence.core.stats import combine

    verdicts = {claim[:3]: combine(ds) for claim, ds, _ in judge(_measured(0.49, 0.35, 0.3, 2.0))}
    assert set(verdicts.values()) == {"reproduced"}
    verdicts = {claim[:3]: combine(ds) for claim, ds, _ in judge(_measured(0.30, 0.45, 0.45, 1.1))}
    assert set(verdicts.values()) == {"not reproduced"}


def _ddp_worker(rank: int) -> dict:
    from essence.distilbert.train import distill

    cfg = _tiny_cfg(steps=2, log_every=1)
    res = distill(cfg, None, teacher=_teacher(4, dropout=0.0), corpus=_corpus(), device="cpu", progress=False)
    return {"state": {k: v.clone() for k, v in res.model.state_dict().items()}, "history": res.history}


@pytest.mark.slow
def test_ddp_two_processes_equal_one_process_with_accumulation():
    from essence.core.distributed import launch_local
    from essence.distilbert.train import distill

    r0, r1 = launch_local(_ddp_worker, world_size=2)
    cfg = _tiny_cfg(steps=2, log_every=1)
    one = distill(cfg.replace(optim=cfg.optim.replace(accumulation=2)), None, teacher=_teacher(4, dropout=0.0),
                  corpus=_corpus(), progress=False)
    # same batches and masks: the logged (process-averaged) losses agree up to rounding
    for a, b in zip(r0["history"], one.history):
        assert a["loss"] == pytest.approx(b["loss"], rel=1e-5)
    init = student_from_teacher(_teacher(4), seed=cfg.train.seed).state_dict()
    moved = diff = 0.0
    for k, v in one.model.state_dict().items():
        assert torch.equal(r0["state"][k], r1["state"][k]), k          # the processes stay in sync
        moved += float((v - init[k]).abs().sum())
        diff += float((r0["state"][k] - v).abs().sum())
    # Adam turns rounding noise of near-zero gradients into small steps; a different batch split would move the
    # weights by as much as training does
    assert diff < 0.02 * moved


def test_compact_vocabulary_retokenises_the_corpus_identically(tmp_path, monkeypatch):
    from essence.distilbert.model import write_tokenizer
    from essence.distilbert.train import corpus_for

    monkeypatch.setenv("ESSENCE_CACHE", str(tmp_path / "cache"))
    lines = ["To be, or not to be, that is the question:", "Whether 'tis nobler in the mind to suffer",
             "The slings and arrows of outrageous fortune,", "Or to take arms against a sea of troubles",
             "And by opposing end them. To die: to sleep;", "a mattress.", "Unquestionably extraordinary!"] * 3
    (tmp_path / "c.txt").write_text("\n".join(lines), encoding="utf-8")
    cfg = PRESETS.build("tiny", [f"data.corpus={tmp_path / 'c.txt'}", "data.min_len=10", "data.limit=5"])
    a = corpus_for(cfg)
    write_tokenizer(tmp_path / "tok", a.vocab)
    b = corpus_for(cfg, a.vocab, tmp_path / "tok")
    assert a.train == b.train and a.heldout == b.heldout and len(a.train) == 5
    assert all(len(s) >= 10 for s in a.train)


def test_mlm_scores_use_identical_targets_and_time_models_runs():
    from essence.distilbert.evaluate import mlm_scores, time_models

    corpus, teacher = _corpus(), _teacher(4)
    twin = student_from_teacher(teacher, layers="0,1,2,3", n_layers=4)
    a = mlm_scores(teacher, corpus, batch_size=8, precision="fp32")
    b = mlm_scores(twin, corpus, batch_size=8, precision="fp32")
    assert np.array_equal(a["sentence"], b["sentence"]) and np.array_equal(a["correct"], b["correct"])
    assert np.allclose(a["nll"], b["nll"], atol=1e-4)
    assert a["correct"].size == sum(math.ceil(0.15 * sum(len(s) for s in corpus.heldout[i:i + 8]))
                                    for i in range(0, len(corpus.heldout), 8))
    t = time_models({"t": teacher, "s": student_from_teacher(teacher)}, V, sentences=2, batches=1, precision="fp32")
    assert t["t"]["batch1"].shape == (2,) and t["s"]["batch32"].shape == (1,)


def test_mlm_scores_at_the_masked_rows_equal_the_full_logits():
    """mlm_scores projects only the masked rows of a BERT / DistilBERT MLM; any other module gets the full logits
    and the same selection. Both give the same targets, and the same numbers up to float rounding."""
    from essence.distilbert.evaluate import mlm_scores

    class Plain(torch.nn.Module):   # not a *ForMaskedLM: the full-logits path
        def __init__(self, m):
            super().__init__()
            self.m = m

        def forward(self, **kw):
            return self.m(**kw)

    corpus = _corpus()
    for model in (_teacher(2), student_from_teacher(_teacher(2))):
        a = mlm_scores(model, corpus, batch_size=8, precision="fp32")
        b = mlm_scores(Plain(model), corpus, batch_size=8, precision="fp32")
        assert np.array_equal(a["sentence"], b["sentence"]) and a["nll"].shape == b["nll"].shape
        assert np.allclose(a["nll"], b["nll"], rtol=1e-5, atol=1e-5)
        assert (a["correct"] != b["correct"]).mean() <= 0.01   # argmax ties broken by rounding at most


def test_finetune_tsv_and_unknown_labels(tmp_path):
    from essence.distilbert.finetune import finetune, read_tsv

    corpus = _corpus()
    g = np.random.default_rng(0)
    rows = []
    for _ in range(48):
        label = "pos" if g.random() < 0.5 else "neg"
        words = [f"w{int(x)}" for x in g.integers(10, 50, 6)] + (["w1"] if label == "pos" else ["w2"])
        rows.append(" ".join(words) + "\t" + label)
    (tmp_path / "train.tsv").write_text("\n".join(rows[:32]))
    (tmp_path / "test.tsv").write_text("\n".join(rows[32:]))
    teacher = _teacher(2)
    save_model(student_from_teacher(teacher), tmp_path / "student", corpus.vocab)
    res = finetune(tmp_path / "student", tmp_path / "train.tsv", tmp_path / "test.tsv", seeds=(0, 1), epochs=1,
                   batch=8, precision="fp32")
    assert res["labels"] == ["neg", "pos"] and res["correct"].shape == (2, 16)
    (tmp_path / "bad.tsv").write_text("w3 w4\tneutral\n")
    with pytest.raises(ValueError, match="unknown label 'neutral'"):
        read_tsv(tmp_path / "bad.tsv", ["neg", "pos"])
    with pytest.raises(ValueError, match="epochs >= 1"):
        finetune(tmp_path / "student", tmp_path / "train.tsv", tmp_path / "test.tsv", epochs=0)
    with pytest.raises(ValueError, match="at least one seed"):
        finetune(tmp_path / "student", tmp_path / "train.tsv", tmp_path / "test.tsv", seeds=())


def test_named_corpora_and_their_combination(tmp_path, monkeypatch):
    from essence.data import corpora
    from essence.distilbert.data import is_named_corpus
    from essence.distilbert.train import corpus_for

    monkeypatch.setenv("ESSENCE_CACHE", str(tmp_path / "cache"))
    plays = {f"play{i}": [f"Speech {j} of play {i}, and more words to make it long enough." for j in range(4)]
             for i in range(10)}
    monkeypatch.setitem(corpora.CORPORA, "plays", ("whole plays", lambda: plays))
    monkeypatch.setitem(corpora.CORPORA, "notes", ("random texts", lambda: [f"Note {i}: a line of plain words."
                                                                            for i in range(10)]))
    assert is_named_corpus("plays") and is_named_corpus("plays+notes") and not is_named_corpus(str(tmp_path))
    one = corpus_for(PRESETS.build("tiny", ["data.corpus=plays", "data.min_len=5"]))
    both = corpus_for(PRESETS.build("tiny", ["data.corpus=plays+notes", "data.min_len=5"]))
    assert (len(one.train), len(one.heldout)) == (36, 4)                 # one whole play of four speeches held out
    assert (len(both.train), len(both.heldout)) == (36 + 9, 4 + 1)
    with pytest.raises(ValueError, match="unknown corpus 'plais'.*did you mean 'plays'"):
        corpus_for(PRESETS.build("tiny", ["data.corpus=plais+notes"]))
    with pytest.raises(ValueError, match="unknown corpus 'austin'.*did you mean 'austen'"):
        corpus_for(PRESETS.build("tiny", ["data.corpus=austin"]))
