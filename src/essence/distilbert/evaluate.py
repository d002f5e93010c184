"""MLM accuracy / perplexity on held-out text, parameter counts and inference time (card §3, Table 3).

:func:`mlm_scores` masks the held-out sequences once with a fixed generator (uniform 15% of each batch's real
tokens, all replaced by ``[MASK]``), so every model compared is scored on the same targets; it returns per-target
correctness and negative log-likelihood (items for paired statistics). :func:`time_models` times models on the
same inputs, interleaved, at batch 1 (one sentence of 30-60 tokens, STS-B-like) and at batch 32.
"""

from __future__ import annotations

import math
import time

import numpy as np
import torch
import torch.nn.functional as F

from essence.core.loop import Precision
from essence.distilbert.data import Corpus, mask_tokens, pad_batch, token_probs
from essence.distilbert.model import MaskedPositionsMLM

__all__ = ["mlm_scores", "time_models", "base_shapes", "evaluate_dir"]


@torch.no_grad()
def mlm_scores(model, corpus: Corpus, *, batch_size: int = 64, seed: int = 1234, precision: str = "auto",
               device="cpu") -> dict[str, np.ndarray | float]:
    """{correct, nll (per masked target), sentence (its held-out sequence), accuracy, perplexity}."""
    if not corpus.heldout:
        raise ValueError("no held-out sequences to evaluate on (data.heldout_fraction is 0?)")
    dev = torch.device(device)
    model = model.to(dev).eval()
    prec = Precision(precision, dev)
    probs = token_probs(corpus.counts, 0.0, corpus.special_ids)
    gen = torch.Generator().manual_seed(seed)
    try:   # the vocabulary projection at the masked rows only (the same logits, a fraction of the work)
        head = MaskedPositionsMLM(model)
    except TypeError:
        head = None
    correct, nll, sent = [], [], []
    for b in range(0, len(corpus.heldout), batch_size):
        ids, att = pad_batch(corpus.heldout[b:b + batch_size], corpus.pad_id)
        masked, labels = mask_tokens(ids, att, probs, mask_id=corpus.mask_id, vocab_size=len(corpus.vocab),
                                     pred_probs=(1.0, 0.0, 0.0), generator=gen)
        masked, att, labels = masked.to(dev), att.to(dev), labels.to(dev)
        sel = labels != -100
        with prec.autocast():
            if head is not None:
                lg, y = head(masked, att, labels)
            else:
                lg, y = model(input_ids=masked, attention_mask=att).logits[sel], labels[sel]
        lg = lg.float()
        correct.append((lg.argmax(-1) == y).cpu().numpy().astype(np.float64))
        nll.append(F.cross_entropy(lg, y, reduction="none").cpu().numpy().astype(np.float64))
        sent.append(torch.nonzero(sel)[:, 0].cpu().numpy() + b)
    c, n = np.concatenate(correct), np.concatenate(nll)
    return {"correct": c, "nll": n, "sentence": np.concatenate(sent), "accuracy": float(c.mean()),
            "perplexity": float(math.exp(n.mean()))}


def base_shapes():
    """Random-weight BERT-base (12 x 768) and DistilBERT (6 x 768) encoders, the paper's Table 3 shapes."""
    from transformers import BertConfig, BertModel, DistilBertConfig, DistilBertModel

    torch.manual_seed(0)
    return BertModel(BertConfig(), add_pooling_layer=True).eval(), DistilBertModel(DistilBertConfig()).eval()


@torch.no_grad()
def time_models(models: dict[str, torch.nn.Module], vocab_size: int, *, sentences: int = 50, batches: int = 3,
                seed: int = 0, precision: str = "auto", threads: int | None = None) -> dict[str, dict[str, np.ndarray]]:
    """{name: {batch1: seconds per sentence, batch32: seconds per batch}}, models timed in turn on the same
    inputs (lengths 30-60 tokens), after one warm-up call each."""
    if threads:
        torch.set_num_threads(threads)
    prec = Precision(precision, "cpu")
    rng = np.random.default_rng(seed)
    lens = rng.integers(30, 61, size=sentences)
    inputs = [torch.randint(5, vocab_size, (1, int(n)), generator=torch.Generator().manual_seed(i))
              for i, n in enumerate(lens)]
    big = [torch.randint(5, vocab_size, (32, 48), generator=torch.Generator().manual_seed(10_000 + i))
           for i in range(batches)]
    out = {name: {"batch1": [], "batch32": []} for name in models}
    for m in models.values():
        m.eval()
        with prec.autocast():
            m(input_ids=inputs[0])
    for kind, data in (("batch1", inputs), ("batch32", big)):
        for x in data:
            for name, m in models.items():
                t0 = time.perf_counter()
                with prec.autocast():
                    m(input_ids=x, attention_mask=torch.ones_like(x))
                out[name][kind].append(time.perf_counter() - t0)
    return {n: {k: np.asarray(v) for k, v in d.items()} for n, d in out.items()}


def evaluate_dir(student_dir, teacher_dir=None, *, corpus: str = "shakespeare", max_len: int = 64,
                 heldout_limit: int = 0, batch_size: int = 64, device="cpu", precision="auto") -> dict:
    """MLM accuracy / perplexity and parameter counts of a saved student (and its teacher)."""
    from essence.distilbert.config import DataConfig, DistilConfig
    from essence.distilbert.model import count_parameters, load_student, load_teacher
    from essence.distilbert.train import corpus_for

    student, vocab = load_student(student_dir)
    cfg = DistilConfig(data=DataConfig(corpus=corpus, max_len=max_len, heldout_limit=heldout_limit, limit=0))
    data = corpus_for(cfg, vocab)
    res = {"student": student_dir and str(student_dir), "heldout_sequences": len(data.heldout)}
    s = mlm_scores(student, data, batch_size=batch_size, device=device, precision=precision)
    res.update(student_accuracy=s["accuracy"], student_perplexity=s["perplexity"],
               student_parameters=count_parameters(student), masked_targets=int(s["correct"].size))
    if teacher_dir:
        teacher, _ = load_teacher(teacher_dir)
        t = mlm_scores(teacher, data, batch_size=batch_size, device=device, precision=precision)
        res.update(teacher_accuracy=t["accuracy"], teacher_perplexity=t["perplexity"],
                   teacher_parameters=count_parameters(teacher), retention=s["accuracy"] / max(t["accuracy"], 1e-12))
    return res
