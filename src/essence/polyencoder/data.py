"""Data for the Poly-encoder: (context, response) pairs, tokenised batches, and evaluation candidate sets.

Sources (``data.dataset``): ``shakespeare`` (speaker turns of the plays, split by play), ``chatterbot``
(conversations, split at random by conversation pair), or a user file:

- ``.tsv``: ``context<TAB>response`` per line; turns of a multi-turn context are separated by `` || ``.
- ``.jsonl``: ``{"context": "..." or ["turn", ...], "response": "..."}`` per line.

Evaluation candidate sets of the user's own (:func:`read_candidate_sets`, ``evaluate --sets FILE``), every set the
same size:

- ``.tsv``: ``context<TAB>gold<TAB>negative 1<TAB>...`` per line (turns separated by `` || ``);
- ``.jsonl``: ``{"context": ..., "candidates": [...], "label": i}`` (the gold is ``candidates[i]``) or
  ``{"context": ..., "response": gold, "negatives": [...]}`` per line.

Token layout (BERT style, the ``[S]`` wrapping of the paper): ``[CLS] x [SEP]`` for one side,
``[CLS] ctxt [SEP] cand [SEP]`` with segments 0 / 1 for the cross-encoder. Context turns are joined with
``[SEP]`` and the context keeps its *most recent* tokens; candidates keep their first tokens.
"""

from __future__ import annotations

import json
import random
import warnings
from collections.abc import Sequence
from pathlib import Path

import torch

from essence.data.shakespeare import DialoguePair
from essence.polyencoder.config import DataConfig

__all__ = ["TextBatcher", "read_pairs", "load_pairs", "candidate_sets", "read_candidate_sets",
           "validate_candidates", "DialoguePair"]


class TextBatcher:
    """Tokenises contexts, candidates and (context, candidate) pairs into padded id / mask tensors."""

    def __init__(self, tokenizer, max_context_tokens: int, max_candidate_tokens: int):
        self.tokenizer = tokenizer
        self.max_context = max_context_tokens
        self.max_candidate = max_candidate_tokens
        t = tokenizer
        self.cls = [t.cls_token_id] if t.cls_token_id is not None else ([t.bos_token_id] if t.bos_token_id
                                                                          is not None else [])
        sep = t.sep_token_id if t.sep_token_id is not None else t.eos_token_id
        self.sep = [sep] if sep is not None else []
        self.pad = t.pad_token_id if t.pad_token_id is not None else 0

    def _ids(self, texts: Sequence[str]) -> list[list[int]]:
        if not texts:
            return []
        return self.tokenizer(list(texts), add_special_tokens=False, verbose=False)["input_ids"]

    def _context_ids(self, contexts: Sequence[str | Sequence[str]]) -> list[list[int]]:
        turns = [[c] if isinstance(c, str) else list(c) for c in contexts]
        flat = self._ids([t for ts in turns for t in ts])
        out, i = [], 0
        for ts in turns:
            ids: list[int] = []
            for j in range(len(ts)):
                ids += (self.sep if j else []) + flat[i + j]
            i += len(ts)
            out.append(ids)
        return out

    def _pad(self, seqs: list[list[int]], segments: list[list[int]] | None = None):
        n = max(len(s) for s in seqs)
        ids = torch.full((len(seqs), n), self.pad, dtype=torch.long)
        mask = torch.zeros((len(seqs), n), dtype=torch.long)
        seg = torch.zeros((len(seqs), n), dtype=torch.long)
        for i, s in enumerate(seqs):
            ids[i, : len(s)] = torch.tensor(s)
            mask[i, : len(s)] = 1
            if segments is not None:
                seg[i, : len(s)] = torch.tensor(segments[i])
        return (ids, mask, seg) if segments is not None else (ids, mask)

    def contexts(self, contexts: Sequence[str | Sequence[str]]):
        """(B, N) ids and mask; each context keeps its last ``max_context_tokens - 2`` tokens."""
        keep = self.max_context - len(self.cls) - len(self.sep)
        seqs = [self.cls + ids[-keep:] + self.sep if keep > 0 else self.cls + self.sep
                for ids in self._context_ids(contexts)]
        return self._pad(seqs)

    def candidates(self, texts: Sequence[str], *, warn: bool = False):
        """(C, N) ids and mask; a candidate keeps its first ``max_candidate_tokens - 2`` tokens."""
        keep = self.max_candidate - len(self.cls) - len(self.sep)
        raw = self._ids(texts)
        if warn:
            long = sum(len(r) > keep for r in raw)
            if long:
                warnings.warn(f"{long} of {len(raw)} candidates are longer than {self.max_candidate} tokens and "
                              f"were truncated (model.max_candidate_tokens)", stacklevel=2)
        return self._pad([self.cls + r[:keep] + self.sep for r in raw])

    def pairs(self, contexts: Sequence[str | Sequence[str]], candidates: Sequence[str]):
        """Cross-encoder input: (N, L) ids, mask and segments of ``[CLS] ctxt [SEP] cand [SEP]``."""
        if len(contexts) != len(candidates):
            raise ValueError(f"{len(contexts)} contexts but {len(candidates)} candidates")
        keep_c = self.max_context - len(self.cls) - len(self.sep)
        keep_r = self.max_candidate - len(self.sep)
        seqs, segs = [], []
        for c, r in zip(self._context_ids(contexts), self._ids(candidates)):
            a, b = self.cls + c[-keep_c:] + self.sep, r[:keep_r] + self.sep
            seqs.append(a + b)
            segs.append([0] * len(a) + [1] * len(b))
        return self._pad(seqs, segs)


def validate_candidates(texts: Sequence[str], *, what: str = "candidates") -> list[str]:
    """Refuse empty / blank / duplicated candidates with a clear ``ValueError``; return them stripped."""
    if len(texts) == 0:
        raise ValueError(f"no {what} given (the list is empty)")
    out = []
    for i, t in enumerate(texts):
        if not isinstance(t, str):
            raise ValueError(f"{what}[{i}] must be a string, got {type(t).__name__}")
        if not t.strip():
            raise ValueError(f"{what}[{i}] is empty")
        out.append(t.strip())
    seen: dict[str, int] = {}
    for i, t in enumerate(out):
        if t in seen:
            raise ValueError(f"{what}[{i}] duplicates {what}[{seen[t]}]: {t[:60]!r}; remove duplicates")
        seen[t] = i
    return out


def _read_text(path: Path) -> str:
    try:
        return path.read_text(encoding="utf-8-sig")   # a UTF-8 byte-order mark is dropped, not kept in line 1
    except UnicodeDecodeError as err:
        raise ValueError(f"{path} is not UTF-8 text (byte {err.start}: {err.reason}); re-encode it as UTF-8") from None


def read_pairs(path: str | Path) -> list[DialoguePair]:
    """(context, response) pairs from a user ``.tsv`` or ``.jsonl`` file (see the module docstring)."""
    path = Path(path)
    if not path.exists():
        raise FileNotFoundError(f"pairs file not found: {path}")
    pairs = []
    for n, line in enumerate(_read_text(path).splitlines(), 1):
        if not line.strip():
            continue
        if path.suffix == ".jsonl":
            try:
                obj = json.loads(line)
                ctx, resp = obj["context"], obj["response"]
            except (json.JSONDecodeError, KeyError, TypeError) as err:
                raise ValueError(f"{path}:{n}: expected a JSON object with 'context' and 'response' ({err})") from None
            turns = [ctx] if isinstance(ctx, str) else list(ctx)
        elif path.suffix == ".tsv":
            parts = line.split("\t")
            if len(parts) != 2:
                raise ValueError(f"{path}:{n}: expected 'context<TAB>response', got {len(parts)} fields")
            turns, resp = parts[0].split(" || "), parts[1]
        else:
            raise ValueError(f"{path}: pairs files must end in .tsv or .jsonl")
        turns = [str(t).strip() for t in turns if str(t).strip()]
        if not turns or not str(resp).strip():
            raise ValueError(f"{path}:{n}: empty context or response")
        pairs.append(DialoguePair(tuple(turns), str(resp).strip(), f"line{n}"))
    if not pairs:
        raise ValueError(f"{path} holds no pairs")
    return pairs


def read_candidate_sets(path: str | Path) -> tuple[list[DialoguePair], list[list[str]]]:
    """``(pairs, sets)`` from a user ``.tsv`` / ``.jsonl`` file of evaluation sets (module docstring), in the
    layout of :func:`candidate_sets`: the gold candidate first. Sets of different sizes, a gold missing from its
    candidates, empty or duplicated candidates are refused with the line number."""
    path = Path(path)
    if not path.exists():
        raise FileNotFoundError(f"candidate sets file not found: {path}")
    if path.suffix not in (".tsv", ".jsonl"):
        raise ValueError(f"{path}: candidate sets files must end in .tsv or .jsonl")
    pairs, sets = [], []
    for n, line in enumerate(_read_text(path).splitlines(), 1):
        if not line.strip():
            continue
        if path.suffix == ".tsv":
            parts = line.split("\t")
            if len(parts) < 3:
                raise ValueError(f"{path}:{n}: expected 'context<TAB>gold<TAB>negative...' (at least 3 fields), got "
                                 f"{len(parts)}")
            turns, cands = parts[0].split(" || "), parts[1:]
        else:
            try:
                obj = json.loads(line)
                ctx = obj["context"]
                if "candidates" in obj:
                    cands, label = list(obj["candidates"]), obj.get("label", 0)
                    if not isinstance(label, int) or not 0 <= label < len(cands):
                        raise ValueError(f"label {label!r} is not an index into its {len(cands)} candidates")
                    cands = [cands[label], *cands[:label], *cands[label + 1:]]
                else:
                    cands = [obj["response"], *obj["negatives"]]
            except (json.JSONDecodeError, KeyError, TypeError, ValueError) as err:
                raise ValueError(f"{path}:{n}: expected a JSON object with 'context' and either 'candidates' (+ "
                                 f"'label') or 'response' + 'negatives' ({err})") from None
            turns = [ctx] if isinstance(ctx, str) else list(ctx)
        turns = [str(t).strip() for t in turns if str(t).strip()]
        if not turns:
            raise ValueError(f"{path}:{n}: empty context")
        try:
            cands = validate_candidates(list(cands), what="candidates")
        except ValueError as err:
            raise ValueError(f"{path}:{n}: {err}") from None
        if sets and len(cands) != len(sets[0]):
            raise ValueError(f"{path}:{n}: {len(cands)} candidates, but the sets above have {len(sets[0])}; every "
                             f"set must have the same size (R@1/C compares like with like)")
        pairs.append(DialoguePair(tuple(turns), cands[0], f"line{n}"))
        sets.append(cands)
    if not sets:
        raise ValueError(f"{path} holds no candidate sets")
    return pairs, sets


def load_pairs(cfg: DataConfig) -> tuple[list[DialoguePair], list[DialoguePair], list[DialoguePair]]:
    """Train / valid / test pairs of ``cfg.dataset`` (Shakespeare: split by play)."""
    from essence.data.shakespeare import shakespeare_pairs, split_by_play

    path = cfg.path or None
    if cfg.dataset == "shakespeare":
        train, valid, test = split_by_play(shakespeare_pairs(cfg.history, path=path), seed=cfg.seed)
    else:
        if cfg.dataset == "chatterbot":
            from essence.data.chatterbot import chatterbot_pairs

            pairs = chatterbot_pairs(path, history=cfg.history)
        elif cfg.dataset.endswith((".tsv", ".jsonl")):
            pairs = read_pairs(cfg.dataset)
        else:
            raise ValueError(f"data.dataset must be shakespeare, chatterbot or a .tsv / .jsonl file, got "
                             f"{cfg.dataset!r}")
        pairs = list(pairs)
        random.Random(cfg.seed).shuffle(pairs)
        n_test = max(1, len(pairs) // 10)
        test, valid, train = pairs[:n_test], pairs[n_test:2 * n_test], pairs[2 * n_test:]
    if cfg.max_train_pairs:
        train = random.Random(cfg.seed + 1).sample(train, min(cfg.max_train_pairs, len(train)))
    if len(train) < 2 or not test:
        raise ValueError(f"{cfg.dataset}: too few pairs ({len(train)} train, {len(test)} test)")
    return train, valid, test


def candidate_sets(pairs: Sequence[DialoguePair], size: int, *, max_contexts: int, seed: int = 0,
                   pool_size: int = 0) -> tuple[list[DialoguePair], list[list[str]]]:
    """Evaluation sets: for each of up to ``max_contexts`` pairs, the gold response (index 0) plus ``size - 1``
    random other responses of the same split, all distinct.

    ``pool_size`` > 0 draws the negatives from a random pool of that many responses of the split (which holds
    every chosen gold response), so that fewer distinct candidates need encoding; 0 uses every response.
    """
    rng = random.Random(seed)
    chosen = rng.sample(list(pairs), min(max_contexts, len(pairs)))
    responses = sorted({p.response for p in pairs})
    if pool_size:
        golds = sorted({p.response for p in chosen})
        others = sorted(set(responses) - set(golds))
        responses = golds + rng.sample(others, max(0, min(len(others), pool_size - len(golds))))
    if len(responses) < size:
        raise ValueError(f"candidate sets of {size} need at least {size} distinct responses, got {len(responses)}")
    sets = []
    for p in chosen:
        negs: list[str] = []
        while len(negs) < size - 1:
            r = responses[rng.randrange(len(responses))]
            if r != p.response and r not in negs:
                negs.append(r)
        sets.append([p.response, *negs])
    return chosen, sets
