"""Fine-tuning (card §2.2-2.4, §3.1): in-batch negatives for bi / poly, sampled negatives for cross.

- bi / poly: B contexts and their B labels; every context is scored against every label of the batch
  (B - 1 negatives). Under torchrun the label vectors are gathered from all processes with
  ``all_gather_with_grad`` (``train.gather_negatives``), giving W * B - 1 negatives per context; gradients are
  then averaged by :func:`average_gradients` (one flat all-reduce) instead of DDP, see ``train()``.
- cross: each context with its gold label and ``train.cross_negatives`` labels sampled from the training set.
- Optimiser: Adamax (paper, Reddit init; Adam/AdamW with weight decay for BERT init) over two parameter groups:
  the pretrained transformer(s) at ``optim.lr`` and the new parameters (poly codes, attention maps, the
  cross-encoder's W) at ``optim.head_lr``; linear warm-up, then ``optim.schedule`` (constant, linear or cosine
  decay), and the learning rate is multiplied by ``optim.decay`` (0.4) whenever the validation R@1 does not
  improve for ``optim.patience`` evaluations.
- Validation (``train.eval_every`` > 0): R@1/20 on the validation split at step 0 (the pretrained weights) and
  every ``eval_every`` steps; with ``train.keep_best`` the run ends on the best validated weights, which may be
  step 0's (``checkpoints/best.safetensors``, what :func:`load_run` loads).
- Checkpoints (``checkpoints/step-N.safetensors``) hold model, optimiser, scheduler, RNG and plateau state;
  ``resume=True`` continues from the latest one exactly (the batch order is derived from the step).

The run directory also receives ``encoder/`` (tokenizer + transformer config), so that a trained run can be
rebuilt offline by :func:`load_run` without the original encoder directory.
"""

from __future__ import annotations

import json
import random
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

import torch

from essence.core import distributed as dist
from essence.core.checkpoint import latest_checkpoint, load_checkpoint, read_checkpoint, save_checkpoint
from essence.core.loop import GracefulInterrupt, Precision, build_scheduler, check_finite, should_run
from essence.core.progress import ProgressBar, console
from essence.core.runs import Run
from essence.core.runtime import seed_everything
from essence.polyencoder.config import ModelConfig, PolyEncoderConfig
from essence.polyencoder.data import DialoguePair, TextBatcher, candidate_sets, load_pairs
from essence.polyencoder.evaluate import evaluate_sets
from essence.polyencoder.loss import in_batch_loss, inline_loss
from essence.polyencoder.model import build_model

__all__ = ["train", "TrainResult", "load_run", "save_encoder_files", "average_gradients", "param_groups",
           "sample_negatives"]


@dataclass
class TrainResult:
    model: torch.nn.Module
    tokenizer: object
    config: PolyEncoderConfig
    step: int
    history: list[dict]
    best_step: int = -1        # with validation: the step whose weights the model holds (0: the pretrained ones)
    best_valid: float = -1.0   # its validation R@1/20


def save_encoder_files(model, tokenizer, folder: Path) -> None:
    """Tokenizer files and the transformer's config (layers already truncated), for :func:`load_run`."""
    folder.mkdir(parents=True, exist_ok=True)
    tokenizer.save_pretrained(str(folder))
    enc = model.encoder if model.architecture == "cross" else model.ctxt_encoder
    enc.transformer.config.save_pretrained(str(folder))


def load_run(path: str | Path, device: str | torch.device = "cpu"):
    """``(model, tokenizer, config, checkpoint_path)`` of a trained run directory or checkpoint file."""
    path = Path(path)
    if not path.exists():
        raise FileNotFoundError(f"model run not found: {path} (a run directory from `essence polyencoder train`)")
    run_dir = path if path.is_dir() else path.parent.parent
    ckpt_path = path
    if path.is_dir():  # the best validated weights when the run kept them, else the last checkpoint
        best = path / "checkpoints" / "best.safetensors"
        ckpt_path = best if best.exists() else latest_checkpoint(path / "checkpoints")
    if ckpt_path is None:
        raise FileNotFoundError(f"{path}: no checkpoint found (expected checkpoints/step-N.safetensors); "
                                f"train one with `essence polyencoder train`")
    meta = read_checkpoint(ckpt_path)
    if not meta.config or "model" not in meta.config:
        raise ValueError(f"{ckpt_path} is not a polyencoder checkpoint (no model config inside)")
    cfg = PolyEncoderConfig.from_dict(meta.config)
    encoder_dir = run_dir / "encoder"
    if not (encoder_dir / "config.json").exists():
        raise FileNotFoundError(f"{encoder_dir} is missing: the run directory is incomplete")
    mcfg = cfg.model.replace(encoder=str(encoder_dir), pretrained=False, num_layers=0)
    model, tokenizer = build_model(mcfg)
    load_checkpoint(ckpt_path, modules={"model": model}, restore_rng=False)
    return model.to(device).eval(), tokenizer, cfg, ckpt_path


def average_gradients(model: torch.nn.Module) -> None:
    """Mean of every parameter's gradient over the processes (one flat all-reduce), what DDP would do."""
    grads = [p.grad for p in model.parameters() if p.grad is not None]
    if not grads or not dist.is_distributed():
        return
    flat = dist.all_reduce(torch.cat([g.reshape(-1) for g in grads]), op="mean")
    offset = 0
    for g in grads:
        g.copy_(flat[offset:offset + g.numel()].view_as(g))
        offset += g.numel()


def _freeze_word_embeddings(model) -> None:
    for module in model.modules():
        if hasattr(module, "get_input_embeddings") and callable(module.get_input_embeddings):
            emb = module.get_input_embeddings()
            if emb is not None:
                emb.weight.requires_grad_(False)


ENCODER_PREFIXES = ("ctxt_encoder.", "cand_encoder.", "encoder.")


def param_groups(model, cfg: PolyEncoderConfig) -> list[dict]:
    """Two groups: the pretrained transformer(s) at ``optim.lr``, and the parameters that are new at fine-tuning
    (poly codes, attention maps, the cross-encoder's W) at ``optim.head_lr`` (0: ``optim.lr``)."""
    encoder, heads = [], []
    for name, p in model.named_parameters():
        if p.requires_grad:
            (encoder if name.startswith(ENCODER_PREFIXES) else heads).append(p)
    groups = [{"params": encoder, "lr": cfg.optim.lr, "name": "encoder"}]
    if heads:
        groups.append({"params": heads, "lr": cfg.optim.head_lr or cfg.optim.lr, "name": "heads"})
    return groups


def _optimizer(model, cfg: PolyEncoderConfig) -> torch.optim.Optimizer:
    o = cfg.optim
    cls = {"adamax": torch.optim.Adamax, "adam": torch.optim.Adam, "adamw": torch.optim.AdamW}[o.optimizer]
    return cls(param_groups(model, cfg), lr=o.lr, weight_decay=o.weight_decay)


def _batch_indices(step: int, n: int, batch: int, seed: int) -> list[int]:
    """Global batch ``step`` of an endless stream of seeded epoch permutations (resume-exact)."""
    start = step * batch
    out: list[int] = []
    while len(out) < batch:
        epoch, pos = divmod(start + len(out), n)
        perm = torch.randperm(n, generator=torch.Generator().manual_seed(seed * 100003 + epoch)).tolist()
        out += perm[pos:pos + batch - len(out)]
    return out


def _bi_poly_loss(model, batcher: TextBatcher, batch: Sequence[DialoguePair], device, gather: bool):
    net = model.module if hasattr(model, "module") else model
    c_ids, c_mask = batcher.contexts([p.context for p in batch])
    r_ids, r_mask = batcher.candidates([p.response for p in batch])
    # Route through the (possibly DDP-wrapped) module's forward so that DDP sees every parameter used.
    rep, rep_mask, cand = model(c_ids.to(device), c_mask.to(device), r_ids.to(device), r_mask.to(device))
    offset = 0
    if gather and dist.is_distributed():
        cand = dist.all_gather_with_grad(cand.contiguous())
        offset = dist.get_rank() * len(batch)
    scores = net.score(rep, rep_mask, cand)                               # (B, W * B)
    return in_batch_loss(scores, offset)


def sample_negatives(gold: str, pool: Sequence[str], k: int, rng: random.Random) -> list[str]:
    """``k`` responses of ``pool`` different from ``gold`` (drawn with replacement, as ParlAI's inline
    candidates). Raises ``ValueError`` when the pool holds no response other than ``gold`` (it would loop
    forever)."""
    if all(r == gold for r in pool):
        raise ValueError(f"cannot sample cross-encoder negatives: the training pool holds no response other than "
                         f"{gold[:60]!r}; give the training set at least two distinct responses")
    negs: list[str] = []
    while len(negs) < k:
        r = pool[rng.randrange(len(pool))]
        if r != gold:
            negs.append(r)
    return negs


def _cross_loss(model, batcher: TextBatcher, batch: Sequence[DialoguePair], pool: Sequence[str], k: int,
                rng: random.Random, device):
    ctxs, cands = [], []
    for p in batch:
        negs = sample_negatives(p.response, pool, k, rng)
        ctxs += [p.context] * (k + 1)
        cands += [p.response, *negs]
    ids, mask, seg = batcher.pairs(ctxs, cands)
    scores = model(ids.to(device), mask.to(device), seg.to(device)).view(len(batch), k + 1)
    return inline_loss(scores)


class _JointForward(torch.nn.Module):
    """bi / poly forward for DDP: (context tokens, label tokens) -> (ctxt rep, mask, label vectors)."""

    def __init__(self, ranker):
        super().__init__()
        self.ranker = ranker

    def forward(self, c_ids, c_mask, r_ids, r_mask):
        rep, rep_mask = self.ranker.encode_context(c_ids, c_mask)
        return rep, rep_mask, self.ranker.encode_candidates(r_ids, r_mask)

    def score(self, *args):
        return self.ranker.score(*args)


def train(cfg: PolyEncoderConfig, run: Run, *, device: str | torch.device = "auto", resume: bool = False,
          data: tuple[list, list, list] | None = None, model_and_tokenizer=None, desc: str = "train",
          ) -> TrainResult:
    """Fine-tune ``cfg.model.architecture`` on ``cfg.data``; checkpoints and metrics go to ``run``."""
    info = dist.init_distributed(device)
    device = info.device
    seed_everything(cfg.train.seed + info.rank)
    train_pairs, valid_pairs, _ = data if data is not None else load_pairs(cfg.data)
    model, tokenizer = model_and_tokenizer if model_and_tokenizer is not None else build_model(cfg.model)
    if cfg.optim.freeze_word_embeddings:
        _freeze_word_embeddings(model)
    model.to(device).train()
    batcher = TextBatcher(tokenizer, cfg.model.max_context_tokens, cfg.model.max_candidate_tokens)
    cross = model.architecture == "cross"
    wrapped = model if cross else _JointForward(model)
    # Gathered negatives put a collective (all_gather_with_grad's backward all-reduce) inside the backward pass;
    # mixed with DDP's asynchronous bucket all-reduces on the same process group it corrupts gradients (seen
    # with gloo), so that case averages the gradients by hand after backward instead of wrapping in DDP.
    manual_sync = dist.is_distributed() and not cross and cfg.train.gather_negatives
    if dist.is_distributed() and not manual_sync:
        wrapped = torch.nn.parallel.DistributedDataParallel(
            wrapped, device_ids=[device.index] if device.type == "cuda" else None)
    opt = _optimizer(model, cfg)
    sched = build_scheduler(opt, cfg.optim.schedule, cfg.train.steps, warmup_steps=cfg.optim.warmup_steps)
    prec = Precision(cfg.train.precision, device)
    run.record_precision(prec)
    state = {"best": -1.0, "best_step": -1, "bad_evals": 0, "decays": 0}
    start = 0
    run.save_config(cfg)
    if dist.is_main():
        save_encoder_files(model, tokenizer, run.dir / "encoder")
    best_path = run.checkpoints_dir / "best.safetensors"
    best_weights: dict[str, torch.Tensor] | None = None
    if resume:
        found = latest_checkpoint(run.checkpoints_dir)
        if found is not None:
            ck = load_checkpoint(found, modules={"model": model}, optimizers={"opt": opt},
                                 schedulers={"sched": sched}, scalers={"scaler": prec.scaler},
                                 map_location=device)
            start, state = ck.step, {**state, **dict(ck.state)}
            console.print(f"resumed from {found} (step {start})")
            if best_path.exists():
                best_weights = read_checkpoint(best_path).module_state("model")
    B = cfg.train.cross_batch_size if cross else cfg.train.batch_size
    W, rank = dist.get_world_size(), dist.get_rank()
    pool = sorted({p.response for p in train_pairs})
    history: list[dict] = []
    valid = None
    if cfg.train.eval_every and valid_pairs:
        n_valid = cfg.train.cross_valid_contexts if cross else cfg.train.valid_contexts
        valid = candidate_sets(valid_pairs, 20, max_contexts=n_valid, seed=cfg.data.seed + 1,
                               pool_size=max(4 * n_valid, 100))

    def save(step: int) -> None:
        if dist.is_main():
            save_checkpoint(run.checkpoints_dir / f"step-{step:06d}", modules={"model": model},
                            optimizers={"opt": opt}, schedulers={"sched": sched}, scalers={"scaler": prec.scaler},
                            step=step, config=cfg, state=state)

    def validate(step: int) -> float:
        """R@1/20 on the validation split; a new best is kept (in memory and as checkpoints/best)."""
        nonlocal best_weights
        res = evaluate_sets(model, batcher, valid[0], valid[1], device=device, bf16=prec.mode == "bf16")
        r1 = res["R@1/20"]
        if r1 > state["best"]:
            state.update(best=r1, best_step=step, bad_evals=0)
            if cfg.train.keep_best:
                best_weights = {k: v.detach().to("cpu", copy=True) for k, v in model.state_dict().items()}
                if dist.is_main():
                    save_checkpoint(best_path, modules={"model": model}, step=step, config=cfg,
                                    state={"valid_R@1/20": r1})
        else:
            state["bad_evals"] += 1
            if state["bad_evals"] > cfg.optim.patience:  # plateau: lr x decay (paper: 0.4)
                sched.base_lrs = [lr * cfg.optim.decay for lr in sched.base_lrs]
                state.update(bad_evals=0, decays=state["decays"] + 1)
        return r1

    if valid is not None and start == 0:
        # step 0 is a candidate: fine-tuning must beat the pretrained weights on validation to be kept
        r1 = validate(0)
        run.log(0, **{f"{desc}/valid_R@1/20": r1})
        history.append({"step": 0, "valid_R@1/20": r1})
    with GracefulInterrupt() as stop, ProgressBar(total=cfg.train.steps - start, desc=desc, unit="step") as bar:
        for step in range(start, cfg.train.steps):
            idx = _batch_indices(step, len(train_pairs), B * W, cfg.train.seed)[rank * B:(rank + 1) * B]
            batch = [train_pairs[i] for i in idx]
            with prec.autocast():
                if cross:
                    rng = random.Random(cfg.train.seed * 7919 + step * W + rank)
                    loss = _cross_loss(wrapped, batcher, batch, pool, cfg.train.cross_negatives, rng, device)
                else:
                    loss = _bi_poly_loss(wrapped, batcher, batch, device, cfg.train.gather_negatives)
            check_finite(loss, step)
            prec.backward(loss)
            if manual_sync:
                average_gradients(model)
            prec.step(opt, clip_norm=cfg.optim.clip_norm)
            sched.step()
            record = {"loss": float(loss.detach()), "lr": opt.param_groups[0]["lr"]}
            if valid is not None and should_run(step, cfg.train.eval_every, cfg.train.steps):
                record["valid_R@1/20"] = validate(step + 1)
                model.train()
            if should_run(step, cfg.train.log_every, cfg.train.steps) or "valid_R@1/20" in record:
                run.log(step + 1, **{f"{desc}/{k}": v for k, v in record.items()})
            history.append({"step": step + 1, **record})
            bar.update(1, loss=record["loss"])
            if should_run(step, cfg.train.checkpoint_every, cfg.train.steps) or step + 1 == cfg.train.steps \
                    or stop.requested:
                save(step + 1)
            if stop.requested:
                break
    model.eval()
    last = history[-1]["step"] if history else start
    if cfg.train.keep_best and best_weights is not None and state["best_step"] != last:
        model.load_state_dict(best_weights)   # the best validated weights (possibly the pretrained ones)
        console.print(f"{desc}: kept the weights of step {state['best_step']} (valid R@1/20 {state['best']:.3f})")
    if dist.is_main():
        (run.dir / "train_state.json").write_text(json.dumps({"step": last, **state}))
    return TrainResult(model, tokenizer, cfg, last, history, state.get("best_step", -1), state.get("best", -1.0))


def model_config_for(cfg: PolyEncoderConfig, **changes) -> PolyEncoderConfig:
    """``cfg`` with ``model`` fields replaced (a helper for reproduce and tests)."""
    return cfg.replace(model=ModelConfig.from_dict({**cfg.model.to_dict(), **changes}))
