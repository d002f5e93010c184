"""Cached candidate vectors and fast ranking (the paper's inference setting, Table 5; ParlAI's
``--encode-candidate-vecs`` / ``--fixed-candidate-vecs`` made first-class and persistent).

    ranker = Ranker.from_run("runs/polyencoder/my-run")
    ranker.build_index(candidates)                 # encodes y_cand once
    ranker.save_index("cands.safetensors")        # tensors + metadata naming the model (fingerprint)
    ranker = Ranker.from_index("cands.safetensors")   # reloads the model recorded in the index
    ranker.rank("Who's there?", k=5)              # [(candidate, score), ...]
    ranker.rank_batch(["Who's there?", ("Hello", "How are you?")], k=5)

An index records a fingerprint of the candidate encoder's weights and settings; loading it with another model
raises :class:`IndexMismatchError`. A cross-encoder run can re-rank the top ``rerank_k`` candidates.
"""

from __future__ import annotations

import hashlib
import json
from collections.abc import Sequence
from pathlib import Path

import torch
from safetensors import SafetensorError, safe_open
from safetensors.torch import save_file

from essence.polyencoder.data import TextBatcher, validate_candidates
from essence.polyencoder.evaluate import encode_candidates

__all__ = ["Ranker", "IndexMismatchError", "model_fingerprint", "read_index", "chunked_topk"]

_FORMAT = "essence-polyencoder-index/2"      # texts as UTF-8 bytes + offsets tensors
_FORMAT_V1 = "essence-polyencoder-index/1"   # texts as JSON in the header (read only)


class IndexMismatchError(ValueError):
    """The index was built by a different model than the one asked to use it."""


def model_fingerprint(model, max_candidate_tokens: int, tokenizer=None) -> str:
    """sha256 over the candidate side: encoder weights, output scaling, reduction, the candidate token budget
    and (when given) the tokenizer's vocabulary: a change to any of them changes the cached vectors."""
    h = hashlib.sha256()
    h.update(json.dumps([model.architecture, model.reduction, max_candidate_tokens, model.dim,
                         float(model.cand_encoder.output_scaling)]).encode())
    if tokenizer is not None:
        vocab = tokenizer.get_vocab()
        h.update(json.dumps(sorted(vocab.items()), ensure_ascii=False).encode())
    for name, t in sorted(model.cand_encoder.state_dict().items()):
        h.update(name.encode())
        h.update(t.detach().float().cpu().contiguous().numpy().tobytes())
    return h.hexdigest()[:32]


def read_index(path: str | Path) -> tuple[torch.Tensor, dict]:
    """``(vectors (C, d), metadata)`` of an index file."""
    path = Path(path)
    if not path.exists():
        raise FileNotFoundError(f"index not found: {path} (build one with `essence polyencoder index`)")
    try:
        with safe_open(str(path), framework="pt") as f:
            meta = f.metadata() or {}
            vectors = f.get_tensor("candidates")
            keys = set(f.keys())
            blob = (f.get_tensor("texts_utf8"), f.get_tensor("texts_offsets")) if "texts_utf8" in keys else None
    except (SafetensorError, OSError, KeyError) as err:
        raise ValueError(f"{path} is not a polyencoder index ({err})") from None
    if meta.get("format") not in (_FORMAT, _FORMAT_V1):
        raise ValueError(f"{path} is not a polyencoder index (format {meta.get('format')!r})")
    missing = [k for k in ("info",) if k not in meta] + (["texts"] if blob is None and "texts" not in meta else [])
    if missing:
        raise ValueError(f"{path} is a damaged polyencoder index: its metadata lacks {missing}; rebuild it with "
                         f"`essence polyencoder index`")
    try:
        info = json.loads(meta["info"])
        info["texts"] = _decode_texts(*blob) if blob is not None else json.loads(meta["texts"])
        for k in ("fingerprint", "count"):
            info[k]  # noqa: B018 - presence check
    except (json.JSONDecodeError, KeyError, TypeError, UnicodeDecodeError, RuntimeError) as err:
        raise ValueError(f"{path} is a damaged polyencoder index (metadata: {err!r}); rebuild it with "
                         f"`essence polyencoder index`") from None
    if len(info["texts"]) != vectors.shape[0]:
        raise ValueError(f"{path} is a damaged polyencoder index: {len(info['texts'])} texts for "
                         f"{vectors.shape[0]} vectors")
    return vectors, info


def _encode_texts(texts: Sequence[str]) -> tuple[torch.Tensor, torch.Tensor]:
    """The candidate texts as one uint8 tensor of UTF-8 bytes and (C + 1) int64 offsets: stored beside the
    vectors, not in the safetensors JSON header (limited to 100 MB, ~1M short texts)."""
    data = [t.encode("utf-8") for t in texts]
    offsets = torch.zeros(len(data) + 1, dtype=torch.int64)
    offsets[1:] = torch.tensor([len(d) for d in data], dtype=torch.int64).cumsum(0)
    blob = torch.frombuffer(bytearray(b"".join(data)), dtype=torch.uint8) if offsets[-1] else \
        torch.zeros(0, dtype=torch.uint8)
    return blob, offsets


def _decode_texts(blob: torch.Tensor, offsets: torch.Tensor) -> list[str]:
    raw, off = blob.numpy().tobytes(), offsets.tolist()
    return [raw[a:b].decode("utf-8") for a, b in zip(off[:-1], off[1:])]


class Ranker:
    """Scores contexts against cached candidate vectors with a trained bi- or poly-encoder run."""

    def __init__(self, model, tokenizer, config, *, run: str | Path | None = None, device: str = "cpu",
                 reranker: Ranker | None = None):
        if model.architecture == "cross":
            raise ValueError("a cross-encoder cannot cache candidates; index with a bi- or poly-encoder run and "
                             "pass the cross-encoder as the re-ranker")
        self.model = model.to(device).eval()
        self.config = config
        self.device = torch.device(device)
        self.run = str(run) if run is not None else None
        self.batcher = TextBatcher(tokenizer, config.model.max_context_tokens, config.model.max_candidate_tokens)
        self.fingerprint = model_fingerprint(model, config.model.max_candidate_tokens, tokenizer)
        self.reranker = reranker
        self.texts: list[str] = []
        self.vectors: torch.Tensor | None = None

    # -- construction ----------------------------------------------------------------------------------------
    @classmethod
    def from_run(cls, run: str | Path, *, device: str = "cpu", rerank_run: str | Path | None = None) -> Ranker:
        from essence.polyencoder.train import load_run

        model, tok, cfg, _ = load_run(run, device)
        reranker = _CrossReranker.from_run(rerank_run, device) if rerank_run is not None else None
        return cls(model, tok, cfg, run=Path(run).resolve(), device=device, reranker=reranker)

    @classmethod
    def from_index(cls, path: str | Path, *, run: str | Path | None = None, device: str = "cpu",
                   rerank_run: str | Path | None = None) -> Ranker:
        """Load an index with its own model (the run recorded in it) or with ``run`` (checked to match)."""
        _, info = read_index(path)
        if run is None and not info.get("run"):
            raise ValueError(f"{path} records no model run (it was built from a model in memory); pass the run "
                             f"that built it: Ranker.from_index(path, run=...) / `rank --model RUN`")
        ranker = cls.from_run(run if run is not None else info["run"], device=device, rerank_run=rerank_run)
        ranker.load_index(path)
        return ranker

    # -- the index -------------------------------------------------------------------------------------------
    def build_index(self, candidates: Sequence[str], *, batch_size: int = 64, progress: bool = False) -> None:
        """Encode y_cand for every candidate (empty / duplicated ones are refused, long ones truncated)."""
        texts = validate_candidates(list(candidates))
        self.vectors = encode_candidates(self.model, self.batcher, texts, batch_size=batch_size,
                                         device=self.device, warn=True,
                                         progress_desc="index" if progress else None)
        self.texts = texts

    def save_index(self, path: str | Path) -> Path:
        if self.vectors is None:
            raise ValueError("no index to save: call build_index(candidates) first")
        path = Path(path)
        path.parent.mkdir(parents=True, exist_ok=True)
        info = {"fingerprint": self.fingerprint, "run": self.run, "architecture": self.model.architecture,
                "dim": self.model.dim, "count": len(self.texts),
                "max_candidate_tokens": self.config.model.max_candidate_tokens}
        blob, offsets = _encode_texts(self.texts)
        save_file({"candidates": self.vectors.contiguous(), "texts_utf8": blob, "texts_offsets": offsets},
                  str(path), metadata={"format": _FORMAT, "info": json.dumps(info)})
        return path

    def load_index(self, path: str | Path) -> None:
        vectors, info = read_index(path)
        if info["fingerprint"] != self.fingerprint:
            raise IndexMismatchError(
                f"{path} was built by another model (index fingerprint {info['fingerprint']}, run "
                f"{info.get('run')}; this model: {self.fingerprint}, run {self.run}); rebuild it with "
                f"`essence polyencoder index --model <run> --candidates <file> -o {path}`")
        self.vectors, self.texts = vectors, info["texts"]

    # -- ranking ---------------------------------------------------------------------------------------------
    def rank(self, context: str | Sequence[str], k: int = 5, *, rerank_k: int = 0) -> list[tuple[str, float]]:
        """Top ``k`` (candidate, score) for one context (a string, or its turns oldest first)."""
        return self.rank_batch([context], k, rerank_k=rerank_k)[0]

    @torch.inference_mode()
    def rank_batch(self, contexts: Sequence[str | Sequence[str]], k: int = 5, *, rerank_k: int = 0,
                   batch_size: int = 64) -> list[list[tuple[str, float]]]:
        """Top ``k`` per context. ``rerank_k`` > 0 re-scores the first-stage top ``rerank_k`` with the
        cross-encoder: with ``rerank_k >= k`` the k best of them are returned; with ``rerank_k < k`` the top
        ``rerank_k`` are re-ordered and the remaining ``k - rerank_k`` keep their first-stage order below them."""
        if self.vectors is None:
            raise ValueError("the ranker has no candidates: build_index(...) or load_index(...) first")
        if isinstance(contexts, str):
            raise ValueError("rank_batch takes a list of contexts; use rank(context) for one")
        if k < 1:
            raise ValueError(f"k must be >= 1, got {k}")
        ctxs = [_check_context(c, i) for i, c in enumerate(contexts)]
        if rerank_k and self.reranker is None:
            raise ValueError("rerank_k > 0 needs a cross-encoder re-ranker (Ranker.from_run(..., rerank_run=...))")
        top = min(max(k, rerank_k), len(self.texts))
        cache = self.vectors.to(self.device)
        out = []
        for s in range(0, len(ctxs), batch_size):
            part = ctxs[s:s + batch_size]
            ids, mask = self.batcher.contexts(part)
            rep, rep_mask = self.model.encode_context(ids.to(self.device), mask.to(self.device))
            vals, idx = chunked_topk(self.model, rep, rep_mask, cache, top)
            for ctx, v, i in zip(part, vals.tolist(), idx.tolist()):
                found = [(self.texts[j], s_) for j, s_ in zip(i, v)]
                if rerank_k:
                    head = self.reranker.rerank(ctx, [t for t, _ in found[:rerank_k]])
                    found = head + found[rerank_k:]
                out.append(found[:k])
        return out


def chunked_topk(model, rep: torch.Tensor, rep_mask: torch.Tensor, cache: torch.Tensor, k: int, *,
                 max_elements: int = 1 << 24) -> tuple[torch.Tensor, torch.Tensor]:
    """Top-k scores and candidate indices of every context against ``cache`` (C, d), scoring C in chunks so
    that the poly-encoder's (B, chunk, m) attention logits stay under ``max_elements`` floats (64 MB) whatever C
    is; a running top-k is merged chunk by chunk. Same result as ``model.score(...).topk(k)``. -> (B, k) x 2."""
    B, m = rep.shape[0], rep.shape[1]
    chunk = max(1024, max_elements // max(1, B * m))
    best_v = best_i = None
    for s in range(0, cache.shape[0], chunk):
        scores = model.score(rep, rep_mask, cache[s:s + chunk])                  # (B, chunk) fp32
        v, i = scores.topk(min(k, scores.shape[1]), dim=1)
        i = i + s
        if best_v is not None:
            v, j = torch.cat([best_v, v], 1).topk(min(k, best_v.shape[1] + v.shape[1]), dim=1)
            i = torch.cat([best_i, i], 1).gather(1, j)
        best_v, best_i = v, i
    return best_v.cpu(), best_i.cpu()


def _check_context(context, i: int):
    if isinstance(context, str):
        if not context.strip():
            raise ValueError(f"context {i} is empty")
        return context.strip()
    turns = [t.strip() for t in context if isinstance(t, str) and t.strip()]
    if not turns:
        raise ValueError(f"context {i} is empty")
    return tuple(turns)


class _CrossReranker:
    def __init__(self, model, tokenizer, config, device):
        if model.architecture != "cross":
            raise ValueError(f"the re-ranker must be a cross-encoder run, got a {model.architecture}-encoder")
        self.model, self.device = model.to(device).eval(), torch.device(device)
        self.batcher = TextBatcher(tokenizer, config.model.max_context_tokens, config.model.max_candidate_tokens)

    @classmethod
    def from_run(cls, run, device):
        from essence.polyencoder.train import load_run

        model, tok, cfg, _ = load_run(run, device)
        return cls(model, tok, cfg, device)

    @torch.inference_mode()
    def rerank(self, context, candidates: list[str]) -> list[tuple[str, float]]:
        ids, mask, seg = self.batcher.pairs([context] * len(candidates), candidates)
        scores = self.model(ids.to(self.device), mask.to(self.device), seg.to(self.device)).float().cpu().tolist()
        return sorted(zip(candidates, scores), key=lambda x: -x[1])
