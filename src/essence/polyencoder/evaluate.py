"""Evaluation: R@1/C and MRR on candidate sets, and the per-context scoring latency of Table 5.

For bi- and poly-encoders the distinct candidate texts are encoded once (cached, as in the paper) and each
context is scored against its own C candidate vectors; the cross-encoder runs one forward pass per
(context, candidate) pair.
"""

from __future__ import annotations

import contextlib
import statistics
import time
from collections.abc import Sequence

import torch

from essence.metrics.retrieval import RetrievalMetrics
from essence.polyencoder.data import DialoguePair, TextBatcher

__all__ = ["encode_candidates", "evaluate_sets", "gold_ranks", "score_latency", "cross_latency", "median_time"]


def _autocast(device: torch.device, bf16: bool):
    return torch.autocast(device.type, dtype=torch.bfloat16) if bf16 else contextlib.nullcontext()


@torch.inference_mode()
def encode_candidates(model, batcher: TextBatcher, texts: Sequence[str], *, batch_size: int = 64,
                      device: torch.device | str = "cpu", bf16: bool = False, warn: bool = False,
                      progress_desc: str | None = None) -> torch.Tensor:
    """y_cand for every text: (C, d) float32 on the CPU. Texts are sorted by length to cut padding."""
    from essence.core.progress import ProgressBar

    device = torch.device(device)
    order = sorted(range(len(texts)), key=lambda i: len(texts[i]))
    out = torch.empty(len(texts), model.dim)
    with ProgressBar(total=len(texts), desc=progress_desc or "encode", unit="cand",
                     disable=True if progress_desc is None else None) as bar:
        for s in range(0, len(order), batch_size):
            idx = order[s:s + batch_size]
            ids, mask = batcher.candidates([texts[i] for i in idx], warn=warn)
            with _autocast(device, bf16):
                vec = model.encode_candidates(ids.to(device), mask.to(device))
            out[idx] = vec.float().cpu()
            bar.update(len(idx))
    return out


def evaluate_sets(model, batcher: TextBatcher, pairs: Sequence[DialoguePair], sets: Sequence[Sequence[str]], *,
                  device: torch.device | str = "cpu", bf16: bool = False, batch_size: int = 32,
                  ks: tuple[int, ...] = (1,), normalize: bool = False) -> dict[str, float]:
    """R@k/C and MRR of ``pairs[i]`` against ``sets[i]`` (gold candidate at index 0 of each set)."""
    metric = RetrievalMetrics(ks=ks)
    ranks = gold_ranks(model, batcher, pairs, sets, device=device, bf16=bf16, batch_size=batch_size,
                       normalize=normalize)
    metric.num_candidates = len(sets[0])
    metric.ranks.append(ranks)
    return metric.compute()


@torch.inference_mode()
def gold_ranks(model, batcher: TextBatcher, pairs: Sequence[DialoguePair], sets: Sequence[Sequence[str]], *,
               device: torch.device | str = "cpu", bf16: bool = False, batch_size: int = 32,
               normalize: bool | tuple[bool, ...] = False) -> torch.Tensor | tuple[torch.Tensor, ...]:
    """The gold candidate's rank (1-based, ties share) for each context: (len(pairs),) float64.

    The encoders run under bf16 autocast when ``bf16``; the scores are always computed in fp32 (the models'
    ``score`` leaves autocast). ``normalize`` (bi-encoder only) ranks by cosine instead of the dot product: the
    zero-shot use of a sentence-transformers model whose last module is ``Normalize``. A tuple of flags, e.g.
    ``(True, False)``, encodes every text once and returns one rank tensor per flag, in order.
    """
    if len(pairs) != len(sets) or not pairs:
        raise ValueError(f"expected one candidate set per context, got {len(pairs)} contexts and {len(sets)} sets")
    if len({len(cs) for cs in sets}) != 1:
        raise ValueError("every candidate set must have the same size")
    flags = tuple(normalize) if isinstance(normalize, (tuple, list)) else (bool(normalize),)
    if not flags:
        raise ValueError("normalize: give at least one flag")
    if any(flags) and model.architecture != "bi":
        raise ValueError("normalize (cosine scoring) applies to the bi-encoder only")
    device = torch.device(device)
    metrics = [RetrievalMetrics(ks=(1,)) for _ in flags]
    was_training = model.training
    model.eval()
    try:
        if model.architecture == "cross":
            C = len(sets[0])
            per = max(1, batch_size * 4 // C)                            # contexts per forward
            for s in range(0, len(pairs), per):
                ctxs = [p.context for p in pairs[s:s + per] for _ in range(C)]
                cands = [c for cs in sets[s:s + per] for c in cs]
                ids, mask, seg = batcher.pairs(ctxs, cands)
                with _autocast(device, bf16):
                    scores = model(ids.to(device), mask.to(device), seg.to(device))
                scores = scores.float().view(-1, C).cpu()
                for metric in metrics:
                    metric.update(scores, torch.zeros(scores.shape[0], dtype=torch.long))
        else:
            texts = sorted({c for cs in sets for c in cs})
            where = {t: i for i, t in enumerate(texts)}
            vecs = encode_candidates(model, batcher, texts, batch_size=batch_size * 2, device=device, bf16=bf16)
            unit = torch.nn.functional.normalize(vecs, dim=-1) if any(flags) else None
            for s in range(0, len(pairs), batch_size):
                chunk, chunk_sets = pairs[s:s + batch_size], sets[s:s + batch_size]
                ids, mask = batcher.contexts([p.context for p in chunk])
                rows = torch.tensor([[where[c] for c in cs] for cs in chunk_sets])
                with _autocast(device, bf16):
                    rep, rep_mask = model.encode_context(ids.to(device), mask.to(device))
                rep = rep.float()
                for flag, metric in zip(flags, metrics):
                    r = torch.nn.functional.normalize(rep, dim=-1) if flag else rep
                    cand = (unit if flag else vecs)[rows].to(device)          # (B, C, d)
                    scores = model.score(r, rep_mask, cand)                   # fp32
                    metric.update(scores.float().cpu(), torch.zeros(len(chunk), dtype=torch.long))
        out = tuple(torch.cat(metric.ranks) for metric in metrics)
        return out if isinstance(normalize, (tuple, list)) else out[0]
    finally:
        model.train(was_training)


def median_time(fn, repeats: int, warmup: int = 1) -> float:
    """Median wall time of `repeats` calls of `fn` after `warmup` untimed calls."""
    for _ in range(warmup):
        fn()
    times = []
    for _ in range(repeats):
        t = time.perf_counter()
        fn()
        times.append(time.perf_counter() - t)
    return statistics.median(times)


@torch.inference_mode()
def score_latency(models: dict, contexts: Sequence[Sequence[str]], n_candidates: Sequence[int], *,
                  repeats: int = 5, bf16: bool = False, seed: int = 0) -> dict[str, dict]:
    """Seconds to score one context against C cached candidate vectors (context encoding included), for each
    model and each C: the minimum over ``repeats`` contexts (the ``timeit`` estimator: on a shared machine the
    other jobs only ever add time), the median under the key ``("median", C)`` and every timing under
    ``("times", C)`` (for confidence intervals).

    ``models`` maps a name to ``(model, batcher)``. The models are timed interleaved (one context each in turn),
    so that load changes on a shared machine hit all of them alike. The cache holds random vectors of the right
    shape: the cost of scoring does not depend on their values.
    """
    gen = torch.Generator().manual_seed(seed)
    batches = {name: [b.contexts([c]) for c in contexts] for name, (_, b) in models.items()}
    for model, _ in models.values():
        model.eval()

    def one(model, name: str, cache: torch.Tensor, i: int) -> float:
        ids, mask = batches[name][i % len(contexts)]
        t = time.perf_counter()
        with _autocast(torch.device("cpu"), bf16):
            rep, rep_mask = model.encode_context(ids, mask)
            model.score(rep.float(), rep_mask, cache).float().topk(min(5, cache.shape[0]))
        return time.perf_counter() - t

    out: dict[str, dict[int, float]] = {name: {} for name in models}
    for C in n_candidates:
        cache = torch.randn(C, next(iter(models.values()))[0].dim, generator=gen)
        times: dict[str, list[float]] = {name: [] for name in models}
        for name, (model, _) in models.items():   # warm-up
            one(model, name, cache, 0)
        for i in range(repeats):
            for name, (model, _) in models.items():
                times[name].append(one(model, name, cache, i))
        for name in models:
            out[name][C] = min(times[name])
            out[name][("median", C)] = statistics.median(times[name])
            out[name][("times", C)] = list(times[name])
    return out


@torch.inference_mode()
def cross_latency(model, batcher: TextBatcher, context: Sequence[str], candidates: Sequence[str], *,
                  batch_size: int = 64, bf16: bool = False) -> float:
    """Seconds for the cross-encoder to score one context against ``candidates`` (one pass per pair)."""
    model.eval()

    def run():
        for s in range(0, len(candidates), batch_size):
            part = candidates[s:s + batch_size]
            ids, mask, seg = batcher.pairs([context] * len(part), part)
            with _autocast(torch.device("cpu"), bf16):
                model(ids, mask, seg)

    return median_time(run, repeats=1, warmup=0)
