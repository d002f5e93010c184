"""Bi-, Poly- and Cross-encoders on any Hugging Face encoder (Humeau et al. 2019, §2.2-2.4 of the card).

Notation of the paper: ``T(x) = h_1..h_N`` are the last-layer outputs of a transformer over the N tokens of
x (dimension d); ``red(.)`` reduces them to one vector (first output, mean or max).

- :class:`BiEncoder`:    y_ctxt = red(T1(ctxt)),  y_cand = red(T2(cand)),  s = y_ctxt . y_cand
- :class:`PolyEncoder`:  y^i_ctxt = sum_j softmax_j(c_i . h_j) h_j  (i = 1..m, learned codes c_i, or the first m
                         outputs), w = softmax_i(y_cand . y^i_ctxt), y_ctxt = sum_i w_i y^i_ctxt, s = y_ctxt . y_cand
- :class:`CrossEncoder`: s = W . first(T(ctxt, cand))

Every ranker exposes the cacheable split of the paper's Table 5::

    ctxt_rep, ctxt_mask = model.encode_context(ids, mask)      # (B, m, d), (B, m)   (m = 1 for the bi-encoder)
    cand_rep = model.encode_candidates(ids, mask)              # (C, d): cache these
    scores = model.score(ctxt_rep, ctxt_mask, cand_rep)        # (B, C); cand_rep may also be (B, C, d)

The attention variants follow ParlAI (``--codes-attention-type`` / ``--poly-attention-type``): ``basic``
(plain dot product, the paper), ``sqrt`` (scaled by 1/sqrt(d)) and ``multihead`` (projected heads). Context
padding is always masked in the code attention; ``n_first`` pads with masked zeros when N < m.
"""

from __future__ import annotations

import contextlib
import copy
import math
import os
from pathlib import Path

import torch
from torch import nn

from essence.polyencoder.config import ModelConfig

__all__ = ["reduce_outputs", "dot_attention", "MultiHeadAttention", "PolyAttention", "TransformerEncoder",
           "BiEncoder", "PolyEncoder", "CrossEncoder", "build_model", "load_hf_encoder", "fp32", "CODES_INITS"]

CODES_INITS = ("uniform", "normal")


def fp32(device: torch.device) -> contextlib.AbstractContextManager:
    """Leave any autocast region: ``x.float()`` inside autocast does not stop the next matmul from running in
    bf16, so the scores and the code-attention logits are computed under ``autocast(enabled=False)``."""
    if torch.is_autocast_enabled(device.type):
        return torch.autocast(device_type=device.type, enabled=False)
    return contextlib.nullcontext()


# ----------------------------------------------------------------------------------------------------------
# red(.) and attention
# ----------------------------------------------------------------------------------------------------------
def reduce_outputs(h: torch.Tensor, mask: torch.Tensor, reduction: str = "first") -> torch.Tensor:
    """red(T(x)): (B, N, d) outputs and (B, N) mask -> (B, d), by the first output, masked mean or max."""
    if reduction == "first":
        return h[:, 0]
    m = mask.to(h.dtype).unsqueeze(-1)                                   # (B, N, 1)
    if reduction == "mean":
        return (h * m).sum(1) / m.sum(1).clamp_min(1.0)
    if reduction == "max":
        return h.masked_fill(m == 0, torch.finfo(h.dtype).min).amax(1)
    raise ValueError(f"reduction must be first, mean or max, got {reduction!r}")


def dot_attention(q: torch.Tensor, k: torch.Tensor, v: torch.Tensor, mask: torch.Tensor | None,
                  scaled: bool = False) -> torch.Tensor:
    """softmax(q k^T [/ sqrt(d)]) v with masked keys. q (B, Q, d), k / v (B, K, d), mask (B, K) -> (B, Q, d)."""
    logits = q @ k.transpose(1, 2)                                       # (B, Q, K)
    if scaled:
        logits = logits / math.sqrt(q.shape[-1])
    if mask is not None:
        logits = logits.masked_fill(~mask.bool()[:, None, :], float("-inf"))
    return torch.softmax(logits.float(), dim=-1).to(v.dtype) @ v


class MultiHeadAttention(nn.Module):
    """Projected multi-head attention as in ParlAI's ``MultiHeadAttention`` (q/k/v/out linear maps,
    1/sqrt(d/heads) scaling, dropout on the attention weights)."""

    def __init__(self, n_heads: int, dim: int, dropout: float = 0.0):
        super().__init__()
        if dim % n_heads:
            raise ValueError(f"attention heads ({n_heads}) must divide the dimension ({dim})")
        self.n_heads, self.dim = n_heads, dim
        self.q_lin, self.k_lin, self.v_lin, self.out_lin = (nn.Linear(dim, dim) for _ in range(4))
        for lin in (self.q_lin, self.k_lin, self.v_lin, self.out_lin):
            nn.init.xavier_normal_(lin.weight)
        self.dropout = nn.Dropout(dropout)

    def forward(self, q: torch.Tensor, k: torch.Tensor, v: torch.Tensor, mask: torch.Tensor | None) -> torch.Tensor:
        B, Q, d = q.shape
        K, h = k.shape[1], self.n_heads

        def heads(x: torch.Tensor, n: int) -> torch.Tensor:             # (B, n, d) -> (B, h, n, d/h)
            return x.view(B, n, h, d // h).transpose(1, 2)

        qh = heads(self.q_lin(q), Q) / math.sqrt(d // h)
        kh, vh = heads(self.k_lin(k), K), heads(self.v_lin(v), K)
        logits = qh @ kh.transpose(-1, -2)                               # (B, h, Q, K)
        if mask is not None:
            logits = logits.masked_fill(~mask.bool()[:, None, None, :], float("-inf"))
        weights = self.dropout(torch.softmax(logits.float(), dim=-1).to(vh.dtype))
        out = (weights @ vh).transpose(1, 2).reshape(B, Q, d)
        return self.out_lin(out)


class PolyAttention(nn.Module):
    """One of the paper's / ParlAI's attentions: ``basic`` | ``sqrt`` | ``multihead``."""

    def __init__(self, kind: str, dim: int, n_heads: int = 4, dropout: float = 0.0):
        super().__init__()
        if kind not in ("basic", "sqrt", "multihead"):
            raise ValueError(f"attention type must be basic, sqrt or multihead, got {kind!r}")
        self.kind = kind
        self.mha = MultiHeadAttention(n_heads, dim, dropout) if kind == "multihead" else None

    def forward(self, q: torch.Tensor, k: torch.Tensor, v: torch.Tensor, mask: torch.Tensor | None) -> torch.Tensor:
        if self.mha is not None:
            return self.mha(q, k, v, mask)
        return dot_attention(q, k, v, mask, scaled=self.kind == "sqrt")


# ----------------------------------------------------------------------------------------------------------
# the transformer T(.)
# ----------------------------------------------------------------------------------------------------------
def load_hf_encoder(name: str, *, pretrained: bool = True, num_layers: int = 0):
    """``(model, tokenizer)`` for ``minilm``, ``minilm-tiny`` (random 2 x 64 weights, MiniLM's tokenizer), a
    Hugging Face model directory or a sentence-transformers directory (its Transformer module, found through
    ``modules.json``; the pooling is read by :func:`essence.polyencoder.export.read_sentence_transformer`), offline."""
    os.environ.setdefault("HF_HUB_OFFLINE", "1")
    from transformers import AutoConfig, AutoModel, AutoTokenizer

    if name in ("minilm", "minilm-tiny"):
        from essence.pretrained.minilm import minilm_dir

        folder = minilm_dir()
    else:
        folder = Path(name)
        if (folder / "modules.json").exists():   # a sentence-transformers directory: its Transformer module's folder
            from essence.polyencoder.export import sentence_transformer_dir

            folder = sentence_transformer_dir(folder)
        if not (folder / "config.json").exists():
            raise FileNotFoundError(f"model.encoder {name!r} is neither 'minilm' nor a Hugging Face model "
                                    f"directory (no config.json there)")
    tokenizer = AutoTokenizer.from_pretrained(str(folder))
    config = AutoConfig.from_pretrained(str(folder))
    if name == "minilm-tiny":  # tests / the tiny preset: MiniLM's tokenizer, a 2 x 64 random transformer
        config.update({"hidden_size": 64, "num_hidden_layers": 2, "num_attention_heads": 4,
                       "intermediate_size": 128})
        pretrained = False
    if num_layers:
        for attr in ("num_hidden_layers", "n_layers", "num_layers"):
            if hasattr(config, attr):
                if num_layers > getattr(config, attr):
                    raise ValueError(f"model.num_layers={num_layers} exceeds the encoder's "
                                     f"{getattr(config, attr)} layers")
                setattr(config, attr, num_layers)
    if pretrained:
        model = AutoModel.from_pretrained(str(folder), config=config)
    else:
        model = AutoModel.from_config(config)
    return model, tokenizer


class TransformerEncoder(nn.Module):
    """T(x): a Hugging Face encoder returning its last-layer outputs (B, N, d), times ``output_scaling``."""

    def __init__(self, hf_model: nn.Module, output_scaling: float = 1.0):
        super().__init__()
        if getattr(hf_model, "pooler", None) is not None:
            # BERT's pooler (tanh on [CLS]) is not part of T(x): drop it so that no parameter goes unused (DDP)
            hf_model.pooler = None
        self.transformer = hf_model
        self.output_scaling = output_scaling
        cfg = hf_model.config
        self.dim = int(getattr(cfg, "hidden_size", 0) or getattr(cfg, "dim", 0) or cfg.d_model)
        self.uses_segments = int(getattr(cfg, "type_vocab_size", 0) or 0) >= 2

    @property
    def max_positions(self) -> int:
        """The longest input the transformer accepts (its position table), 0 when it has no limit."""
        return int(getattr(self.transformer.config, "max_position_embeddings", 0) or 0)

    def forward(self, ids: torch.Tensor, mask: torch.Tensor, segments: torch.Tensor | None = None) -> torch.Tensor:
        if self.max_positions and ids.shape[-1] > self.max_positions:
            raise ValueError(f"inputs of {ids.shape[-1]} tokens exceed the encoder's {self.max_positions} positions; "
                             f"lower model.max_context_tokens / model.max_candidate_tokens (a cross-encoder pair "
                             f"needs their sum)")
        if mask.ndim == 2 and mask.shape[0] and not bool(mask.any(1).all()):
            raise ValueError("an input row has no tokens (its attention mask is all padding); every context and "
                             "candidate needs at least one token")
        kwargs = {"input_ids": ids, "attention_mask": mask}
        if self.uses_segments:
            kwargs["token_type_ids"] = segments if segments is not None else torch.zeros_like(ids)
        # transformers 5: read the field by name (tuple-unpacking a ModelOutput yields its key strings).
        h = self.transformer(**kwargs).last_hidden_state
        return h * self.output_scaling if self.output_scaling != 1.0 else h


# ----------------------------------------------------------------------------------------------------------
# the three architectures
# ----------------------------------------------------------------------------------------------------------
class BiEncoder(nn.Module):
    """y_ctxt = red(T1(ctxt)), y_cand = red(T2(cand)), s = y_ctxt . y_cand (card §2.2)."""

    architecture = "bi"

    def __init__(self, ctxt_encoder: TransformerEncoder, cand_encoder: TransformerEncoder | None = None, *,
                 reduction: str = "first"):
        super().__init__()
        self.ctxt_encoder = ctxt_encoder
        # Shared encoders: the same module object serves both sides (its weights are stored once).
        self.cand_encoder = cand_encoder if cand_encoder is not None else ctxt_encoder
        self.reduction = reduction
        self.dim = ctxt_encoder.dim

    @property
    def shared(self) -> bool:
        return self.cand_encoder is self.ctxt_encoder

    def encode_candidates(self, ids: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
        """y_cand = red(T2(cand)): (C, N) tokens -> (C, d)."""
        return reduce_outputs(self.cand_encoder(ids, mask), mask, self.reduction)

    def encode_context(self, ids: torch.Tensor, mask: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """y_ctxt as (B, 1, d) with a (B, 1) mask, the same layout as the poly-encoder's m vectors."""
        y = reduce_outputs(self.ctxt_encoder(ids, mask), mask, self.reduction)
        return y[:, None], torch.ones(y.shape[0], 1, dtype=torch.bool, device=y.device)

    def score(self, ctxt_rep: torch.Tensor, ctxt_mask: torch.Tensor, cand_rep: torch.Tensor) -> torch.Tensor:
        """(B, 1, d) x (C, d) or (B, C, d) -> (B, C) dot products, in fp32 (outside any autocast)."""
        with fp32(ctxt_rep.device):
            y = ctxt_rep[:, 0].float()
            cand_rep = cand_rep.float()
            if cand_rep.ndim == 2:
                return y @ cand_rep.T
            return (cand_rep @ y[:, :, None]).squeeze(-1)


class PolyEncoder(BiEncoder):
    """Poly-encoder (card §2.4): m global context features, attended to by each candidate.

    Args:
        poly_type: ``codes`` (m learned codes) or ``n_first`` (the first m outputs, zero-padded and masked when
            the context is shorter than m).
        m: number of context vectors.
        codes_init: ``uniform`` (U[0, 1), ParlAI: every code shares a 0.5 * 1 component, so at the start all
            codes attend alike) or ``normal`` (N(0, codes_init_std^2): with a small std every code attention starts
            near-uniform, so each y^i starts at the masked mean of the outputs and a poly-encoder with ``mean``
            candidate reduction starts at the mean-pooling bi-encoder, i.e. at the pretrained encoder's own
            pooling; the small random part breaks the symmetry between codes).
        codes_attention / poly_attention: ``basic`` | ``sqrt`` | ``multihead`` for the code attention and the
            candidate-conditioned final attention.
    """

    architecture = "poly"

    def __init__(self, ctxt_encoder: TransformerEncoder, cand_encoder: TransformerEncoder | None = None, *,
                 reduction: str = "first", poly_type: str = "codes", m: int = 64, codes_attention: str = "basic",
                 codes_attention_heads: int = 4, poly_attention: str = "basic", poly_attention_heads: int = 4,
                 codes_init: str = "uniform", codes_init_std: float = 0.02):
        super().__init__(ctxt_encoder, cand_encoder, reduction=reduction)
        if codes_init not in CODES_INITS:
            raise ValueError(f"codes_init must be uniform or normal, got {codes_init!r}")
        if poly_type not in ("codes", "n_first"):
            raise ValueError(f"poly_type must be codes or n_first, got {poly_type!r}")
        if m < 1:
            raise ValueError(f"m must be a positive integer, got {m}")
        self.poly_type, self.m = poly_type, m
        d = self.dim
        if poly_type == "codes":
            self.codes = nn.Parameter(torch.empty(m, d))                 # c_1..c_m
            if codes_init == "uniform":
                nn.init.uniform_(self.codes)
            else:
                nn.init.normal_(self.codes, 0.0, codes_init_std)
            self.code_attention = PolyAttention(codes_attention, d, codes_attention_heads)
        self.attention = PolyAttention(poly_attention, d, poly_attention_heads)

    def encode_context(self, ids: torch.Tensor, mask: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """y^1..y^m_ctxt: (B, N) tokens -> (B, m, d) and its (B, m) mask."""
        h = self.ctxt_encoder(ids, mask)                                 # (B, N, d)
        B, N, d = h.shape
        if self.poly_type == "codes":
            with fp32(h.device):  # the code-attention logits c_i . h_j in fp32 (they saturate in bf16)
                h = h.float()
                codes = self.codes.float().unsqueeze(0).expand(B, self.m, d)
                rep = self.code_attention(codes, h, h, mask)             # (B, m, d)
            return rep, torch.ones(B, self.m, dtype=torch.bool, device=h.device)
        if N >= self.m:
            return h[:, : self.m], mask[:, : self.m].bool()
        pad = self.m - N
        return (torch.cat([h, h.new_zeros(B, pad, d)], 1),
                torch.cat([mask.bool(), mask.new_zeros(B, pad, dtype=torch.bool)], 1))

    def score(self, ctxt_rep: torch.Tensor, ctxt_mask: torch.Tensor, cand_rep: torch.Tensor) -> torch.Tensor:
        """s_i = (sum_k w_k y^k_ctxt) . y_cand_i with w = softmax_k(y_cand_i . y^k_ctxt): (B, C), in fp32."""
        with fp32(ctxt_rep.device):
            return self._score(ctxt_rep.float(), ctxt_mask, cand_rep.float())

    def _score(self, ctxt_rep: torch.Tensor, ctxt_mask: torch.Tensor, cand_rep: torch.Tensor) -> torch.Tensor:
        shared = cand_rep.ndim == 2
        if self.attention.kind == "multihead":
            cand = cand_rep.unsqueeze(0).expand(ctxt_rep.shape[0], -1, -1) if shared else cand_rep
            y_ctxt = self.attention(cand, ctxt_rep, ctxt_rep, ctxt_mask)  # (B, C, d)
            return (y_ctxt * cand).sum(-1)
        # basic / sqrt: (sum_k w_k y^k) . y_cand = sum_k w_k (y^k . y_cand), and y^k . y_cand are the attention
        # logits themselves, so no (B, C, d) tensor is needed: O(B C m d) for one matmul, O(B C m) after it.
        dots = (torch.einsum("cd,bmd->bcm", cand_rep, ctxt_rep) if shared
                else torch.einsum("bcd,bmd->bcm", cand_rep, ctxt_rep))   # (B, C, m)
        logits = dots / math.sqrt(ctxt_rep.shape[-1]) if self.attention.kind == "sqrt" else dots
        logits = logits.masked_fill(~ctxt_mask.bool()[:, None, :], float("-inf"))
        w = torch.softmax(logits, dim=-1)
        return (w * dots).sum(-1)


class CrossEncoder(nn.Module):
    """s(ctxt, cand) = W . red(T([ctxt; cand])) with segment ids 0 / 1 (card §2.3). Nothing is cacheable."""

    architecture = "cross"

    def __init__(self, encoder: TransformerEncoder, *, reduction: str = "first"):
        super().__init__()
        self.encoder = encoder
        self.reduction = reduction
        self.dim = encoder.dim
        self.classifier = nn.Linear(self.dim, 1)                        # W: d -> 1

    def forward(self, ids: torch.Tensor, mask: torch.Tensor, segments: torch.Tensor | None = None) -> torch.Tensor:
        """Scores of (N, L) concatenated (context, candidate) pairs -> (N,)."""
        h = self.encoder(ids, mask, segments)
        return self.classifier(reduce_outputs(h, mask, self.reduction)).squeeze(-1)


def build_model(cfg: ModelConfig, *, pretrained: bool | None = None):
    """``(model, tokenizer)`` for ``cfg`` (bi / poly / cross) on the configured Hugging Face encoder."""
    pretrained = cfg.pretrained if pretrained is None else pretrained
    hf, tokenizer = load_hf_encoder(cfg.encoder, pretrained=pretrained, num_layers=cfg.num_layers)
    enc = TransformerEncoder(hf, cfg.output_scaling)
    longest = (cfg.max_context_tokens + cfg.max_candidate_tokens if cfg.architecture == "cross"
               else max(cfg.max_context_tokens, cfg.max_candidate_tokens))
    if enc.max_positions and longest > enc.max_positions:
        what = ("model.max_context_tokens + model.max_candidate_tokens (one cross-encoder pair)"
                if cfg.architecture == "cross" else "model.max_context_tokens / model.max_candidate_tokens")
        raise ValueError(f"{what} = {longest} exceeds the encoder's {enc.max_positions} positions")
    if cfg.architecture == "cross":
        return CrossEncoder(enc, reduction=cfg.reduction), tokenizer
    cand = None
    if not cfg.share_encoders:
        # T1 and T2 start from the same weights and are updated separately (card §2.2).
        cand = TransformerEncoder(copy.deepcopy(hf), cfg.output_scaling)
    if cfg.architecture == "bi":
        return BiEncoder(enc, cand, reduction=cfg.reduction), tokenizer
    return PolyEncoder(enc, cand, reduction=cfg.reduction, poly_type=cfg.poly_type, m=cfg.poly_m,
                       codes_attention=cfg.codes_attention, codes_attention_heads=cfg.codes_attention_heads,
                       poly_attention=cfg.poly_attention, poly_attention_heads=cfg.poly_attention_heads,
                       codes_init=cfg.codes_init, codes_init_std=cfg.codes_init_std), tokenizer
