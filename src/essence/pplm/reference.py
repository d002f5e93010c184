"""The original PPLM algorithm, as ``run_pplm.py`` runs it, ported to the DynamicCache API: a test oracle and
the benchmark's baseline, not for use.

What it keeps from the official code (uber-research/PPLM, its transformers port): batch 1, samples one after
another; the **whole sequence re-run** through the LM every token for the unperturbed distribution (O(T^2));
the history for the first token recomputed from ``output_so_far[:, :-1]``; the accumulated perturbation kept as
numpy arrays on the CPU and moved back to the device every iteration; ``loss.backward()`` on fresh leaf tensors;
single-token bag-of-words as a one-hot matrix product. Written for essence from the paper card's description
(shared/papers/pplm.md); only the two deviations that essence documents are mirrored so that outputs can be
compared token for token: the window is the most recent positions and temperature applies to both
distributions.
"""

from __future__ import annotations

import numpy as np
import torch
import torch.nn.functional as F

from essence.pplm.attribute import SMALL, BagOfWords, Discriminator
from essence.pplm.config import GenerateConfig
from essence.pplm.generate import fuse, top_k_filter, window_mask
from essence.pplm.lm import LM, cache_tensors, lm_forward, make_cache

__all__ = ["reference_generate"]


def _perturb(lm: LM, past, last, unpert_past, unpert_logits, accumulated_hidden, grad_norms, cfg, bow_onehot,
             discrim, stepsize):
    device = last.device
    grad_accumulator = [(np.zeros(k.shape, dtype="float32"), np.zeros(v.shape, dtype="float32")) for k, v in past]
    curr_length = past[0][0].shape[-2]
    mask = window_mask(curr_length, cfg.window_length, cfg.decay, device=device).view(1, 1, -1, 1)
    loss_per_iter = []
    for _ in range(cfg.num_iterations):
        curr = [(torch.from_numpy(a).to(device).requires_grad_(True),
                 torch.from_numpy(b).to(device).requires_grad_(True)) for a, b in grad_accumulator]
        perturbed = make_cache([(k + a, v + b) for (k, v), (a, b) in zip(past, curr)])
        logits, cache, hidden = lm_forward(lm.model, last, cache=perturbed, hidden=discrim is not None)
        probs = F.softmax(logits[:, -1, :], dim=-1)
        loss = 0.0
        if bow_onehot is not None:
            loss = loss - torch.log(torch.sum(torch.mm(probs, bow_onehot.t())))
        if discrim is not None:
            new_acc = accumulated_hidden + torch.sum(hidden, dim=1).detach()
            curr_probs = probs.unsqueeze(1)
            wte = lm.model.get_input_embeddings()
            curr_unpert = make_cache(unpert_past)
            for _ in range(cfg.horizon_length):
                embeds = torch.matmul(curr_probs, wte.weight.data)
                h_logits, curr_unpert, h_hidden = lm_forward(lm.model, inputs_embeds=embeds, cache=curr_unpert,
                                                             hidden=True)
                new_acc = new_acc + torch.sum(h_hidden, dim=1)
                curr_probs = F.softmax(h_logits[:, -1:, :], dim=-1)
            prediction = discrim(new_acc / (curr_length + 1 + cfg.horizon_length))
            label = torch.tensor([discrim.class_label], device=device, dtype=torch.long)
            loss = loss + F.cross_entropy(prediction, label)
        if cfg.kl_scale > 0.0:
            up = F.softmax(unpert_logits[:, -1, :], dim=-1)
            up = up + SMALL * (up <= SMALL).float().detach()
            corrected = probs + (SMALL * (probs <= SMALL).float()).detach()
            loss = loss + cfg.kl_scale * (corrected * (corrected / up).log()).sum()
        loss_per_iter.append(float(loss.detach().cpu().numpy()))
        loss.backward()
        norms = [torch.sqrt(torch.norm(a.grad * mask) ** 2 + torch.norm(b.grad * mask) ** 2) for a, b in curr]
        if grad_norms is not None and bow_onehot is not None and discrim is None:
            grad_norms = [torch.max(grad_norms[i], n) for i, n in enumerate(norms)]
        else:
            grad_norms = [n + SMALL for n in norms]
        grad = [(-stepsize * (a.grad * mask / grad_norms[i] ** cfg.gamma).data.cpu().numpy(),
                 -stepsize * (b.grad * mask / grad_norms[i] ** cfg.gamma).data.cpu().numpy())
                for i, (a, b) in enumerate(curr)]
        grad_accumulator = [(ga + a, gb + b) for (ga, gb), (a, b) in zip(grad, grad_accumulator)]
        past = [(k.detach(), v.detach()) for k, v in past]
    pert = [(k + torch.from_numpy(a).to(device), v + torch.from_numpy(b).to(device))
            for (k, v), (a, b) in zip(past, grad_accumulator)]
    return pert, grad_norms, loss_per_iter


def reference_generate(lm: LM, prompt_ids: list[int], attribute=None, cfg: GenerateConfig | None = None, *,
                       perturb: bool = True, seed: int | None = None) -> list[int]:
    """One sample (batch 1), the original way. Greedy or sampled with the same inverse-CDF draw as essence
    (uniforms from ``torch.Generator().manual_seed(seed)``). Returns the generated token ids."""
    cfg = cfg or GenerateConfig()
    model, device = lm.model, lm.device
    bow_onehot = discrim = None
    if isinstance(attribute, BagOfWords):
        if attribute.n_multi:
            raise ValueError("the reference algorithm scores single-token words only (official behaviour)")
        vocab = model.get_output_embeddings().weight.shape[0]
        bow_onehot = torch.zeros(len(attribute.single_ids), vocab, device=device)
        bow_onehot[torch.arange(len(attribute.single_ids)), attribute.single_ids] = 1.0
    elif isinstance(attribute, Discriminator):
        discrim = attribute.to(device)
    perturb = perturb and attribute is not None
    uniforms = (torch.rand(cfg.length, generator=torch.Generator().manual_seed(cfg.seed if seed is None else seed),
                           dtype=torch.float64) if cfg.sample else None)
    output = torch.tensor([prompt_ids], dtype=torch.long, device=device)
    past, grad_norms, out = None, None, []
    for i in range(cfg.length):
        last = output[:, -1:]
        if past is None and output.shape[1] > 1:
            with torch.no_grad():
                _, c, _ = lm_forward(model, output[:, :-1])
            past = cache_tensors(c)
        with torch.no_grad():   # the official unperturbed pass: the whole sequence again
            unpert_logits, unpert_cache, unpert_hidden = lm_forward(model, output, hidden=discrim is not None)
        stepsize = cfg.stepsize if i < cfg.grad_length else 0.0
        pert_past = past
        if perturb and past is not None and cfg.num_iterations > 0 and stepsize != 0:
            acc = unpert_hidden[:, :-1, :].sum(1) if discrim is not None else None
            pert_past, grad_norms, _ = _perturb(lm, past, last, cache_tensors(unpert_cache), unpert_logits, acc,
                                                grad_norms, cfg, bow_onehot, discrim, stepsize)
        with torch.no_grad():
            logits, c, _ = lm_forward(model, last, cache=make_cache(pert_past) if pert_past is not None else None)
            past = cache_tensors(c)
            pert_logits = logits[:, -1, :] / cfg.temperature
            if perturb:
                probs = fuse(F.softmax(pert_logits, -1), F.softmax(unpert_logits[:, -1, :] / cfg.temperature, -1),
                             cfg.gm_scale, cfg.top_k)
            else:
                probs = F.softmax(top_k_filter(pert_logits, cfg.top_k, probs=False), -1)
            if uniforms is None:
                nxt = int(torch.argmax(probs, -1))
            else:
                cdf = probs.double().cumsum(-1)
                nxt = int(torch.searchsorted(cdf, (uniforms[i] * cdf[:, -1]).unsqueeze(-1)).clamp_max(
                    probs.shape[-1] - 1))
        out.append(nxt)
        output = torch.cat([output, torch.tensor([[nxt]], device=device)], 1)
    return out
