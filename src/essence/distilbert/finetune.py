"""Downstream fine-tuning of a teacher or a student directory on a labelled TSV (``text<TAB>label`` per line).

    res = finetune("runs/s/student", "train.tsv", "test.tsv", seeds=(0, 1, 2))   # accuracy per seed + per item

Works for any masked-LM directory that transformers maps to a sequence classifier (``BertForMaskedLM`` ->
``BertForSequenceClassification``, ``DistilBertForMaskedLM`` -> ``DistilBertForSequenceClassification``; the
classification head is new). Only ``input_ids`` and ``attention_mask`` are fed (DistilBERT has no token types).
"""

from __future__ import annotations

import os
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F

from essence.core.loop import Precision

__all__ = ["read_tsv", "finetune", "finetune_rows", "split_rows"]


def read_tsv(path: str | Path, labels: list[str] | None = None) -> tuple[list[str], list[int], list[str]]:
    """(texts, label ids, label names). ``labels``: the training labels; an unknown one is an error."""
    p = Path(path)
    if not p.exists():
        raise FileNotFoundError(f"{p}: no such TSV file")
    try:
        lines = p.read_text(encoding="utf-8").splitlines()
    except UnicodeDecodeError as err:
        raise ValueError(f"{p}: not UTF-8 text ({err.reason} at byte {err.start})") from None
    rows = []
    for i, line in enumerate(lines, 1):
        if not line.strip():
            continue
        if "\t" not in line:
            raise ValueError(f"{p}:{i}: expected 'text<TAB>label'")
        text, label = line.rsplit("\t", 1)
        rows.append((text.strip(), label.strip(), i))
    if not rows:
        raise ValueError(f"{p}: empty (no 'text<TAB>label' lines)")
    names = labels if labels is not None else sorted({r[1] for r in rows})
    index = {n: k for k, n in enumerate(names)}
    for _, label, i in rows:
        if label not in index:
            raise ValueError(f"{p}:{i}: unknown label {label!r}; the training labels are {names}")
    return [r[0] for r in rows], [index[r[1]] for r in rows], names


def _run(model_dir, train, test, n_labels, *, seed, epochs, lr, batch, max_len, precision, device):
    from transformers import AutoModelForSequenceClassification, AutoTokenizer
    from transformers.utils import logging as hf_logging

    torch.manual_seed(seed)
    tok = AutoTokenizer.from_pretrained(str(model_dir))
    level = hf_logging.get_verbosity()
    hf_logging.set_verbosity_error()   # the load report lists the new head and the unused MLM head, as expected
    try:
        model = AutoModelForSequenceClassification.from_pretrained(str(model_dir), num_labels=n_labels).to(device)
    finally:
        hf_logging.set_verbosity(level)
    prec = Precision(precision, device)

    def enc(texts):
        e = tok(texts, truncation=True, max_length=max_len, padding=True, return_tensors="pt")
        return e["input_ids"].to(device), e["attention_mask"].to(device)

    opt = torch.optim.AdamW(model.parameters(), lr=lr)
    x, y = train
    g = torch.Generator().manual_seed(seed)
    steps = epochs * max(1, len(x) // batch)
    sched = torch.optim.lr_scheduler.LambdaLR(opt, lambda s: max(0.0, 1 - s / steps))
    model.train()
    for _ in range(epochs):
        order = torch.randperm(len(x), generator=g).tolist()
        for b in range(0, max(len(x) - batch + 1, 1), batch):
            idx = order[b:b + batch]
            ids, att = enc([x[i] for i in idx])
            with prec.autocast():
                logits = model(input_ids=ids, attention_mask=att).logits
            loss = F.cross_entropy(logits.float(), torch.tensor([y[i] for i in idx], device=device))
            prec.backward(loss)
            prec.step(opt, clip_norm=1.0)
            sched.step()
    model.eval()
    tx, ty = test
    correct = []
    with torch.no_grad():
        for b in range(0, len(tx), 64):
            ids, att = enc(tx[b:b + 64])
            with prec.autocast():
                pred = model(input_ids=ids, attention_mask=att).logits.float().argmax(-1).cpu()
            correct.append((pred == torch.tensor(ty[b:b + 64])).numpy().astype(np.float64))
    return np.concatenate(correct)


def finetune(model_dir, train_tsv, test_tsv, *, seeds=(0, 1, 2), epochs: int = 3, lr: float = 5e-5,
             batch: int = 32, max_len: int = 128, precision: str = "auto", device: str = "cpu") -> dict:
    """{labels, accuracy (per seed), correct (seeds x test items)}."""
    tr_x, tr_y, names = read_tsv(train_tsv)
    te_x, te_y, _ = read_tsv(test_tsv, names)
    if len(names) < 2:
        raise ValueError(f"{train_tsv}: needs at least 2 labels, got {names}")
    return _finetune(model_dir, (tr_x, tr_y), (te_x, te_y), names, seeds=seeds, epochs=epochs, lr=lr, batch=batch,
                     max_len=max_len, precision=precision, device=device)


def finetune_rows(model_dir, train: list[tuple[str, str]], test: list[tuple[str, str]], **kw) -> dict:
    """:func:`finetune` on in-memory ``(text, label)`` rows (test labels must occur in the training rows)."""
    names = sorted({label for _, label in train})
    if len(names) < 2:
        raise ValueError(f"fine-tuning needs at least 2 labels in the training rows, got {names}")
    index = {n: k for k, n in enumerate(names)}
    unknown = sorted({label for _, label in test} - set(names))
    if unknown:
        raise ValueError(f"test labels {unknown} do not occur in the training rows ({names})")
    return _finetune(model_dir, ([t for t, _ in train], [index[label] for _, label in train]),
                     ([t for t, _ in test], [index[label] for _, label in test]), names, **kw)


def split_rows(rows: list[tuple[str, str]], test_fraction: float) -> tuple[list, list]:
    """Per-label split of already shuffled rows: the first ``test_fraction`` of each label's rows are the test."""
    by_label: dict[str, list] = {}
    for row in rows:
        by_label.setdefault(row[1], []).append(row)
    train, test = [], []
    for label_rows in by_label.values():
        k = max(1, round(len(label_rows) * test_fraction))
        test += label_rows[:k]
        train += label_rows[k:]
    return train, test


def _finetune(model_dir, train, test, names, *, seeds=(0, 1, 2), epochs: int = 3, lr: float = 5e-5, batch: int = 32,
              max_len: int = 128, precision: str = "auto", device: str = "cpu") -> dict:
    if not seeds:
        raise ValueError("fine-tuning needs at least one seed")
    if epochs < 1 or batch < 1 or max_len < 2 or not lr > 0:
        raise ValueError(f"fine-tuning needs epochs >= 1, batch >= 1, max_len >= 2 and lr > 0 (got epochs={epochs}, "
                         f"batch={batch}, max_len={max_len}, lr={lr})")
    if not train[0] or not test[0]:
        raise ValueError(f"fine-tuning needs training and test rows (got {len(train[0])} and {len(test[0])})")
    os.environ.setdefault("HF_HUB_OFFLINE", "1")
    runs = [_run(model_dir, train, test, len(names), seed=s, epochs=epochs, lr=lr, batch=batch,
                 max_len=max_len, precision=precision, device=device) for s in seeds]
    correct = np.stack(runs)
    return {"labels": names, "accuracy": correct.mean(1).tolist(), "correct": correct}
