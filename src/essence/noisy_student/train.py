"""The Noisy Student loop (Xie et al. 2019, Algorithm 1): teacher -> pseudo labels -> noised student -> repeat.

    result = train(PRESETS.build("quick"), Run.create("noisy-student", "quick"))

Generation 0 is the teacher, trained on the labeled images only (with the same noise as the students when
``loop.teacher_noise``, as Algorithm 1 writes it). Generation g >= 1: the previous generation, **un-noised** (eval
mode), labels the unlabeled images (:func:`essence.noisy_student.pseudo.pseudo_label`), the labels are filtered and
balanced, and a fresh student of width ``loop.student_width[g-1]`` trains from scratch on labeled + pseudo-labeled
batches with RandAugment, dropout and stochastic depth. Each step draws ``optim.batch_size`` labeled and
``optim.unlabeled_ratio`` times as many pseudo-labeled images.

Files in the run directory: ``checkpoints/gen<g>/step-*.safetensors`` inside a generation (model, optimizer,
schedule, step), ``generations/gen<g>.safetensors`` (the finished model of generation g, its size and test
accuracy) and ``generations/pseudo<g>.safetensors`` (the labels student g trained on, with their provenance).
Every random draw of a step comes from (seed, generation, step), so ``resume=`` continues inside a generation or
at the next one exactly as an uninterrupted run would.
"""

from __future__ import annotations

import time
import warnings
import zlib
from dataclasses import dataclass, field
from pathlib import Path

import torch
from torch.nn.parallel import DistributedDataParallel

from essence.core import distributed as dist
from essence.core.checkpoint import (
    latest_checkpoint,
    load_checkpoint,
    read_checkpoint,
    save_checkpoint,
    unwrap_model,
)
from essence.core.loop import GracefulInterrupt, Precision, build_scheduler, check_finite, should_run
from essence.core.progress import ProgressBar, console
from essence.core.runs import Run
from essence.core.runtime import default_num_threads
from essence.noisy_student.config import NoiseConfig, NoisyStudentConfig
from essence.noisy_student.data import SemiSupervisedData, load_data, normalize
from essence.noisy_student.loss import noisy_student_loss
from essence.noisy_student.model import build_model, check_student_size
from essence.noisy_student.pseudo import PseudoLabels, pseudo_label
from essence.noisy_student.randaugment import rand_augment

__all__ = ["train", "train_generation", "make_pseudo_labels", "NoisyStudentResult", "GenerationResult",
           "step_seed", "stream_indices", "load_generation", "save_pseudo_labels", "load_pseudo_labels"]


@dataclass
class GenerationResult:
    generation: int
    model: torch.nn.Module
    steps: int
    width: float
    depth: float
    history: list[dict] = field(default_factory=list)
    seconds: float = 0.0
    images_per_s: float = 0.0
    pseudo: dict | None = None           # pseudo-label statistics (students only)
    cpu_seconds: float = 0.0             # process CPU time (all threads): wall time on an idle machine ~ this / cores


@dataclass
class NoisyStudentResult:
    generations: list[GenerationResult]
    seconds: float = 0.0

    @property
    def models(self) -> list[torch.nn.Module]:
        return [g.model for g in self.generations]


def step_seed(seed: int, generation: int, step: int, stream: str = "") -> int:
    """A stable 62-bit seed for one (seed, generation, step, stream): the draws of a step after a resume."""
    return (seed * 1_000_003 + zlib.crc32(f"{generation}/{step}/{stream}".encode())) % (2**62)


def stream_indices(n: int, batch: int, step: int, key: int) -> torch.Tensor:
    """Indices of batch ``step`` from an endless stream of fresh permutations of range(n) (one per epoch)."""
    if n <= 0:
        raise ValueError("cannot draw a batch from an empty set")
    start = step * batch
    out = []
    pos = start
    while pos < start + batch:
        epoch, offset = divmod(pos, n)
        perm = torch.randperm(n, generator=torch.Generator().manual_seed((key + 7919 * epoch) % (2**62)))
        take = min(n - offset, start + batch - pos)
        out.append(perm[offset:offset + take])
        pos += take
    return torch.cat(out)


def _noise_for(cfg: NoisyStudentConfig, generation: int) -> NoiseConfig:
    return cfg.noise if generation > 0 or cfg.loop.teacher_noise else cfg.noise.off()


def _size_for(cfg: NoisyStudentConfig, generation: int) -> tuple[float, float]:
    return (1.0, 1.0) if generation == 0 else (cfg.loop.width(generation), cfg.loop.depth(generation))


def make_pseudo_labels(teacher: torch.nn.Module, data: SemiSupervisedData, cfg: NoisyStudentConfig, generation: int,
                       *, precision=None, device=None) -> PseudoLabels:
    """Labels for student ``generation`` from ``teacher`` (un-noised, eval mode), filtered and balanced."""
    pc = cfg.pseudo
    return pseudo_label(teacher, data.unlabeled_x, label_type=pc.label_type, temperature=pc.temperature,
                        threshold=pc.threshold, per_class=pc.per_class, balance=pc.balance, upsample=pc.upsample,
                        seed=step_seed(cfg.train.seed, generation, 0, "balance"), batch_size=cfg.eval.batch_size,
                        precision=precision, device=device)


def save_pseudo_labels(path: Path, pseudo: PseudoLabels, *, generation: int, cfg: NoisyStudentConfig) -> Path:
    return save_checkpoint(path, tensors={"index": pseudo.index, "targets": pseudo.targets,
                                          "confidence": pseudo.confidence, "predicted": pseudo.predicted},
                           step=0, config=cfg, rng=False,
                           state={"generation": generation, "teacher_generation": generation - 1,
                                  "label_type": pseudo.label_type, "temperature": cfg.pseudo.temperature,
                                  "threshold": cfg.pseudo.threshold, "balance": cfg.pseudo.balance,
                                  "stats": pseudo.stats()})


def load_pseudo_labels(path: str | Path) -> PseudoLabels:
    ck = read_checkpoint(path)
    t = ck.tensors
    missing = [k for k in ("index", "targets", "confidence", "predicted") if k not in t]
    if missing:
        raise ValueError(f"{ck.path} is not a pseudo-label file (no {missing})")
    return PseudoLabels(index=t["index"].long(), targets=t["targets"].float(), confidence=t["confidence"].float(),
                        predicted=t["predicted"].long(), label_type=ck.state.get("label_type", "soft"))


def _param_groups(model: torch.nn.Module, weight_decay: float) -> list[dict]:
    decay, no_decay = [], []
    for p in model.parameters():
        (no_decay if p.ndim <= 1 else decay).append(p)      # no weight decay on BN and biases (official)
    return [{"params": decay, "weight_decay": weight_decay}, {"params": no_decay, "weight_decay": 0.0}]


def train_generation(cfg: NoisyStudentConfig, data: SemiSupervisedData, generation: int, *,
                     pseudo: PseudoLabels | None = None, run: Run | None = None, device: torch.device | str = "cpu",
                     resume: str | Path | None = None, noise: NoiseConfig | None = None,
                     width: float | None = None, depth: float | None = None, steps: int | None = None,
                     seed: int | None = None, progress: bool = True, name: str | None = None,
                     stop_at: int | None = None) -> GenerationResult:
    """Train one network: the teacher (``generation`` 0, labeled data only) or a student (``pseudo`` given).

    Args:
        cfg: the resolved config (noise, sizes and steps default to what it sets for ``generation``).
        data: labeled / unlabeled / test images.
        generation: 0 for the teacher, g >= 1 for students.
        pseudo: the student's pseudo labels (required for g >= 1).
        run: where checkpoints go (``checkpoints/<name>/``); None writes nothing.
        resume: a checkpoint (or folder) of this generation to continue from.
        noise, width, depth, steps, seed: overrides for ablations (default: from ``cfg``).
        stop_at: stop (and checkpoint) after this many steps: simulates an interruption in tests.
    """
    if generation > 0 and pseudo is None:
        raise ValueError("a student (generation >= 1) needs pseudo labels")
    dev = torch.device(device)
    world, rank = dist.get_world_size(), dist.get_rank()
    noise = noise if noise is not None else _noise_for(cfg, generation)
    w0, d0 = _size_for(cfg, generation)
    width, depth = width if width is not None else w0, depth if depth is not None else d0
    seed = cfg.train.seed if seed is None else seed
    total = steps if steps is not None else (cfg.optim.teacher_steps if generation == 0 else cfg.optim.student_steps)
    name = name or f"gen{generation}"
    B = cfg.optim.batch_size
    Bu = B * cfg.optim.unlabeled_ratio if generation > 0 else 0
    if B % world or Bu % world:
        raise ValueError(f"optim.batch_size ({B}) and its unlabeled batch ({Bu}) must be divisible by the number of "
                         f"processes ({world})")
    if generation > 0 and data.unlabeled_x.shape[0] < Bu:
        raise ValueError(f"the unlabeled set ({data.unlabeled_x.shape[0]} images) is smaller than one unlabeled "
                         f"batch ({Bu} = {cfg.optim.unlabeled_ratio} x {B}); lower optim.unlabeled_ratio or "
                         "optim.batch_size")
    if generation > 0 and Bu > pseudo.index.numel():
        warnings.warn(f"only {pseudo.index.numel()} pseudo-labeled images passed the filter, fewer than one "
                      f"unlabeled batch ({Bu}): they repeat within a batch", stacklevel=2)
    torch.manual_seed(step_seed(seed, generation, -1, "init"))
    model = build_model(cfg.model, width=width, depth=depth, dropout=noise.dropout,
                        stochastic_depth=noise.stochastic_depth).to(dev)
    model = model.to(memory_format=torch.channels_last)
    optimizer = torch.optim.SGD(_param_groups(model, cfg.optim.weight_decay), lr=cfg.optim.lr,
                                momentum=cfg.optim.momentum, nesterov=True)
    scheduler = build_scheduler(optimizer, "cosine", total, warmup_steps=cfg.optim.warmup_steps)
    prec = Precision(cfg.train.precision, dev)
    start = 0
    if resume is not None:
        path = Path(resume)
        found = latest_checkpoint(path) if path.is_dir() else path
        if found is None:
            raise FileNotFoundError(f"no checkpoint to resume from in {path}")
        ck = load_checkpoint(found, modules={"model": model}, optimizers={"sgd": optimizer},
                             schedulers={"lr": scheduler}, scalers={"amp": prec.scaler}, map_location=dev)
        start = ck.step
    net = model
    if world > 1:
        net = DistributedDataParallel(model, device_ids=[dev.index] if dev.type == "cuda" else None)
    lab_x, lab_y = data.labeled_x.to(dev), data.labeled_y.to(dev)
    unl_x = data.unlabeled_x.to(dev) if generation > 0 else None
    if generation > 0:
        u_index, u_targets = pseudo.index.to(dev), pseudo.targets.to(dev)
    ckpt_dir = run.checkpoints_dir / name if run is not None else None
    history: list[dict] = []
    t0, c0 = time.perf_counter(), time.process_time()
    done = start

    def save(step: int) -> None:
        if ckpt_dir is not None and dist.is_main():
            save_checkpoint(ckpt_dir / f"step-{step:06d}", modules={"model": model}, optimizers={"sgd": optimizer},
                            schedulers={"lr": scheduler}, scalers={"amp": prec.scaler}, step=step, config=cfg,
                            state={"generation": generation, "width": width, "depth": depth, "name": name})

    def augment(x_u8: torch.Tensor, step: int, stream: str) -> torch.Tensor:
        x = x_u8.float().div_(255)
        if noise.randaug:
            gen = torch.Generator().manual_seed(step_seed(seed, generation, step, stream))
            x = rand_augment(x, noise.randaug_n, noise.randaug_m, generator=gen,
                             translate_const=noise.translate_const or None, cutout_const=noise.cutout_const or None,
                             fill=noise.fill)
        return normalize(x).contiguous(memory_format=torch.channels_last)

    net.train()
    total_run = (stop_at if stop_at is not None else total) - start
    with GracefulInterrupt() as stop, ProgressBar(max(total_run, 0), desc=f"noisy-student {name}", unit="step",
                                                  disable=None if progress else True) as bar:
        for step in range(start, total if stop_at is None else min(total, stop_at)):
            li = stream_indices(lab_x.shape[0], B, step, step_seed(seed, generation, 0, "labeled"))[rank::world]
            xl = augment(lab_x[li.to(dev)], step, f"aug-l{rank}")
            if generation > 0:
                ui = stream_indices(u_index.numel(), Bu, step, step_seed(seed, generation, 0, "unlabeled"))
                rows = u_index[ui[rank::world].to(dev)]
                xu = augment(unl_x[rows], step, f"aug-u{rank}")
                x = torch.cat([xl, xu])
            else:
                x = xl
            torch.manual_seed(step_seed(seed, generation, step, f"model{rank}"))   # dropout / stochastic depth
            with prec.autocast():
                logits = net(x)
            n_l = xl.shape[0]
            loss, parts = noisy_student_loss(
                logits[:n_l], lab_y[li.to(dev)], logits[n_l:] if generation > 0 else None,
                u_targets[rows] if generation > 0 else None, label_type=cfg.pseudo.label_type,
                unlabeled_ratio=cfg.optim.unlabeled_ratio, label_smoothing=cfg.optim.label_smoothing)
            check_finite(loss, step, "lower optim.lr")
            prec.backward(loss)
            prec.step(optimizer)
            scheduler.step()
            done = step + 1
            if should_run(step, cfg.train.log_every, total):
                rec = {"generation": generation, "name": name, "lr": scheduler.get_last_lr()[0],
                       **dist.reduce_dict({"loss": loss.detach(), **parts})}
                history.append({"step": done, **rec})
                if run is not None:
                    run.log(step=done, **rec)
            bar.update(1, loss=f"{float(loss.detach()):.3f}")
            if should_run(step, cfg.train.ckpt_every, total) or stop.requested or done == stop_at:
                save(done)
            if stop.requested:
                break
    seconds = time.perf_counter() - t0
    imgs = (B + Bu) * max(done - start, 0)
    return GenerationResult(generation=generation, model=model, steps=done, width=width, depth=depth,
                            history=history, seconds=seconds, images_per_s=imgs / max(seconds, 1e-9),
                            pseudo=pseudo.stats() if pseudo is not None else None,
                            cpu_seconds=time.process_time() - c0)


def _generation_file(run: Run, g: int) -> Path:
    return run.dir / "generations" / f"gen{g}.safetensors"


def load_generation(path: str | Path, *,
                    device: torch.device | str = "cpu") -> tuple[torch.nn.Module, NoisyStudentConfig, dict]:
    """Rebuild a finished generation's model (eval-ready) from ``generations/gen<g>.safetensors`` or a step
    checkpoint; returns (model, config, state)."""
    ck = read_checkpoint(path)
    cfg = NoisyStudentConfig.from_dict(ck.require_config())
    st = ck.state
    model = build_model(cfg.model, width=float(st.get("width", 1.0)), depth=float(st.get("depth", 1.0)))
    unwrap_model(model).load_state_dict(ck.module_state("model"))
    return model.to(device), cfg, st


def _finished_generations(run: Run) -> list[int]:
    folder = run.dir / "generations"
    return sorted(int(p.stem[3:]) for p in folder.glob("gen*.safetensors")) if folder.is_dir() else []


def train(cfg: NoisyStudentConfig, run: Run | None = None, *, device: str | torch.device = "auto",
          resume: bool = False, data: SemiSupervisedData | None = None, progress: bool = True,
          stop_at: tuple[int, int] | None = None) -> NoisyStudentResult:
    """Train the teacher and ``loop.generations`` students; resumable inside and between generations.

    Args:
        cfg: the resolved config.
        run: the run directory (needed to resume; None writes nothing).
        device: auto / cpu / cuda / mps (under torchrun each process takes its own device).
        resume: continue ``run``: finished generations are loaded, the one in progress resumes from its last
            checkpoint.
        data: the labeled / unlabeled / test images (default: :func:`essence.noisy_student.data.load_data`).
        stop_at: (generation, step): stop there, as an interruption would (tests).
    """
    from essence.noisy_student.evaluate import accuracy

    info = dist.init_distributed(device)
    dev = info.device
    torch.set_num_threads(cfg.train.threads or default_num_threads())
    data = data if data is not None else load_data(cfg.data)
    if data.num_classes != cfg.model.num_classes:
        raise ValueError(f"the data has {data.num_classes} classes but model.num_classes is {cfg.model.num_classes}; "
                         f"pass --set model.num_classes={data.num_classes}")
    Bu = cfg.optim.batch_size * cfg.optim.unlabeled_ratio
    if cfg.loop.generations and data.unlabeled_x.shape[0] < Bu:
        raise ValueError(f"the unlabeled set ({data.unlabeled_x.shape[0]} images) is smaller than one unlabeled "
                         f"batch ({Bu} = {cfg.optim.unlabeled_ratio} x {cfg.optim.batch_size}); lower "
                         "optim.unlabeled_ratio or optim.batch_size")
    prec = Precision(cfg.train.precision, dev)
    if run is not None:
        run.record_precision(prec)
        run.save_config(cfg)
    if dist.is_main():
        console.print(f"noisy-student: {data.labeled_x.shape[0]} labeled, {data.unlabeled_x.shape[0]} unlabeled "
                      f"({data.n_ood} out-of-domain); student noise: {', '.join(cfg.noise.active) or 'NONE'}",
                      highlight=False)
        if not cfg.noise.active:
            console.print("[yellow]warning:[/] the student has no noise: this is plain self-training, not Noisy "
                          "Student", highlight=False)
    t0 = time.perf_counter()
    results: list[GenerationResult] = []
    finished = _finished_generations(run) if (run is not None and resume) else []
    teacher = None
    for g in range(cfg.loop.generations + 1):
        if g in finished:
            model, _, st = load_generation(_generation_file(run, g), device=dev)
            results.append(GenerationResult(generation=g, model=model, steps=int(st.get("steps", 0)),
                                            width=float(st["width"]), depth=float(st["depth"]),
                                            pseudo=st.get("pseudo")))
            teacher = model
            continue
        pseudo = None
        if g > 0:
            pfile = run.dir / "generations" / f"pseudo{g}.safetensors" if run is not None else None
            if pfile is not None and resume and pfile.exists():
                pseudo = load_pseudo_labels(pfile)
            else:
                pseudo = make_pseudo_labels(teacher, data, cfg, g, precision=prec, device=dev)
                if pfile is not None and dist.is_main():
                    save_pseudo_labels(pfile, pseudo, generation=g, cfg=cfg)
        ck_dir = run.checkpoints_dir / f"gen{g}" if run is not None else None
        res_from = ck_dir if (resume and ck_dir is not None and latest_checkpoint(ck_dir) is not None) else None
        halt = stop_at[1] if stop_at is not None and stop_at[0] == g else None
        res = train_generation(cfg, data, g, pseudo=pseudo, run=run, device=dev, resume=res_from, progress=progress,
                               stop_at=halt)
        if halt is not None:
            results.append(res)
            break
        if g > 0:
            check_student_size(teacher, res.model)
        acc = accuracy(res.model, data.test_x, data.test_y, precision=prec, batch_size=cfg.eval.batch_size)
        if run is not None and dist.is_main():
            save_checkpoint(_generation_file(run, g), modules={"model": res.model}, step=res.steps, config=cfg,
                            rng=False, state={"generation": g, "width": res.width, "depth": res.depth,
                                              "steps": res.steps, "test_accuracy": acc, "pseudo": res.pseudo})
            run.log(step=res.steps, generation=g, test_accuracy=acc)
        if dist.is_main():
            console.print(f"generation {g} ({'teacher' if g == 0 else 'student'}, width x{res.width:g}): test "
                          f"accuracy {100 * acc:.2f}%", highlight=False)
        dist.barrier()
        results.append(res)
        teacher = res.model
    return NoisyStudentResult(generations=results, seconds=time.perf_counter() - t0)
