"""Distillation (and plain MLM training of teachers / baselines): one loop, one CPU, one GPU or torchrun DDP.

    teacher_dir = train_teacher(cfg, run)               # MiniLM-L6 + MLM head, or a tiny BERT from scratch
    result = distill(cfg, run, teacher=teacher_dir)     # the triple loss; the student saved as DistilBertForMaskedLM

Per optimizer step: the step's length-bucketed global batch (deterministic from (seed, epoch)), cut into
processes x ``optim.accumulation`` chunks (chunk ``m * world + rank`` is this process's micro-batch ``m``, so
two processes compute what one process with accumulation 2 computes), each masked batch-wise (ceil 15% of its
real tokens, count^-0.7, 80/10/10) with a generator derived from (seed, step, chunk); teacher forward without
gradient, the triple loss, AdamW (betas 0.9/0.98, eps 1e-6), clipping at 5, linear warm-up over 5% then linear decay.
Checkpoints hold the student, AdamW, the schedule, the scaler and the step, so ``resume=`` continues exactly.
"""

from __future__ import annotations

import hashlib
import time
from dataclasses import dataclass, field
from pathlib import Path

import torch
from torch.nn.parallel import DistributedDataParallel

from essence.core import distributed as dist
from essence.core.checkpoint import latest_checkpoint, load_checkpoint, save_checkpoint, unwrap_model
from essence.core.loop import (
    GracefulInterrupt,
    Precision,
    accumulation_context,
    build_scheduler,
    check_finite,
    should_run,
)
from essence.core.progress import ProgressBar, console
from essence.core.runs import Run
from essence.core.runtime import default_num_threads, seed_everything
from essence.distilbert.config import DistilConfig, LossConfig
from essence.distilbert.data import (
    Corpus,
    bucketed_batches,
    load_corpus,
    mask_tokens,
    pad_batch,
    step_generator,
    token_probs,
)
from essence.distilbert.loss import mlm_loss, triple_loss
from essence.distilbert.model import (
    MaskedPositionsMLM,
    load_teacher,
    minilm_bert,
    save_model,
    student_from_teacher,
    tiny_bert,
)

__all__ = ["Distiller", "TeacherCache", "DistillResult", "distill", "train_teacher", "corpus_for", "train_mlm"]


class TeacherCache:
    """The frozen teacher's last hidden layer, remembered by the batch it was computed on.

    Distillation runs that feed the same masked batches to the same teacher (Table 4's arms at one seed) need
    the teacher's encoder only once between them: later runs read its output here and apply only the prediction
    head, which gives the same logits. ``cache = TeacherCache(teacher); distill(cfg, teacher=teacher,
    teacher_cache=cache)`` for each arm. Entries are keyed by the batch's contents (input ids, attention mask)
    and the autocast state, so a run with other batches or another precision just misses; once ``max_bytes`` are
    held, misses are computed and not stored. The teacher must stay frozen while the cache is used.
    """

    def __init__(self, teacher: torch.nn.Module, max_bytes: int = 1 << 30):
        if max_bytes < 0:
            raise ValueError(f"max_bytes must be >= 0, got {max_bytes}")
        self.teacher, self.max_bytes = teacher, max_bytes
        self.bytes = self.hits = self.misses = 0
        self._store: dict[bytes, torch.Tensor] = {}

    def _key(self, ids: torch.Tensor, attention: torch.Tensor) -> bytes:
        kind = ids.device.type
        amp = (torch.is_autocast_enabled(kind), str(torch.get_autocast_dtype(kind)))
        h = hashlib.blake2b(repr((tuple(ids.shape), amp)).encode(), digest_size=20)
        h.update(ids.detach().cpu().numpy().tobytes())
        h.update(attention.detach().cpu().numpy().tobytes())
        return h.digest()

    @torch.no_grad()
    def hidden(self, ids: torch.Tensor, attention: torch.Tensor) -> torch.Tensor:
        """The teacher's last hidden layer for this batch (computed now, or remembered)."""
        key = self._key(ids, attention)
        found = self._store.get(key)
        if found is not None:
            self.hits += 1
            return found
        self.misses += 1
        out = _teacher_encoder(self.teacher)(input_ids=ids, attention_mask=attention).last_hidden_state
        size = out.numel() * out.element_size()
        if self.bytes + size <= self.max_bytes:
            self._store[key] = out
            self.bytes += size
        return out


def _teacher_encoder(teacher: torch.nn.Module) -> torch.nn.Module:
    return unwrap_model(teacher).bert


class Distiller:
    """The triple loss for one batch: ``Distiller(student, teacher, LossConfig()).losses(ids, attention, labels)``.

    ``teacher=None`` trains ``student`` with the MLM loss alone (teachers, the MLM-only baseline). The teacher
    (a ``BertForMaskedLM``) runs as its encoder and then its prediction head, only where a loss reads it (no
    head without ``L_ce``); ``cache`` (a :class:`TeacherCache` of this teacher) shares the encoder's output
    between runs on the same batches.
    """

    def __init__(self, student: torch.nn.Module, teacher: torch.nn.Module | None = None,
                 loss: LossConfig | None = None, cache: TeacherCache | None = None):
        self.student, self.teacher = student, teacher
        self.masked_rows = isinstance(unwrap_model(student), MaskedPositionsMLM)   # logits of the masked rows only
        self.loss = loss or LossConfig()
        if cache is not None and cache.teacher is not teacher:
            raise ValueError("the TeacherCache belongs to another teacher")
        self.cache = cache
        if teacher is None:
            self.loss = self.loss.replace(alpha_ce=0.0, alpha_cos=0.0, alpha_mlm=self.loss.alpha_mlm or 1.0)
        else:
            t_cfg, s_cfg = unwrap_model(teacher).config, unwrap_model(student).config
            if t_cfg.vocab_size != s_cfg.vocab_size:
                raise ValueError(f"teacher and student vocabularies differ ({t_cfg.vocab_size} vs "
                                 f"{s_cfg.vocab_size}); distillation needs the same vocabulary")
            teacher.eval()
            for p in teacher.parameters():
                p.requires_grad_(False)

    def losses(self, ids: torch.Tensor, attention: torch.Tensor, labels: torch.Tensor
               ) -> tuple[torch.Tensor, dict[str, torch.Tensor]]:
        c = self.loss
        if self.masked_rows:   # MLM alone
            logits, targets = self.student(ids, attention, labels)
            mlm = mlm_loss(logits, targets)
            return c.alpha_mlm * mlm, {"mlm": mlm}
        t_logits = t_hidden = None
        if self.teacher is not None and (c.alpha_ce > 0 or c.alpha_cos > 0):
            with torch.no_grad():   # BertForMaskedLM's forward, in its two parts
                t_hidden = (self.cache.hidden(ids, attention) if self.cache is not None else
                            _teacher_encoder(self.teacher)(input_ids=ids, attention_mask=attention).last_hidden_state)
                t_logits = unwrap_model(self.teacher).cls(t_hidden) if c.alpha_ce > 0 else None
        s = self.student(input_ids=ids, attention_mask=attention, output_hidden_states=c.alpha_cos > 0)
        return triple_loss(s.logits, s.hidden_states[-1] if c.alpha_cos > 0 else None, labels, attention,
                           t_logits=t_logits, t_hidden=t_hidden, alpha_ce=c.alpha_ce, alpha_mlm=c.alpha_mlm,
                           alpha_cos=c.alpha_cos, temperature=c.temperature,
                           restrict_ce_to_mask=c.restrict_ce_to_mask)


@dataclass
class DistillResult:
    model: torch.nn.Module
    step: int
    history: list[dict] = field(default_factory=list)
    checkpoint: Path | None = None
    seconds: float = 0.0
    tokens_per_s: float = 0.0
    output: Path | None = None               # the saved Hugging Face directory


def corpus_for(cfg: DistilConfig, vocab: list[str] | None = None, tokenizer: str | Path | None = None) -> Corpus:
    """The configured corpus, tokenised with ``tokenizer`` (a directory: a teacher's own tokenizer) or else the
    MiniLM uncased WordPiece tokenizer, and mapped onto ``vocab`` by piece when given."""
    import os

    os.environ.setdefault("HF_HUB_OFFLINE", "1")
    from transformers import AutoTokenizer

    from essence.pretrained.minilm import minilm_dir

    tok = AutoTokenizer.from_pretrained(str(tokenizer or minilm_dir()))
    d = cfg.data
    return load_corpus(d.corpus, tok, max_len=d.max_len, min_len=d.min_len, heldout_fraction=d.heldout_fraction,
                       limit=d.limit, heldout_limit=d.heldout_limit, vocab=vocab)


def _loop(model, teacher, corpus: Corpus, cfg: DistilConfig, loss: LossConfig, *, steps: int, lr: float,
          smoothing: float, run: Run | None, device, resume, progress: bool, tag: str, state: dict,
          teacher_cache: TeacherCache | None = None) -> DistillResult:
    info = dist.init_distributed(device)
    dev, world, rank = info.device, info.world_size, info.rank
    torch.set_num_threads(cfg.train.threads or default_num_threads())
    o, d = cfg.optim, cfg.data
    if o.batch_size % (world * o.accumulation):
        raise ValueError(f"optim.batch_size ({o.batch_size}) must be divisible by processes x accumulation "
                         f"({world} x {o.accumulation})")
    lengths = [len(s) for s in corpus.train]
    per_epoch = len(lengths) // o.batch_size
    if per_epoch < 1:
        raise ValueError(f"optim.batch_size ({o.batch_size}) is larger than the corpus ({len(lengths)} sequences)")
    if max(lengths) > unwrap_model(model).config.max_position_embeddings:
        raise ValueError(f"sequences of {max(lengths)} tokens exceed the model's position limit; lower data.max_len")
    model = model.to(dev)
    if teacher is not None:
        teacher = teacher.to(dev)
    optimizer = torch.optim.AdamW([p for p in model.parameters() if p.requires_grad], lr=lr, betas=o.betas,
                                  eps=o.eps, weight_decay=o.weight_decay)
    scheduler = build_scheduler(optimizer, "linear", steps, warmup_steps=int(round(o.warmup_prop * steps)))
    prec = Precision(cfg.train.precision, dev)
    if run is not None:
        run.record_precision(prec, quiet=True)
    start = 0
    if resume is not None:
        path = Path(resume)
        found = latest_checkpoint(path) if path.is_dir() else path
        if found is None:
            raise FileNotFoundError(f"no checkpoint to resume from in {path}")
        start = load_checkpoint(found, modules={"student": model}, optimizers={"adamw": optimizer},
                                schedulers={"lr": scheduler}, scalers={"amp": prec.scaler}, map_location=dev).step
    net = MaskedPositionsMLM(model) if teacher is None else model   # MLM alone: the head at masked rows only
    if world > 1:
        net = DistributedDataParallel(net, device_ids=[dev.index] if dev.type == "cuda" else None)
    distiller = Distiller(net, teacher, loss, teacher_cache if teacher is not None else None)
    probs = token_probs(corpus.counts, smoothing, corpus.special_ids)
    vocab_size = len(corpus.vocab)
    micro = o.batch_size // world // o.accumulation
    history: list[dict] = []
    last_ckpt = None
    tokens = 0
    t0 = time.perf_counter()
    epoch_cache: dict[int, list[list[int]]] = {}

    def save(step):
        if run is None or not dist.is_main():
            return None
        return save_checkpoint(run.checkpoints_dir / tag / f"step-{step:06d}", modules={"student": model},
                               optimizers={"adamw": optimizer}, schedulers={"lr": scheduler},
                               scalers={"amp": prec.scaler}, step=step, config=cfg, state=state)

    net.train()
    done = start
    with GracefulInterrupt() as stop, ProgressBar(steps - start, desc=tag, unit="step",
                                                  disable=None if progress else True) as bar:
        for step in range(start, steps):
            epoch = step // per_epoch
            if epoch not in epoch_cache:
                epoch_cache.clear()
                epoch_cache[epoch] = bucketed_batches(lengths, o.batch_size, seed=cfg.train.seed, epoch=epoch,
                                                      bucket=d.bucket)
            rows = epoch_cache[epoch][step % per_epoch]
            parts_sum: dict[str, float] = {}
            total_loss = 0.0
            for m in range(o.accumulation):
                j = m * world + rank           # chunk j of the global batch: one process with accumulation
                seqs = [corpus.train[i] for i in rows[j * micro:(j + 1) * micro]]   # = DDP, same draws
                ids, att = pad_batch(seqs, corpus.pad_id)
                gen = step_generator(cfg.train.seed, step, j)
                ids, labels = mask_tokens(ids, att, probs, mask_id=corpus.mask_id, vocab_size=vocab_size,
                                          mask_prop=d.mlm_mask_prop, pred_probs=(d.word_mask, d.word_keep,
                                                                                 d.word_rand), generator=gen)
                ids, att, labels = ids.to(dev), att.to(dev), labels.to(dev)
                with accumulation_context(net, m, o.accumulation), prec.autocast():
                    total, parts = distiller.losses(ids, att, labels)
                    prec.backward(total / o.accumulation)
                total_loss += float(total.detach()) / o.accumulation
                for k, v in parts.items():
                    parts_sum[k] = parts_sum.get(k, 0.0) + float(v.detach()) / o.accumulation
                tokens += int(att.sum())
            check_finite(total_loss, step, "lower optim.lr")
            prec.step(optimizer, clip_norm=o.clip_norm)
            scheduler.step()
            done = step + 1
            if should_run(step, cfg.train.log_every, steps):
                stats = dist.reduce_dict({"loss": total_loss, **parts_sum})
                rec = {"phase": tag, "step": done, "lr": scheduler.get_last_lr()[0], **stats}
                history.append(rec)
                if run is not None:
                    run.log(**rec)
            bar.update(1, loss=f"{total_loss:.3f}")
            if should_run(step, cfg.train.ckpt_every, steps) or stop.requested:
                last_ckpt = save(done) or last_ckpt
            if stop.requested:
                break
    seconds = time.perf_counter() - t0
    return DistillResult(model=model, step=done, history=history, checkpoint=last_ckpt, seconds=seconds,
                         tokens_per_s=tokens * world / max(seconds, 1e-9))


def train_mlm(model, corpus: Corpus, cfg: DistilConfig, *, steps: int, lr: float, smoothing: float = 0.0,
              run: Run | None = None, device="auto", progress: bool = True, tag: str = "mlm") -> DistillResult:
    """Plain MLM training (uniform 15% masking by default, as BERT): teachers and the MLM-only student."""
    return _loop(model, None, corpus, cfg, LossConfig(alpha_ce=0.0, alpha_mlm=1.0, alpha_cos=0.0), steps=steps,
                 lr=lr, smoothing=smoothing, run=run, device=device, resume=None, progress=progress, tag=tag,
                 state={})


def train_teacher(cfg: DistilConfig, run: Run | None = None, *, device="auto", out: str | Path | None = None,
                  progress: bool = True, corpus: Corpus | None = None) -> tuple[Path | None, torch.nn.Module,
                                                                                Corpus]:
    """Build and MLM-train the configured teacher; save it as a ``BertForMaskedLM`` directory.

    Returns (directory or None, model, corpus).
    """
    seed_everything(cfg.train.seed)
    corpus = corpus or corpus_for(cfg)
    t = cfg.teacher
    if t.kind == "minilm":
        model = minilm_bert(corpus.vocab, seed=cfg.train.seed)
    else:
        model = tiny_bert(len(corpus.vocab), layers=t.layers, dim=t.dim, heads=t.heads, ffn=t.ffn,
                          max_len=max(cfg.data.max_len, 64), seed=cfg.train.seed)
    res = train_mlm(model, corpus, cfg, steps=t.steps, lr=t.lr, run=run, device=device, progress=progress,
                    tag="teacher")
    model = res.model.cpu().eval()
    folder = Path(out) if out else (run.dir / "teacher" if run is not None else None)
    if folder is not None and dist.is_main():
        save_model(model, folder, corpus.vocab)
    return folder, model, corpus


def distill(cfg: DistilConfig, run: Run | None = None, *, teacher: str | Path | torch.nn.Module | None = None,
            device="auto", resume: str | Path | None = None, progress: bool = True, corpus: Corpus | None = None,
            out: str | Path | None = None, tag: str = "distill", teacher_cache: TeacherCache | None = None
            ) -> DistillResult:
    """Distil ``teacher`` (a BertForMaskedLM directory or model; default: ``cfg.teacher.path``, else a teacher
    trained now) into a half-depth DistilBERT student, saved to ``out`` (default ``run/student``).
    ``teacher_cache``: a :class:`TeacherCache` of this teacher (model) object, shared between runs."""
    seed_everything(cfg.train.seed)
    teacher = teacher if teacher is not None else cfg.teacher.path
    if teacher is None:
        teacher_dir, teacher, corpus = train_teacher(cfg, run, device=device, progress=progress, corpus=corpus)
        teacher = teacher_dir if teacher_dir is not None else teacher
    if isinstance(teacher, (str, Path)):
        teacher_dir = Path(teacher)
        t_model, vocab = load_teacher(teacher_dir)
    else:
        teacher_dir, t_model, vocab = None, teacher, None
    if corpus is None:
        own = teacher_dir is not None and any((teacher_dir / f).exists() for f in ("tokenizer.json",
                                                                                   "tokenizer_config.json"))
        corpus = corpus_for(cfg, vocab, teacher_dir if own else None)
    s = cfg.student
    student = student_from_teacher(t_model, layers=s.layers, n_layers=s.n_layers, init=s.init,
                                   fold_token_type=s.fold_token_type, seed=cfg.train.seed)
    if dist.is_main() and progress:
        console.print(f"distilbert: student layers <- teacher layers {student.config.teacher_layers} "
                      f"({s.init} init)", highlight=False)
    state = {"teacher": str(teacher_dir) if teacher_dir else None}
    loss = cfg.loss
    teacher_model = t_model if (loss.alpha_ce > 0 or loss.alpha_cos > 0) else None
    res = _loop(student, teacher_model, corpus, cfg, loss, steps=cfg.train.steps, lr=cfg.optim.lr,
                smoothing=cfg.data.mlm_smoothing, run=run, device=device, resume=resume, progress=progress,
                tag=tag, state=state, teacher_cache=teacher_cache)
    res.model = res.model.cpu().eval()
    folder = Path(out) if out else (run.dir / "student" if run is not None else None)
    if folder is not None and dist.is_main():
        res.output = save_model(res.model, folder, corpus.vocab)
    return res
