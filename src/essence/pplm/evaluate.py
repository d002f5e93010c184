"""PPLM evaluation (paper §4, with the definitions the authors did not release made explicit).

- **Dist-n** (:func:`dist_n`): distinct n-grams / total n-grams of one sample's generated tokens, then averaged
  over samples (the card's definition; issues #17, #19 of the official repository).
- **Perplexity** (:func:`perplexity`): exp of the mean token NLL of the generated part under a scoring LM. The
  paper uses a *different* LM (GPT-1); here ``lm.judge_lm`` names one, else the unperturbed base LM is used and the
  report says so (the base LM rewards its own greedy text, so its perplexity understates disfluency of B).
- **Relevance by an independent judge** (:class:`KeywordJudge`): WordNet lemmas of the topic that are not in the
  steering bag. It never steers, so a hit is evidence of the topic beyond the pushed words.
- **Ranking** (:func:`rerank`): the paper's "R": drop samples whose Dist-2 is below a threshold (unless none
  would remain), then keep the best by the attribute model's log p(a|x).
"""

from __future__ import annotations

import math
import re

import torch

from essence.pplm.attribute import AttributeModel
from essence.pplm.lm import LM, lm_forward

__all__ = ["dist_n", "dist_scores", "perplexity", "KeywordJudge", "TextClassifierJudge", "rerank", "highlight"]

_WORD = re.compile(r"[a-z][a-z'\-]*")


def dist_n(tokens, n: int) -> float:
    """Distinct n-grams / total n-grams of one token sequence (0.0 for a sequence shorter than n)."""
    if n < 1:
        raise ValueError(f"n must be >= 1, got {n}")
    toks = list(tokens)
    grams = [tuple(toks[i:i + n]) for i in range(len(toks) - n + 1)]
    return len(set(grams)) / len(grams) if grams else 0.0


def dist_scores(tokens: torch.Tensor) -> dict[str, list[float]]:
    """Dist-1/2/3 per sample of (B, T) generated ids."""
    rows = tokens.tolist()
    return {f"dist{n}": [dist_n(r, n) for r in rows] for n in (1, 2, 3)}


@torch.no_grad()
def perplexity(lm: LM, texts_or_ids, *, prompts=None) -> list[float]:
    """Per-sample perplexity of the generated part.

    ``texts_or_ids``: a (B, T) tensor of full sequences with ``prompts`` = the prompt length (int), scored by the
    LM that made them; or (prompt, continuation) string pairs, re-tokenised by ``lm`` (a different LM)."""
    if isinstance(texts_or_ids, torch.Tensor):
        ids, start = texts_or_ids.to(lm.device), int(prompts)
        logits, _, _ = lm_forward(lm.model, ids)
        lp = logits[:, start - 1:-1].float().log_softmax(-1).gather(-1, ids[:, start:, None]).squeeze(-1)
        return [math.exp(-float(v)) for v in lp.mean(-1)]
    out = []
    for prompt, cont in texts_or_ids:
        p = lm.encode(prompt)
        c = lm.tokenizer.encode(cont, add_special_tokens=False)
        if not c:
            out.append(float("nan"))
            continue
        ids = torch.tensor([p + c], device=lm.device)
        logits, _, _ = lm_forward(lm.model, ids)
        lp = logits[0, len(p) - 1:-1].float().log_softmax(-1).gather(-1, ids[0, len(p):, None])
        out.append(math.exp(-float(lp.mean())))
    return out


class TextClassifierJudge:
    """An attribute judge independent of the steering model: TF-IDF word and bigram features with a logistic
    regression (scikit-learn), trained on labelled texts the discriminator never saw. ``prob(texts)`` is the
    probability of ``target`` per text, a dense score (a lexicon finds no hit in most 16-token samples)."""

    def __init__(self, rows: list[tuple[str, str]], target: str, *, test_fraction: float = 0.2, seed: int = 0,
                 name: str = "classifier"):
        from sklearn.feature_extraction.text import TfidfVectorizer
        from sklearn.linear_model import LogisticRegression

        labels = sorted({label for _, label in rows})
        if target not in labels or len(labels) < 2:
            raise ValueError(f"judge {name!r}: needs rows of {target!r} and at least one other label, got {labels}")
        order = torch.randperm(len(rows), generator=torch.Generator().manual_seed(seed)).tolist()
        n_test = max(1, int(len(rows) * test_fraction))
        test, train = [rows[i] for i in order[:n_test]], [rows[i] for i in order[n_test:]]
        self.name, self.target = name, target
        self.vectorizer = TfidfVectorizer(ngram_range=(1, 2), min_df=2, sublinear_tf=True, lowercase=True)
        x = self.vectorizer.fit_transform([t for t, _ in train])
        self.model = LogisticRegression(max_iter=2000, C=4.0).fit(x, [label == target for _, label in train])
        pred = self.model.predict(self.vectorizer.transform([t for t, _ in test]))
        self.test_accuracy = float((pred == [label == target for _, label in test]).mean())
        self.test_n, self.train_n = len(test), len(train)

    def prob(self, texts) -> list[float]:
        return self.model.predict_proba(self.vectorizer.transform(list(texts)))[:, 1].tolist()


class KeywordJudge:
    """Topic relevance from a lexicon that did not steer: hits per sample (words and multi-word phrases)."""

    def __init__(self, words, *, name: str = "judge"):
        words = [w.strip().lower() for w in words if isinstance(w, str) and w.strip()]
        if not words:
            raise ValueError(f"judge {name!r}: empty lexicon")
        self.name = name
        self.single = {w for w in words if " " not in w}
        self.phrases = {tuple(w.split()) for w in words if " " in w}
        self.max_len = max((len(p) for p in self.phrases), default=1)

    def hits(self, text: str) -> int:
        toks = _WORD.findall(text.lower())
        n = sum(1 for t in toks if t in self.single or t.rstrip("s") in self.single)
        for k in range(2, self.max_len + 1):
            n += sum(1 for i in range(len(toks) - k + 1) if tuple(toks[i:i + k]) in self.phrases)
        return n

    def relevant(self, texts) -> list[float]:
        """1.0 where a sample has at least one hit."""
        return [1.0 if self.hits(t) > 0 else 0.0 for t in texts]

    def rate(self, texts) -> list[float]:
        """Hits per 100 words of each sample."""
        out = []
        for t in texts:
            n = max(1, len(_WORD.findall(t.lower())))
            out.append(100.0 * self.hits(t) / n)
        return out


@torch.no_grad()
def rerank(lm: LM, attribute: AttributeModel, ids: torch.Tensor, start: int, *, dist_threshold: float = 0.5) -> int:
    """Index of the sample to keep (the paper's ranking "R"): Dist-2 filter, then the highest log p(a|x)."""
    scores = attribute.sequence_score(lm, ids.to(lm.device), start).float().cpu()
    d2 = torch.tensor([dist_n(r, 2) for r in ids[:, start:].tolist()])
    ok = d2 >= dist_threshold
    if bool(ok.any()):
        scores = torch.where(ok, scores, torch.full_like(scores, -float("inf")))
    return int(scores.argmax())


def highlight(text: str, words, *, color: bool = True) -> str:
    """Mark the attribute words in ``text``: ANSI bold+colour in a terminal, else ``[word]``."""
    targets = {w.lower() for w in words if " " not in w}

    def mark(m: re.Match) -> str:
        w = m.group(0)
        if w.lower() not in targets and w.lower().rstrip("s") not in targets:
            return w
        return f"\x1b[1;31m{w}\x1b[0m" if color else f"[{w}]"

    return re.sub(r"[A-Za-z][A-Za-z'\-]*", mark, text)
