"""Corpus, tokenisation, batch-level smoothed MLM masking and length-bucketed batches (official recipe).

- :func:`load_corpus`: Shakespeare speeches, Austen's novels, WordNet glosses, fortunes (whole plays / novels /
  files held out; :mod:`essence.data.corpora`), several joined by ``+``, or any UTF-8 text file / folder of ``.txt``
  files (one sequence a line), tokenised with a BERT WordPiece tokenizer; ``[CLS] ... [SEP]``, lines longer than
  ``max_len`` chunked with the specials re-added, sequences shorter than ``min_len`` dropped (card §2.4).
- :func:`compact_vocab`: the teacher's vocabulary restricted to the pieces the corpus uses (tokenisation of the
  corpus is unchanged by construction: WordPiece is greedy longest-match and every piece it chose is kept).
- :func:`mask_tokens`: ``prepare_batch_mlm`` of the official ``distiller.py``: ceil(15% of the batch's real
  tokens) targets drawn without replacement with probability ~ count^-0.7 (specials never), then 80/10/10.
- :func:`bucketed_batches`: the epoch's batches, sequences grouped by length (bins of 4 tokens), deterministic
  from (seed, epoch) so that a resumed run sees the same batches.
"""

from __future__ import annotations

import math
import os
import random
from dataclasses import dataclass
from pathlib import Path

import torch

from essence.core.runtime import step_generator  # noqa: F401  (re-exported)
from essence.data.cache import cache_dir, cache_key

__all__ = ["Corpus", "load_corpus", "is_named_corpus", "read_text_lines", "compact_vocab", "token_probs", "mask_tokens",
           "bucketed_batches", "pad_batch", "step_generator", "SPECIALS"]

SPECIALS = ("[PAD]", "[UNK]", "[CLS]", "[SEP]", "[MASK]")


@dataclass
class Corpus:
    train: list[list[int]]                   # token ids (compact vocabulary), [CLS] ... [SEP]
    heldout: list[list[int]]
    vocab: list[str]                         # compact vocabulary (ids index it)
    counts: torch.Tensor                     # training-token counts per id
    pad_id: int
    mask_id: int
    special_ids: tuple[int, ...]


def read_text_lines(path: str | Path) -> list[str]:
    """Non-empty lines of a UTF-8 text file, or of every ``.txt`` file under a folder (sorted)."""
    p = Path(path)
    if not p.exists():
        raise FileNotFoundError(f"corpus {p}: no such file or folder")
    files = sorted(p.rglob("*.txt")) if p.is_dir() else [p]
    if not files:
        raise ValueError(f"corpus {p}: the folder holds no .txt files")
    lines: list[str] = []
    for f in files:
        try:
            text = f.read_text(encoding="utf-8")
        except UnicodeDecodeError as err:
            raise ValueError(f"corpus {f}: not UTF-8 text ({err.reason} at byte {err.start})") from None
        lines.extend(ln.strip() for ln in text.splitlines() if ln.strip())
    if not lines:
        raise ValueError(f"corpus {p}: empty (no non-blank lines)")
    return lines


def is_named_corpus(corpus: str) -> bool:
    """``shakespeare``, ``austen``, ``wordnet``, ``fortunes`` or several joined by ``+`` (not a path)."""
    from essence.data.corpora import CORPORA

    return all(part.strip() in CORPORA for part in corpus.split("+"))


def _encode(lines: list[str], tokenizer, max_len: int, min_len: int) -> list[list[int]]:
    """Full-vocabulary ids with [CLS]/[SEP], chunked to max_len, short ones dropped."""
    cls_id, sep_id = tokenizer.cls_token_id, tokenizer.sep_token_id
    body = max_len - 2
    out = []
    for ids in tokenizer(lines, add_special_tokens=False, truncation=False, verbose=False)["input_ids"]:
        for i in range(0, max(len(ids), 1), body):
            out.append([cls_id, *ids[i:i + body], sep_id])   # short ones are dropped after the vocabulary
    return out


def compact_vocab(seqs: list[list[int]], full_vocab: list[str], special_ids: dict[str, int]
                  ) -> tuple[list[str], dict[int, int]]:
    """(compact vocabulary, full id -> compact id): the specials first, then the used pieces in full-id order."""
    used = sorted({t for s in seqs for t in s} - set(special_ids.values()))
    vocab = list(SPECIALS) + [full_vocab[t] for t in used]
    remap = {special_ids[name]: i for i, name in enumerate(SPECIALS)}
    remap.update({t: len(SPECIALS) + i for i, t in enumerate(used)})
    return vocab, remap


def load_corpus(corpus: str, tokenizer, *, max_len: int, min_len: int, heldout_fraction: float = 0.1,
                limit: int = 0, heldout_limit: int = 0, vocab: list[str] | None = None) -> Corpus:
    """Tokenise ``corpus`` with ``tokenizer`` (a BERT WordPiece tokenizer): a named corpus of
    :data:`essence.data.corpora.CORPORA` (``shakespeare``, ``austen``, ``wordnet``, ``fortunes``, or several joined
    by ``+``; held out by whole plays / novels / fortunes files, glosses at random) or a UTF-8 text file / folder
    of ``.txt`` files (one sequence a line, lines held out at random).

    ``vocab``: an existing compact vocabulary (a teacher's) to map onto; pieces outside it become ``[UNK]``.
    """
    named = is_named_corpus(corpus)
    if not named and not Path(corpus).exists() and "/" not in corpus and "." not in corpus:
        from essence.data.corpora import corpus_texts

        corpus_texts(corpus)    # raises "unknown corpus" with the named ones and a suggestion
    key_src = corpus if named else str(Path(corpus).resolve())
    stamp = None if named else [(str(f), f.stat().st_mtime_ns, f.stat().st_size) for f in
                                (sorted(Path(corpus).rglob("*.txt")) if Path(corpus).is_dir()
                                 else [Path(corpus)] if Path(corpus).exists() else [])]
    key = cache_key("distilbert-corpus-2", key_src, stamp, max_len, min_len, heldout_fraction, len(tokenizer),
                    tokenizer.name_or_path)
    cached = cache_dir("distilbert") / f"corpus-{key}.pt"
    if cached.exists():
        train, held = torch.load(cached)
    else:
        train, held = _tokenised(corpus, tokenizer, max_len, min_len, heldout_fraction)
        tmp = cached.with_suffix(f".{os.getpid()}.tmp")
        torch.save((train, held), tmp)
        os.replace(tmp, cached)
    return _finish(corpus, tokenizer, train, held, min_len=min_len, limit=limit, heldout_limit=heldout_limit,
                   vocab=vocab)


def _tokenised(corpus, tokenizer, max_len, min_len, heldout_fraction):
    if is_named_corpus(corpus):
        from essence.data.corpora import corpus_texts

        train_lines, held_lines = corpus_texts(corpus, heldout_fraction)
    else:
        lines = read_text_lines(corpus)
        n_held = int(round(heldout_fraction * len(lines)))
        idx = list(range(len(lines)))
        random.Random(0).shuffle(idx)
        held_set = set(idx[:n_held])
        train_lines = [ln for i, ln in enumerate(lines) if i not in held_set]
        held_lines = [ln for i, ln in enumerate(lines) if i in held_set]
    return _encode(train_lines, tokenizer, max_len, min_len), _encode(held_lines, tokenizer, max_len, min_len)


def _finish(corpus, tokenizer, train, held, *, min_len, limit, heldout_limit, vocab) -> Corpus:
    every = train + held
    train = [x for x in train if len(x) >= min_len]
    held = [x for x in held if len(x) >= min_len]
    if not train:
        raise ValueError(f"corpus {corpus}: no training sequence of >= {min_len} tokens (data.min_len)")
    full_vocab = tokenizer.convert_ids_to_tokens(list(range(len(tokenizer))))
    special = {name: tokenizer.convert_tokens_to_ids(name) for name in SPECIALS}
    if vocab is None:   # over the whole corpus (before the limits): its own tokenizer re-tokenises it identically
        vocab, remap = compact_vocab(every, full_vocab, special)
    else:
        index = {tok: i for i, tok in enumerate(vocab)}
        missing = [name for name in SPECIALS if name not in index]
        if missing:
            raise ValueError(f"the teacher's vocabulary lacks the special tokens {missing}")
        unk = index["[UNK]"]
        remap = {t: index.get(tok, unk) for t, tok in enumerate(full_vocab)}
    train = [[remap[t] for t in s] for s in (train[:limit] if limit else train)]
    held = [[remap[t] for t in s] for s in (held[:heldout_limit] if heldout_limit else held)]
    counts = torch.zeros(len(vocab), dtype=torch.float64)
    for s in train:
        counts.index_add_(0, torch.tensor(s), torch.ones(len(s), dtype=torch.float64))
    index = {tok: i for i, tok in enumerate(vocab)}
    return Corpus(train, held, vocab, counts, index["[PAD]"], index["[MASK]"],
                  tuple(index[name] for name in SPECIALS))


def token_probs(counts: torch.Tensor, smoothing: float, special_ids) -> torch.Tensor:
    """Official ``token_probs = max(count, 1)^-smoothing``, 0 for special tokens."""
    probs = counts.clamp(min=1).pow(-smoothing).float()
    probs[list(special_ids)] = 0.0
    return probs


def pad_batch(seqs: list[list[int]], pad_id: int) -> tuple[torch.Tensor, torch.Tensor]:
    """(input_ids, attention_mask), padded to the batch maximum."""
    n = max(len(s) for s in seqs)
    ids = torch.full((len(seqs), n), pad_id, dtype=torch.long)
    for i, s in enumerate(seqs):
        ids[i, :len(s)] = torch.tensor(s)
    return ids, (ids != pad_id).long()


def mask_tokens(ids: torch.Tensor, attention: torch.Tensor, probs: torch.Tensor, *, mask_id: int,
                vocab_size: int, mask_prop: float = 0.15, pred_probs=(0.8, 0.1, 0.1),
                generator: torch.Generator | None = None) -> tuple[torch.Tensor, torch.Tensor]:
    """(masked input ids, labels with -100 off target): batch-level, frequency-smoothed, 80/10/10."""
    flat = ids.reshape(-1)
    x_prob = probs[flat] * attention.reshape(-1).float()
    n_tgt = min(math.ceil(mask_prop * int(attention.sum())), int((x_prob > 0).sum()))
    pred = torch.zeros_like(flat, dtype=torch.bool)
    if n_tgt > 0:
        tgt = torch.multinomial(x_prob / x_prob.sum(), n_tgt, replacement=False, generator=generator)
        pred[tgt] = True
    real = flat[pred]
    rand = torch.randint(vocab_size, real.shape, generator=generator)
    kind = torch.multinomial(torch.tensor(pred_probs, dtype=torch.float), real.numel(), replacement=True,
                             generator=generator) if real.numel() else real
    new = torch.where(kind == 0, torch.full_like(real, mask_id), torch.where(kind == 1, real, rand))
    out = flat.clone()
    out[pred] = new
    labels = torch.full_like(flat, -100)
    labels[pred] = real
    return out.view_as(ids), labels.view_as(ids)


def bucketed_batches(lengths: list[int], batch_size: int, *, seed: int, epoch: int, bucket: int = 4
                     ) -> list[list[int]]:
    """The epoch's batches (drop_last): shuffled, grouped by length bins of ``bucket`` tokens, batch order shuffled."""
    rng = random.Random(seed * 100003 + epoch)
    idx = list(range(len(lengths)))
    rng.shuffle(idx)
    if bucket:
        idx.sort(key=lambda i: lengths[i] // bucket)   # stable: shuffled within a bin
    batches = [idx[i:i + batch_size] for i in range(0, len(idx) - batch_size + 1, batch_size)]
    rng.shuffle(batches)
    return batches
