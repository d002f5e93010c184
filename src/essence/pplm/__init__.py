"""PPLM: plug-and-play controlled generation on any causal LM (Dathathri et al., ICLR 2020).

    from essence.pplm import load_lm, BagOfWords, topic_words, generate
    lm = load_lm("smollm2")                                   # or a local HF causal-LM directory
    bow = BagOfWords(topic_words("science"), lm.tokenizer)
    g = generate(lm, "The lake", bow, length=30, stepsize=0.03, window_length=5, gm_scale=0.95)
    print(g.texts[0])
"""

from essence.pplm.attribute import AttributeModel, BagOfWords, Combined, Coverage, Discriminator, StepContext
from essence.pplm.config import PRESETS, GenerateConfig, PPLMConfig
from essence.pplm.generate import Generation, fuse, generate, generate_arms, perturb_past, top_k_filter, window_mask
from essence.pplm.lm import LM, load_lm, tiny_lm

__all__ = ["PRESETS", "PPLMConfig", "GenerateConfig", "LM", "load_lm", "tiny_lm", "AttributeModel", "BagOfWords",
           "Discriminator", "Combined", "Coverage", "StepContext", "Generation", "generate", "generate_arms",
           "perturb_past", "window_mask", "top_k_filter", "fuse", "topic_words", "train_discriminator", "dist_n",
           "rerank"]


def __getattr__(name):  # modules with heavier imports on first use
    if name == "topic_words":
        from essence.pplm.data import topic_words
        return topic_words
    if name == "train_discriminator":
        from essence.pplm.train import train_discriminator
        return train_discriminator
    if name in ("dist_n", "rerank"):
        from essence.pplm import evaluate
        return getattr(evaluate, name)
    raise AttributeError(name)
