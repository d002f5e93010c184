"""Helpers for the Poly-encoder tests: a tiny self-contained Hugging Face BERT directory (no downloads).

(A uniquely named module, not a conftest.py, so it cannot clash with other test folders.)
"""

from __future__ import annotations

import importlib.util
import string

WORDS = ("who is there nay answer me stand and unfold yourself long live the king hello hi how are you fine "
         "good morning what ai robot weather nice my lord sir madam").split()


def make_tiny_encoder(folder, *, seed: int = 0, hidden: int = 32, layers: int = 2, heads: int = 4):
    """A random BertModel (hidden 32, 2 layers) with a small WordPiece vocabulary, saved to ``folder``."""
    import torch
    from transformers import BertConfig, BertModel, BertTokenizerFast

    folder.mkdir(parents=True, exist_ok=True)
    vocab = ["[PAD]", "[UNK]", "[CLS]", "[SEP]", "[MASK]", *string.punctuation, *string.digits,
             *string.ascii_lowercase, *("##" + c for c in string.ascii_lowercase + string.digits), *WORDS]
    vocab = list(dict.fromkeys(vocab))
    (folder / "vocab.txt").write_text("\n".join(vocab) + "\n")
    # transformers 5: the vocabulary is passed as a dict (``vocab_file=`` is silently ignored -> all [UNK])
    tok = BertTokenizerFast(vocab={w: i for i, w in enumerate(vocab)})
    if tok.convert_ids_to_tokens(tok("long live", add_special_tokens=False)["input_ids"]) != ["long", "live"]:
        raise RuntimeError("the tiny WordPiece tokenizer did not load its vocabulary")
    tok.save_pretrained(str(folder))
    torch.manual_seed(seed)
    cfg = BertConfig(vocab_size=len(vocab), hidden_size=hidden, num_hidden_layers=layers, num_attention_heads=heads,
                     intermediate_size=2 * hidden, max_position_embeddings=128, type_vocab_size=2)
    BertModel(cfg).save_pretrained(str(folder))
    return folder


PAIR_WORDS = "who is there nay answer me stand and unfold yourself long live the king hello hi how are you fine".split()


def make_pairs(n: int, seed: int = 0, words=PAIR_WORDS):
    """``n`` random (context, response) pairs over ``words`` (responses made unique by their index)."""
    import torch

    from essence.polyencoder.data import DialoguePair

    g = torch.Generator().manual_seed(seed)
    out = []
    for i in range(n):
        w = [words[j] for j in torch.randint(len(words), (5,), generator=g).tolist()]
        out.append(DialoguePair((" ".join(w[:3]),), " ".join(w[2:]) + f" {i}", "g"))
    return out


def has_package(name: str) -> bool:
    return importlib.util.find_spec(name) is not None
