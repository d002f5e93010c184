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

Large indexes: by default every context is scored against every cached vector (exact, chunked over C so that
memory stays bounded). :meth:`Ranker.use_first_stage` adds a first stage, a maximum-inner-product search over the
cached vectors (``exact``: chunked matmuls in torch; ``faiss``: any ``faiss.index_factory`` string, e.g. ``Flat``,
``HNSW32`` or ``IVF1024,Flat``, when ``faiss-cpu`` is installed), whose union of candidates the poly-encoder then
re-scores exactly::

    ranker.use_first_stage("faiss", k=256, spec="HNSW32", query="codes")

With ``query="codes"`` the first stage searches with each of the m context vectors y^i_ctxt. For the paper's
dot-product attention (``basic``/``sqrt``) the poly score is a convex combination of the y^i_ctxt . y_cand, so it
never exceeds their maximum: a candidate missed by every search scores at most the largest of the m k-th inner
products, and when the k-th re-scored poly score beats that bound the top k is provably the exact one
(``ranker.last_search["certified"]`` flags such contexts; only with an exact first stage). ``query="mean"``
searches once with the mean of the m vectors: m times cheaper, no certificate.
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

__all__ = ["Ranker", "IndexMismatchError", "model_fingerprint", "read_index", "chunked_topk", "FirstStage",
           "mips_topk", "two_stage_topk"]

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
        self.first_stage: FirstStage | None = None
        self._first_stage_args: dict | None = None
        self.last_search: dict = {}

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
        self._rebuild_first_stage()

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
        self._rebuild_first_stage()

    # -- two-stage retrieval ---------------------------------------------------------------------------------
    def use_first_stage(self, backend: str | None = "exact", *, k: int = 256, query: str = "codes",
                        spec: str = "Flat", params: str = "") -> Ranker:
        """Rank in two stages: a maximum-inner-product search for ``k`` candidates per query vector (at least
        the ``k`` asked of ``rank``), then the exact poly / bi score on their union. ``backend``: ``exact`` or
        ``faiss`` with the ``faiss.index_factory`` string ``spec`` and optional ``faiss.ParameterSpace``
        ``params`` such as ``"nprobe=32"`` or ``"efSearch=128"``. ``query``: ``codes`` (one search per context
        vector y^i_ctxt; certified exact where the bound holds, see the module docstring) or ``mean`` (one
        search with their mean). ``backend=None`` goes back to scoring every candidate. Returns ``self``."""
        if backend is None:
            self.first_stage, self._first_stage_args = None, None
            return self
        if backend not in FirstStage.BACKENDS:
            raise ValueError(f"first-stage backend must be one of {FirstStage.BACKENDS}, got {backend!r}")
        if query not in ("codes", "mean"):
            raise ValueError(f"first-stage query must be codes or mean, got {query!r}")
        if k < 1:
            raise ValueError(f"first-stage k must be >= 1, got {k}")
        self._first_stage_args = {"backend": backend, "k": k, "query": query, "spec": spec, "params": params}
        self._rebuild_first_stage()
        return self

    def _rebuild_first_stage(self) -> None:
        a = self._first_stage_args
        if a is None or self.vectors is None:
            self.first_stage = None
            return
        self.first_stage = FirstStage(self.vectors, a["backend"], spec=a["spec"], params=a["params"])

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
        certified: list[bool] = []
        for s in range(0, len(ctxs), batch_size):
            part = ctxs[s:s + batch_size]
            ids, mask = self.batcher.contexts(part)
            rep, rep_mask = self.model.encode_context(ids.to(self.device), mask.to(self.device))
            if self.first_stage is None:
                vals, idx = chunked_topk(self.model, rep, rep_mask, cache, top)
            else:
                a = self._first_stage_args
                vals, idx, cert = two_stage_topk(self.model, rep, rep_mask, cache, top, self.first_stage,
                                                 k=a["k"], query=a["query"])
                certified += cert
            for ctx, v, i in zip(part, vals.tolist(), idx.tolist()):
                found = [(self.texts[j], s_) for j, s_ in zip(i, v) if j >= 0]   # -1: first stage found fewer
                if rerank_k:
                    head = self.reranker.rerank(ctx, [t for t, _ in found[:rerank_k]])
                    found = head + found[rerank_k:]
                out.append(found[:k])
        self.last_search = {"contexts": len(ctxs), "first_stage": dict(self._first_stage_args or {}),
                            "certified": certified if self.first_stage is not None else [True] * len(ctxs)}
        return out


def _running_topk(score_chunk, C: int, k: int, chunk: int) -> tuple[torch.Tensor, torch.Tensor]:
    """Top-k over C candidates scored ``chunk`` at a time by ``score_chunk(start, stop) -> (B, stop - start)``,
    keeping a running top-k merged chunk by chunk (memory bounded by the chunk, not by C)."""
    best_v = best_i = None
    for s in range(0, C, chunk):
        scores = score_chunk(s, min(C, s + chunk))
        v, i = scores.topk(min(k, scores.shape[1]), dim=1)
        i = i + s
        if best_v is not None:
            v, j = torch.cat([best_v, v], 1).topk(min(k, best_v.shape[1] + v.shape[1]), dim=1)
            i = torch.cat([best_i, i], 1).gather(1, j)
        best_v, best_i = v, i
    return best_v, best_i


def chunked_topk(model, rep: torch.Tensor, rep_mask: torch.Tensor, cache: torch.Tensor, k: int, *,
                 max_elements: int = 1 << 24) -> tuple[torch.Tensor, torch.Tensor]:
    """Top-k scores and candidate indices of every context against ``cache`` (C, d), scoring C in chunks so
    that the poly-encoder's (B, chunk, m) attention logits stay under ``max_elements`` floats (64 MB) whatever C
    is; a running top-k is merged chunk by chunk. Same result as ``model.score(...).topk(k)``. -> (B, k) x 2."""
    B, m = rep.shape[0], rep.shape[1]
    chunk = max(1024, max_elements // max(1, B * m))
    v, i = _running_topk(lambda a, b: model.score(rep, rep_mask, cache[a:b]), cache.shape[0], k, chunk)
    return v.cpu(), i.cpu()


def mips_topk(queries: torch.Tensor, cache: torch.Tensor, k: int, *, max_elements: int = 1 << 24
              ) -> tuple[torch.Tensor, torch.Tensor]:
    """Exact maximum-inner-product top-k of (Q, d) ``queries`` against (C, d) ``cache``, chunked over C so that
    the (Q, chunk) score block stays under ``max_elements`` floats. -> (Q, k) values and indices."""
    chunk = max(1024, max_elements // max(1, queries.shape[0]))
    q = queries.float()
    return _running_topk(lambda a, b: q @ cache[a:b].float().T, cache.shape[0], min(k, cache.shape[0]), chunk)


class FirstStage:
    """Maximum-inner-product search over cached candidate vectors, the first stage of two-stage retrieval.

    ``exact``: chunked matmuls in torch (no dependency; exact). ``faiss``: a ``faiss`` index from
    ``faiss.index_factory(d, spec, METRIC_INNER_PRODUCT)`` (``Flat`` is exact; ``HNSW32``, ``IVF1024,Flat``,
    ``IVF1024,PQ32`` ... trade recall for speed and memory), trained on the vectors when the index type needs it,
    with ``params`` passed to ``faiss.ParameterSpace().set_index_parameters`` (e.g. ``"nprobe=32"``).
    """

    BACKENDS = ("exact", "faiss")

    def __init__(self, vectors: torch.Tensor, backend: str = "exact", *, spec: str = "Flat", params: str = ""):
        if backend not in self.BACKENDS:
            raise ValueError(f"first-stage backend must be one of {self.BACKENDS}, got {backend!r}")
        self.backend, self.spec = backend, spec
        self.vectors = vectors.float().cpu().contiguous()
        self.index = None
        self.exact = backend == "exact"
        if backend == "faiss":
            try:
                import faiss
            except ImportError:
                raise ImportError("the faiss first stage needs faiss-cpu: pip install faiss-cpu (or use the "
                                  "'exact' backend)") from None
            from essence.core.runtime import available_cores

            faiss.omp_set_num_threads(available_cores())
            x = self.vectors.numpy()
            try:
                index = faiss.index_factory(x.shape[1], spec, faiss.METRIC_INNER_PRODUCT)
            except RuntimeError as err:
                raise ValueError(f"faiss cannot build an index from {spec!r}: {str(err).splitlines()[-1]}") \
                    from None
            if not index.is_trained:
                index.train(x)
            index.add(x)
            if params:
                faiss.ParameterSpace().set_index_parameters(index, params)
            self.index = index
            self.exact = spec.strip().lower() == "flat"

    def search(self, queries: torch.Tensor, k: int) -> tuple[torch.Tensor, torch.Tensor]:
        """(Q, d) -> (Q, k) inner products and candidate indices (-1 where faiss found fewer than k)."""
        k = min(k, self.vectors.shape[0])
        if self.index is None:
            return mips_topk(queries, self.vectors, k)
        d, i = self.index.search(queries.float().contiguous().numpy(), k)
        return torch.from_numpy(d), torch.from_numpy(i).long()


def two_stage_topk(model, rep: torch.Tensor, rep_mask: torch.Tensor, cache: torch.Tensor, top: int,
                   first_stage: FirstStage, *, k: int = 256, query: str = "codes"
                   ) -> tuple[torch.Tensor, torch.Tensor, list[bool]]:
    """Two-stage top-``top``: ``first_stage`` returns ``max(k, top)`` candidates per query vector (the m context
    vectors with ``query="codes"``, their masked mean with ``"mean"``), ``model.score`` re-scores their union
    exactly. -> (B, top) values and indices (-inf / -1 padding where the union is smaller than ``top``) and, per
    context, whether the result is certified exact (see the module docstring)."""
    B, m, d = rep.shape
    maskf = rep_mask.float()
    if query == "mean" or m == 1:
        queries = ((rep.float() * maskf[..., None]).sum(1) / maskf.sum(1, keepdim=True).clamp_min(1))[:, None]
        qmask = torch.ones(B, 1, dtype=torch.bool)
    else:
        queries, qmask = rep.float(), rep_mask.bool().cpu()
    q = queries.shape[1]
    k1 = min(max(k, top), cache.shape[0])
    vals1, idx1 = first_stage.search(queries.reshape(B * q, d).cpu(), k1)
    vals1, idx1 = vals1.view(B, q, k1), idx1.view(B, q, k1)
    # the bound: a candidate missed by every query has each y^i . y_cand at most that query's k-th value, so its
    # poly score (a convex combination of them, for dot-product attention) at most the largest of those values
    attention = getattr(model, "attention", None)
    bounded = first_stage.exact and (m == 1 or (query == "codes" and attention is not None
                                                and attention.kind != "multihead"))
    out_v = torch.full((B, top), float("-inf"))
    out_i = torch.full((B, top), -1, dtype=torch.long)
    certified = [False] * B
    for b in range(B):
        ids = idx1[b][qmask[b]].flatten()
        ids = torch.unique(ids[ids >= 0])
        if ids.numel() == 0:
            continue
        scores = model.score(rep[b:b + 1], rep_mask[b:b + 1], cache[ids.to(cache.device)])[0].cpu()
        n = min(top, ids.numel())
        v, j = scores.topk(n)
        out_v[b, :n], out_i[b, :n] = v, ids[j]
        if bounded:
            # m = 1: the search ranks by the score itself. Otherwise compare with the bound, allowing for the
            # rounding difference between the two matmuls (a tie within float error is a tie).
            bound = float(vals1[b][qmask[b]][:, -1].max())
            certified[b] = k1 >= cache.shape[0] or (n == top and (
                m == 1 or float(v[-1]) >= bound - 1e-5 * max(1.0, abs(bound))))
    return out_v, out_i, certified


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
