"""Teachers and students as plain Hugging Face models.

- :func:`layer_map`: which teacher layer each student layer copies (official ``[0, 2, 4, 7, 9, 11]`` for 12).
- :func:`student_from_teacher`: a ``DistilBertForMaskedLM`` of half the depth, initialised as the official
  ``extract_distilbert.py --vocab_transform`` does (embeddings, per-layer attention / FFN / LayerNorms, the MLM
  transform, the decoder bias; the projector is tied to the word embeddings); no token types, no pooler.
  ``fold_token_type`` adds the teacher's token-type-0 vector into the position table (BERT adds it to every
  token), so a student copied at equal depth computes exactly the teacher's function.
- :func:`tiny_bert` / :func:`minilm_bert`: a ``BertForMaskedLM`` from scratch or from the MiniLM-L6 encoder with a
  fresh MLM head, restricted to a compact vocabulary.
- :func:`load_teacher` / :func:`save_model`: directories that plain transformers loads.
"""

from __future__ import annotations

import os
from pathlib import Path

import torch

__all__ = ["layer_map", "student_from_teacher", "tiny_bert", "minilm_bert", "load_teacher", "save_model",
           "load_student", "write_tokenizer", "count_parameters"]


def layer_map(n_teacher: int, n_student: int | None = None, how: str = "official") -> list[int]:
    """Teacher layer index for each student layer.

    ``official``: the first ceil(k/2) student layers take teacher layers 0, 2, 4, ...; the rest take the last
    layers counting back in steps of 2 (12 -> [0, 2, 4, 7, 9, 11], 6 -> [0, 2, 5], 4 -> [0, 3], 5 -> [0, 4]).
    ``every_other``: 0, 2, 4, ... (the paper's "one layer out of two"). Or explicit indices ``"0,2,5"``.
    """
    k = n_teacher // 2 if not n_student else n_student
    if n_teacher < 1 or k < 1:
        raise ValueError(f"the teacher needs >= 2 layers to halve (it has {n_teacher})")
    if how == "official":
        head = [2 * i for i in range((k + 1) // 2)]
        tail = [n_teacher - 1 - 2 * i for i in range(k // 2)][::-1]
        out = head + tail
    elif how == "every_other":
        out = [2 * i for i in range(k)]
    else:
        try:
            out = [int(x) for x in how.split(",") if x.strip()]
        except ValueError:
            raise ValueError(f"student.layers must be official, every_other or indices like 0,2,5; got {how!r}"
                             ) from None
    if len(out) != k or any(i < 0 or i >= n_teacher for i in out) or sorted(set(out)) != out:
        raise ValueError(f"layer map {out} is not {k} increasing teacher layers out of {n_teacher}")
    return out


def count_parameters(model: torch.nn.Module) -> int:
    return sum(p.numel() for p in {id(p): p for p in model.parameters()}.values())


def _check_bert(teacher) -> None:
    from transformers import BertForMaskedLM

    if not isinstance(teacher, BertForMaskedLM):
        raise ValueError(f"the teacher must be a BERT-like masked LM (BertForMaskedLM), got {type(teacher).__name__}")
    if getattr(teacher.config, "position_embedding_type", "absolute") != "absolute":
        raise ValueError("the teacher must use absolute position embeddings (DistilBERT has no relative ones)")


def student_from_teacher(teacher, *, layers: str = "official", n_layers: int = 0, init: str = "teacher",
                         fold_token_type: bool = True, seed: int = 0):
    """A ``DistilBertForMaskedLM`` built from a ``BertForMaskedLM`` (random weights when ``init='random'``)."""
    from transformers import DistilBertConfig, DistilBertForMaskedLM

    _check_bert(teacher)
    tc = teacher.config
    idx = layer_map(tc.num_hidden_layers, n_layers or None, layers)
    cfg = DistilBertConfig(vocab_size=tc.vocab_size, max_position_embeddings=tc.max_position_embeddings,
                           sinusoidal_pos_embds=False, n_layers=len(idx), n_heads=tc.num_attention_heads,
                           dim=tc.hidden_size, hidden_dim=tc.intermediate_size, dropout=tc.hidden_dropout_prob,
                           attention_dropout=tc.attention_probs_dropout_prob, activation=tc.hidden_act,
                           initializer_range=tc.initializer_range, pad_token_id=tc.pad_token_id or 0,
                           tie_word_embeddings=True)
    cfg.teacher_layers = idx      # recorded in config.json
    torch.manual_seed(seed)
    student = DistilBertForMaskedLM(cfg)
    if init == "random":
        return student
    t, s = teacher.bert, student.distilbert
    with torch.no_grad():
        s.embeddings.word_embeddings.weight.copy_(t.embeddings.word_embeddings.weight)
        pos = t.embeddings.position_embeddings.weight.clone()
        if fold_token_type and hasattr(t.embeddings, "token_type_embeddings"):
            pos += t.embeddings.token_type_embeddings.weight[0]
        s.embeddings.position_embeddings.weight.copy_(pos)
        s.embeddings.LayerNorm.load_state_dict(t.embeddings.LayerNorm.state_dict())
        for si, ti in enumerate(idx):
            tl, sl = t.encoder.layer[ti], s.transformer.layer[si]
            sl.attention.q_lin.load_state_dict(tl.attention.self.query.state_dict())
            sl.attention.k_lin.load_state_dict(tl.attention.self.key.state_dict())
            sl.attention.v_lin.load_state_dict(tl.attention.self.value.state_dict())
            sl.attention.out_lin.load_state_dict(tl.attention.output.dense.state_dict())
            sl.sa_layer_norm.load_state_dict(tl.attention.output.LayerNorm.state_dict())
            sl.ffn.lin1.load_state_dict(tl.intermediate.dense.state_dict())
            sl.ffn.lin2.load_state_dict(tl.output.dense.state_dict())
            sl.output_layer_norm.load_state_dict(tl.output.LayerNorm.state_dict())
        head = teacher.cls.predictions
        student.vocab_transform.load_state_dict(head.transform.dense.state_dict())
        student.vocab_layer_norm.load_state_dict(head.transform.LayerNorm.state_dict())
        student.vocab_projector.bias.copy_(head.decoder.bias if head.decoder.bias is not None else head.bias)
    student.tie_weights()
    return student


class MaskedPositionsMLM(torch.nn.Module):
    """A ``BertForMaskedLM`` / ``DistilBertForMaskedLM`` whose prediction head runs only at the masked positions.

    The MLM loss reads the logits of the ~15% predicted tokens alone, so training with it (the teacher, the
    MLM-only student) needs no vocabulary projection of the others: the same loss, with the largest matrix
    product of the step cut to its masked rows. ``forward(ids, attention, labels)`` returns (logits of the
    positions with ``labels != -100``, their labels). Wrap before DDP, so that DDP sees this forward.
    """

    def __init__(self, mlm: torch.nn.Module):
        super().__init__()
        from transformers import BertForMaskedLM, DistilBertForMaskedLM

        if not isinstance(mlm, (BertForMaskedLM, DistilBertForMaskedLM)):
            raise TypeError(f"MaskedPositionsMLM wraps a BertForMaskedLM or DistilBertForMaskedLM, got "
                            f"{type(mlm).__name__}")
        self.mlm = mlm

    def forward(self, input_ids: torch.Tensor, attention_mask: torch.Tensor, labels: torch.Tensor
                ) -> tuple[torch.Tensor, torch.Tensor]:
        m = self.mlm
        keep = labels != -100
        if hasattr(m, "bert"):
            hidden = m.bert(input_ids=input_ids, attention_mask=attention_mask).last_hidden_state[keep]
            return m.cls(hidden), labels[keep]
        hidden = m.distilbert(input_ids=input_ids, attention_mask=attention_mask).last_hidden_state[keep]
        h = m.vocab_layer_norm(m.activation(m.vocab_transform(hidden)))   # DistilBertForMaskedLM's head, in order
        return m.vocab_projector(h), labels[keep]


def tiny_bert(vocab_size: int, *, layers: int = 4, dim: int = 128, heads: int = 4, ffn: int = 512,
              max_len: int = 512, seed: int = 0):
    """A small ``BertForMaskedLM`` with random weights (the card's §6.2 teacher)."""
    from transformers import BertConfig, BertForMaskedLM

    torch.manual_seed(seed)
    cfg = BertConfig(vocab_size=vocab_size, hidden_size=dim, num_hidden_layers=layers, num_attention_heads=heads,
                     intermediate_size=ffn, max_position_embeddings=max_len, type_vocab_size=2, pad_token_id=0)
    return BertForMaskedLM(cfg)


def minilm_bert(vocab: list[str], *, seed: int = 0, path: str | Path | None = None):
    """MiniLM-L6 encoder + a fresh MLM head (decoder tied to the word embeddings), restricted to ``vocab``."""
    from transformers import BertForMaskedLM

    from essence.pretrained.minilm import load_minilm

    encoder, tok = load_minilm(path)
    full = tok.get_vocab()
    rows = torch.tensor([full[w] for w in vocab])
    cfg = encoder.config
    cfg.vocab_size = len(vocab)
    cfg.architectures = ["BertForMaskedLM"]
    torch.manual_seed(seed)
    model = BertForMaskedLM(cfg)
    sd = {k: v for k, v in encoder.state_dict().items() if not k.startswith("pooler.")}
    sd["embeddings.word_embeddings.weight"] = sd["embeddings.word_embeddings.weight"][rows].clone()
    missing, unexpected = model.bert.load_state_dict(sd, strict=False)
    if unexpected or [m for m in missing if "position_ids" not in m]:
        raise ValueError(f"MiniLM weights do not fit BertForMaskedLM: missing {missing}, unexpected {unexpected}")
    model.tie_weights()
    return model


def write_tokenizer(folder: str | Path, vocab: list[str]) -> None:
    """vocab.txt + an uncased BERT fast tokenizer, so ``AutoTokenizer.from_pretrained(folder)`` works."""
    from transformers import BertTokenizer

    folder = Path(folder)
    folder.mkdir(parents=True, exist_ok=True)
    BertTokenizer(vocab={w: i for i, w in enumerate(vocab)}, do_lower_case=True).save_pretrained(str(folder))
    (folder / "vocab.txt").write_text("\n".join(vocab) + "\n", encoding="utf-8")


def save_model(model, folder: str | Path, vocab: list[str] | None = None) -> Path:
    folder = Path(folder)
    model.save_pretrained(str(folder))
    if vocab is not None:
        write_tokenizer(folder, vocab)
    return folder


def _vocab(folder: Path) -> list[str]:
    f = folder / "vocab.txt"
    if not f.exists():
        raise FileNotFoundError(f"{folder}: no vocab.txt (a BERT WordPiece vocabulary is needed)")
    return f.read_text(encoding="utf-8").splitlines()


def load_teacher(folder: str | Path):
    """(BertForMaskedLM in eval mode, vocabulary) from a directory; clear errors for a non-BERT or head-less one."""
    os.environ.setdefault("HF_HUB_OFFLINE", "1")
    from transformers import AutoConfig, BertForMaskedLM

    folder = Path(folder)
    if not (folder / "config.json").exists():
        raise FileNotFoundError(f"teacher {folder}: no config.json (not a Hugging Face model directory)")
    cfg = AutoConfig.from_pretrained(str(folder))
    if cfg.model_type != "bert":
        raise ValueError(f"teacher {folder}: model_type {cfg.model_type!r} is not BERT-like (need 'bert')")
    model, info = BertForMaskedLM.from_pretrained(str(folder), output_loading_info=True)
    if any(k.startswith("cls.") for k in info["missing_keys"]):
        raise ValueError(f"teacher {folder}: no MLM head (cls.predictions.* missing); train one with "
                         "`essence distilbert teacher`")
    _check_bert(model)
    return model.eval(), _vocab(folder)


def load_student(folder: str | Path):
    os.environ.setdefault("HF_HUB_OFFLINE", "1")
    from transformers import DistilBertForMaskedLM

    folder = Path(folder)
    return DistilBertForMaskedLM.from_pretrained(str(folder)).eval(), _vocab(folder)
