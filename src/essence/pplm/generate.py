"""PPLM generation (paper §2.2-2.6): perturb the cached keys/values, fuse with the unperturbed LM, decode.

Per generated token t, for a batch of B samples of one prompt:

1. the **unperturbed** pass: the frozen LM on the newest token with its own cache gives p_{t+1} (and, for a
   discriminator, the running sum of last-layer states). The official code re-runs the whole sequence here
   every token (O(T^2)); the cache gives the same distribution in O(T).
2. the **latent update** (``num_iterations`` times): forward the last token with ``H_t + dH``; loss =
   ``-log p(a|x) + kl_scale * KL(p~ || p)``; ``dH <- dH - stepsize * g / ||g||^gamma`` with the norm per layer
   (keys and values together) and per sample, after the window mask. Bags of words divide by the running maximum
   of the norms over the generation (official). The step is skipped when ``stepsize == 0``, ``num_iterations ==
   0``, ``t >= grad_length`` or the history is empty.
3. the **perturbed** pass: the last token with ``H_t + dH`` gives p~_{t+1} and the next history (which keeps the
   perturbation, as in the official code).
4. **fusion**: ``p~^gm_scale * p^(1-gm_scale)``, top-k on probabilities, renormalise; argmax or sample.

Deviations from ``run_pplm.py``, all documented in docs/pplm.md: the window holds the *most recent*
``window_length`` positions (the paper's description; the official mask covers the oldest ones); temperature and
the repetition penalty are applied to both distributions before fusion (the official code leaves the unperturbed
one untouched; identical at the defaults 1.0); norms and losses are per sample, so a batch of B samples gives
what B single runs give; a sample whose gradient is not finite keeps the unperturbed history for that token
(with a warning) instead of corrupting the run.
"""

from __future__ import annotations

import time
import warnings
from dataclasses import dataclass, field

import torch

from essence.pplm.attribute import SMALL, AttributeModel, StepContext
from essence.pplm.config import GenerateConfig
from essence.pplm.lm import LM, cache_tensors, lm_forward, make_cache

__all__ = ["Generation", "generate", "generate_arms", "ARM_FIELDS", "perturb_past", "window_mask", "top_k_filter",
           "fuse"]


@dataclass
class Generation:
    """B samples of one prompt."""

    prompt: list[int]                        # prompt token ids (with the start token)
    tokens: torch.Tensor                     # (B, length) generated ids
    texts: list[str]                         # decoded continuations
    losses: list[list[float]] = field(default_factory=list)   # per token: the attribute+KL loss of each sample
    fallbacks: int = 0                       # tokens that fell back to the unperturbed step (non-finite gradient)
    seconds: float = 0.0
    perturbed: bool = True

    @property
    def ids(self) -> torch.Tensor:
        """(B, prompt + length) full sequences."""
        p = torch.tensor(self.prompt, dtype=torch.long, device=self.tokens.device)
        return torch.cat([p.expand(self.tokens.shape[0], -1), self.tokens], 1)

    def as_dict(self) -> dict:
        return {"prompt_ids": self.prompt, "tokens": self.tokens.tolist(), "texts": self.texts,
                "losses": self.losses, "fallbacks": self.fallbacks, "seconds": round(self.seconds, 3),
                "perturbed": self.perturbed}


# ----------------------------------------------------------------------------------------------------------
def window_mask(length: int, window: int, decay: bool, device=None) -> torch.Tensor:
    """(length,) weights of the history positions: ones, or only the last ``window`` positions (ramped 1/w..1
    with ``decay``) when ``0 < window < length``; the official code uses the full mask otherwise."""
    if 0 < window < length:
        m = torch.zeros(length, device=device)
        m[length - window:] = torch.arange(1, window + 1, device=device) / window if decay else 1.0
        return m
    return torch.ones(length, device=device)


def top_k_filter(x: torch.Tensor, k: int, *, probs: bool) -> torch.Tensor:
    """Keep entries >= the k-th largest per row (ties kept, official); others become 0 (probabilities) or -1e10
    (logits). ``k == 0``: unchanged."""
    if k == 0 or k >= x.shape[-1]:
        return x
    kth = torch.topk(x, k, dim=-1).values[..., -1:]
    return torch.where(x < kth, torch.zeros_like(x) if probs else torch.full_like(x, -1e10), x)


def fuse(p_pert: torch.Tensor, p_unpert: torch.Tensor, gm_scale: float, top_k: int) -> torch.Tensor:
    """Post-norm geometric-mean fusion (§2.5): p~^gm * p^(1-gm), top-k on probabilities, renormalised."""
    fused = p_pert.pow(gm_scale) * p_unpert.pow(1.0 - gm_scale)
    fused = top_k_filter(fused, top_k, probs=True)
    return fused / fused.sum(-1, keepdim=True).clamp_min(SMALL)


def _penalise(logits: torch.Tensor, seen: torch.Tensor | None, penalty: float) -> torch.Tensor:
    """CTRL-style repetition penalty on tokens already in the sequence (the transformers port's option)."""
    if seen is None or penalty == 1.0:
        return logits
    return torch.where(seen, torch.where(logits < 0, logits * penalty, logits / penalty), logits)


def _choose(probs: torch.Tensor, uniforms: torch.Tensor | None) -> torch.Tensor:
    """argmax (greedy) or inverse-CDF sampling with one uniform per sample (batch-independent)."""
    if uniforms is None:
        return probs.argmax(-1)
    cdf = probs.double().cumsum(-1)
    target = (uniforms.to(cdf) * cdf[:, -1]).unsqueeze(-1)
    return torch.searchsorted(cdf, target).squeeze(-1).clamp_max(probs.shape[-1] - 1)


# ----------------------------------------------------------------------------------------------------------
def perturb_past(lm: LM, attribute: AttributeModel, last: torch.Tensor, past: list, *, unpert_layers: list | None,
                 unpert_probs: torch.Tensor, acc_hidden: torch.Tensor | None, grad_norms: torch.Tensor | None,
                 cfg: GenerateConfig, stepsize: float | torch.Tensor, kl_scale: float | torch.Tensor | None = None):
    """The latent update of one token (§2.2). Returns ``(perturbed history, grad_norms, losses (B,), ok (B,))``.

    ``past``: [(K, V)] of the history before ``last`` (each (B, heads, L, head_dim)); ``grad_norms``: (layers, B)
    running maxima (bags of words) or None; ``ok[b]`` is False where a gradient was not finite (that sample keeps
    ``past`` unperturbed). ``stepsize`` and ``kl_scale`` (default ``cfg.kl_scale``) are numbers or (B,) tensors,
    one value per sample (:func:`generate_arms` runs several arms in one batch this way).
    """
    B, L = last.shape[0], past[0][0].shape[-2]
    kl_scale = cfg.kl_scale if kl_scale is None else kl_scale
    use_kl = bool((kl_scale > 0).any()) if torch.is_tensor(kl_scale) else kl_scale > 0
    step = stepsize.view(B, 1, 1, 1) if torch.is_tensor(stepsize) else stepsize
    mask = window_mask(L, cfg.window_length, cfg.decay, device=last.device).view(1, 1, L, 1)
    delta = [(torch.zeros_like(k), torch.zeros_like(v)) for k, v in past]
    ok = torch.ones(B, dtype=torch.bool, device=last.device)
    pu = unpert_probs + SMALL * (unpert_probs <= SMALL).float()
    losses = torch.zeros(B, device=last.device)
    for _ in range(cfg.num_iterations):
        leaves = [(dk.clone().requires_grad_(True), dv.clone().requires_grad_(True)) for dk, dv in delta]
        cache = make_cache([(k + dk, v + dv) for (k, v), (dk, dv) in zip(past, leaves)])
        logits, cache, hid = lm_forward(lm.model, last[:, None], cache=cache, hidden=attribute.needs_hidden)
        probs = logits[:, -1].float().softmax(-1)
        ctx = StepContext(lm=lm, probs=probs, cache=cache, hidden_last=hid, unpert_layers=unpert_layers,
                          acc_hidden=acc_hidden, past_length=L, horizon=cfg.horizon_length)
        loss = attribute.loss(ctx)                                                       # (B,)
        if use_kl:
            pc = probs + (SMALL * (probs <= SMALL).float()).detach()
            loss = loss + kl_scale * (pc * (pc / pu).log()).sum(-1)
        flat = [t for pair in leaves for t in pair]
        grads = torch.autograd.grad(loss.sum(), flat, allow_unused=True)
        grads = [torch.zeros_like(t) if g is None else g for t, g in zip(flat, grads)]
        finite = loss.detach().isfinite()
        for g in grads:
            finite &= g.flatten(1).isfinite().all(1)
        ok &= finite
        losses = torch.where(ok, loss.detach(), losses)
        keep = ok.view(B, 1, 1, 1)
        norms = []
        for i in range(len(past)):
            gk = torch.where(keep, grads[2 * i] * mask, 0.0)
            gv = torch.where(keep, grads[2 * i + 1] * mask, 0.0)
            n = (gk.pow(2).flatten(1).sum(1) + gv.pow(2).flatten(1).sum(1)).sqrt()          # (B,) per sample
            norms.append((gk, gv, n))
        stacked = torch.stack([n for _, _, n in norms])                                   # (layers, B)
        if grad_norms is not None and attribute.running_norm:
            grad_norms = torch.where(ok[None], torch.maximum(grad_norms, stacked), grad_norms)
        else:
            grad_norms = stacked + SMALL
        delta = [(dk - step * gk / grad_norms[i, :, None, None, None] ** cfg.gamma,
                  dv - step * gv / grad_norms[i, :, None, None, None] ** cfg.gamma)
                 for i, ((dk, dv), (gk, gv, _)) in enumerate(zip(delta, norms))]
    keep = ok.view(B, 1, 1, 1)
    pert = [(k + torch.where(keep, dk, 0.0), v + torch.where(keep, dv, 0.0)) for (k, v), (dk, dv) in zip(past, delta)]
    return pert, grad_norms, losses, ok


def _uniforms(seeds: list[int], length: int, device) -> torch.Tensor:
    """(B, length): sample b's stream comes from its own seed, so it does not depend on the batch."""
    rows = [torch.rand(length, generator=torch.Generator().manual_seed(int(s)), dtype=torch.float64) for s in seeds]
    return torch.stack(rows).to(device)


def _prepare(lm: LM, prompts: list, attribute: AttributeModel | None, cfg: GenerateConfig) -> list[list[int]]:
    """The token ids of each prompt, after the checks every entry point shares (the attribute model once)."""
    out = []
    for prompt in prompts:
        ids = lm.encode(prompt) if isinstance(prompt, str) else [int(i) for i in prompt]
        if not ids:
            raise ValueError("the prompt is empty: give text or at least one token id")
        if len(ids) + cfg.length > lm.context:
            raise ValueError(f"the prompt ({len(ids)} tokens) + length ({cfg.length}) exceeds the LM's context "
                             f"window of {lm.context} tokens: shorten the prompt or lower gen.length")
        out.append(ids)
    if attribute is not None and hasattr(attribute, "check"):
        attribute.check(lm)
    if attribute is not None:
        attribute.to(lm.device)
    return out


@torch.no_grad()
def generate(lm: LM, prompt: str | list[int], attribute: AttributeModel | None = None,
             cfg: GenerateConfig | None = None, *, perturb: bool = True, seeds: list[int] | None = None,
             progress: bool = False, **overrides) -> Generation:
    """Generate ``cfg.num_samples`` continuations of ``prompt`` in one batch.

    Args:
        lm: the frozen LM (:func:`essence.pplm.lm.load_lm`).
        prompt: text (the start token is prepended) or token ids (used as given).
        attribute: the attribute model; None or ``perturb=False`` gives plain decoding (the "B" baseline) with the
            same top-k / temperature / sampling.
        cfg: the knobs (defaults = ``run_pplm.py``); keyword ``overrides`` replace single fields
            (``generate(lm, "The lake", bow, stepsize=0.05)``).
        seeds: one seed per sample (default ``cfg.seed + i``); only used when ``cfg.sample``.

    Raises:
        ValueError: an empty prompt, a prompt + length beyond the context window, a discriminator trained on
            another LM.
    """
    cfg = (cfg or GenerateConfig()).replace(**overrides) if overrides else (cfg or GenerateConfig())
    [ids] = _prepare(lm, [prompt], attribute, cfg)
    B = cfg.num_samples
    seeds = list(seeds) if seeds is not None else [cfg.seed + i for i in range(B)]
    if len(seeds) != B:
        raise ValueError(f"seeds must have one entry per sample ({B}), got {len(seeds)}")
    perturb = perturb and attribute is not None
    tokens, losses, fallbacks, seconds = _decode(lm, [ids] * B, attribute, cfg, seeds, [cfg.stepsize] * B,
                                                 [cfg.kl_scale] * B, [cfg.gm_scale] * B, perturb, progress)
    return Generation(prompt=ids, tokens=tokens, texts=[lm.decode(row) for row in tokens.tolist()], losses=losses,
                      fallbacks=int(fallbacks.sum()), seconds=seconds, perturbed=perturb)


# the knobs that may differ between the arms of one batched decode (every other field is shared)
ARM_FIELDS = ("stepsize", "kl_scale", "gm_scale", "num_samples", "seed")


@torch.no_grad()
def generate_arms(lm: LM, prompt: str | list[int] | dict, attribute: AttributeModel,
                  arms: dict, *, progress: bool = False) -> dict:
    """Several PPLM arms of one attribute model, decoded as **one** batch.

    The arms may differ in ``stepsize``, ``kl_scale``, ``gm_scale``, ``num_samples`` and ``seed``, and in the
    prompt when ``prompt`` is a dict {arm name: prompt} whose prompts have the same number of tokens (no padding,
    so nothing changes the attention); every other knob must be equal. Norms, losses and random streams are per
    sample, so each arm's samples are what ``generate(lm, prompt, attribute, arms[name])`` gives (tested token
    for token; the losses agree to float rounding, since a larger batch may sum a matmul in another order): only
    the wall time changes. On a CPU, decoding a 135M-parameter LM with a handful of samples is bound by reading
    the weights, so k arms in one batch cost little more than one (a 16-row batch of SmolLM2 took 1.1x the time of
    4 rows on a 2-core EPYC).

    Args:
        prompt: one prompt for every arm, or {arm name: prompt} (text or token ids), all of one token length.
        arms: {name: GenerateConfig}; any hashable names.

    Returns:
        {name: Generation} in the same order; each ``seconds`` is the wall time of the whole batch.

    Raises:
        ValueError: no arms, arms that differ in a knob outside :data:`ARM_FIELDS`, per-arm prompts of different
            token lengths or not one per arm; the checks of :func:`generate`.
    """
    if not arms:
        raise ValueError("generate_arms needs at least one arm")
    names = list(arms)
    cfg = arms[names[0]]
    shared = {f: v for f, v in cfg.to_dict().items() if f not in ARM_FIELDS}
    for name in names[1:]:
        other = {f: v for f, v in arms[name].to_dict().items() if f not in ARM_FIELDS}
        bad = sorted(f for f in shared if shared[f] != other[f])
        if bad:
            raise ValueError(f"arm {name!r} differs from arm {names[0]!r} in {bad}: one batch can only vary "
                             f"{', '.join(ARM_FIELDS)}; generate those arms separately")
    if isinstance(prompt, dict):
        if set(prompt) != set(names):
            raise ValueError(f"per-arm prompts must name every arm once: arms {names}, prompts {list(prompt)}")
        prompts = dict(zip(names, _prepare(lm, [prompt[name] for name in names], attribute, cfg)))
        lengths = {name: len(p) for name, p in prompts.items()}
        if len(set(lengths.values())) > 1:
            raise ValueError(f"per-arm prompts must have the same number of tokens to share a batch, got {lengths}; "
                             "batch the prompts of each length separately")
    else:
        prompts = dict.fromkeys(names, _prepare(lm, [prompt], attribute, cfg)[0])
    seeds, row_ids, rows = [], [], {k: [] for k in ("stepsize", "kl_scale", "gm_scale")}
    for name in names:
        c = arms[name]
        seeds += [c.seed + i for i in range(c.num_samples)]
        row_ids += [prompts[name]] * c.num_samples
        for k, v in rows.items():
            v += [getattr(c, k)] * c.num_samples
    tokens, losses, fallbacks, seconds = _decode(lm, row_ids, attribute, cfg, seeds, rows["stepsize"],
                                                 rows["kl_scale"], rows["gm_scale"], attribute is not None, progress)
    out, start = {}, 0
    for name in names:
        stop = start + arms[name].num_samples
        part = tokens[start:stop]
        out[name] = Generation(prompt=prompts[name], tokens=part, texts=[lm.decode(row) for row in part.tolist()],
                               losses=[row[start:stop] for row in losses], fallbacks=int(fallbacks[start:stop].sum()),
                               seconds=seconds, perturbed=attribute is not None)
        start = stop
    return out


def _fuse_rows(p_pert: torch.Tensor, p_unpert: torch.Tensor, gm: list[float], top_k: int) -> torch.Tensor:
    """:func:`fuse` with one ``gm_scale`` per row, applied per group of equal values (a number exponent, so every
    row gets exactly what a batch of its own arm gets)."""
    if len(set(gm)) == 1:
        return fuse(p_pert, p_unpert, gm[0], top_k)
    out = torch.empty_like(p_pert)
    values = torch.tensor(gm, device=p_pert.device)
    for v in dict.fromkeys(gm):
        rows = values == v
        out[rows] = fuse(p_pert[rows], p_unpert[rows], v, top_k)
    return out


def _decode(lm: LM, row_ids: list[list[int]], attribute: AttributeModel | None, cfg: GenerateConfig,
            seeds: list[int], stepsize: list[float], kl_scale: list[float], gm_scale: list[float], perturb: bool,
            progress: bool):
    """The decoding loop shared by :func:`generate` and :func:`generate_arms`: one row per seed, with its own
    prompt (all of one length), step size, KL weight and fusion weight. Returns (tokens (B, length), per-token
    losses, fallbacks per row (B,), seconds)."""
    model, device = lm.model, lm.device
    B = len(seeds)
    uniforms = _uniforms(seeds, cfg.length, device) if cfg.sample else None
    needs_hidden = perturb and attribute.needs_hidden
    t0 = time.perf_counter()

    x = torch.tensor(row_ids, dtype=torch.long, device=device)                             # (B, P)
    logits, unpert_cache, hid = lm_forward(model, x, hidden=needs_hidden)
    unpert_logits = logits[:, -1].float()                                                   # (B, V)
    acc_hidden = hid[:, :-1].float().sum(1) if needs_hidden else None                        # positions 0..P-2
    last_hidden = hid[:, -1].float() if needs_hidden else None
    # the perturbed history starts as the unperturbed one without the last token (causal: identical values)
    past = [(k[..., :-1, :], v[..., :-1, :]) for k, v in cache_tensors(unpert_cache)] if perturb else None
    uniform_step = len(set(stepsize)) == 1 and len(set(kl_scale)) == 1
    if perturb and not uniform_step:
        dtype = past[0][0].dtype
        step_arg = torch.tensor(stepsize, dtype=dtype, device=device)
        kl_arg = torch.tensor(kl_scale, dtype=torch.float32, device=device)
    else:
        step_arg, kl_arg = stepsize[0], kl_scale[0]
    seen = torch.zeros(B, logits.shape[-1], dtype=torch.bool, device=device).scatter_(1, x, True) \
        if cfg.repetition_penalty != 1.0 else None
    grad_norms, out, losses = None, [], []
    fallbacks = torch.zeros(B, dtype=torch.long)
    bar = None
    if progress:
        from essence.core.progress import ProgressBar
        bar = ProgressBar(total=cfg.length, desc="pplm" if perturb else "plain", unit="tok").__enter__()
    try:
        for t in range(cfg.length):
            last = x[:, -1]
            p_unpert = _penalise(unpert_logits / cfg.temperature, seen, cfg.repetition_penalty).softmax(-1)
            if perturb:
                pert = past
                step_loss = torch.zeros(B)
                if past[0][0].shape[-2] > 0 and cfg.num_iterations > 0 and any(stepsize) and t < cfg.grad_length:
                    with torch.enable_grad():
                        pert, grad_norms, step_loss, ok = perturb_past(
                            lm, attribute, last, past, unpert_layers=cache_tensors(unpert_cache),
                            unpert_probs=unpert_logits.softmax(-1), acc_hidden=acc_hidden, grad_norms=grad_norms,
                            cfg=cfg, stepsize=step_arg, kl_scale=kl_arg)
                    if not uniform_step:    # a row with step size 0 reports no loss, as in a run of its own
                        step_loss = torch.where(step_arg == 0, 0.0, step_loss)
                    if not bool(ok.all()):
                        bad = (~ok).cpu()
                        fallbacks += bad.long()
                        warnings.warn(f"pplm: non-finite gradient at token {t} for {int(bad.sum())} sample(s); "
                                      "that token uses the unperturbed history", RuntimeWarning, stacklevel=3)
                losses.append([round(float(v), 5) for v in step_loss.cpu()])
                p_logits, new_cache, _ = lm_forward(model, last[:, None], cache=make_cache(pert))
                past = cache_tensors(new_cache)
                p_pert = _penalise(p_logits[:, -1].float() / cfg.temperature, seen, cfg.repetition_penalty).softmax(-1)
                probs = _fuse_rows(p_pert, p_unpert, gm_scale, cfg.top_k)
            else:
                lg = _penalise(unpert_logits / cfg.temperature, seen, cfg.repetition_penalty)
                probs = top_k_filter(lg, cfg.top_k, probs=False).softmax(-1)
            nxt = _choose(probs, uniforms[:, t] if uniforms is not None else None)           # (B,)
            out.append(nxt)
            x = torch.cat([x, nxt[:, None]], 1)
            if seen is not None:
                seen.scatter_(1, nxt[:, None], True)
            if t + 1 < cfg.length:     # advance the unperturbed cache by the chosen token
                logits, unpert_cache, hid = lm_forward(model, nxt[:, None], cache=unpert_cache, hidden=needs_hidden)
                unpert_logits = logits[:, -1].float()
                if needs_hidden:
                    acc_hidden = acc_hidden + last_hidden
                    last_hidden = hid[:, -1].float()
            if bar is not None:
                bar.update(1)
    finally:
        if bar is not None:
            bar.close()
    return torch.stack(out, 1), losses, fallbacks, time.perf_counter() - t0
