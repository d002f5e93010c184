"""Momentum Contrast (He et al. 2019) and MoCo v2 (Chen et al. 2020), with the two mechanisms the paper
compares against: end-to-end and a memory bank (Fig. 2).

One training step (official ordering, ``moco/builder.py``)::

    q = normalize(f_q(x_q))                                  # NxC
    with no_grad:
        theta_k <- m theta_k + (1 - m) theta_q               # parameters only, before the keys
        k = unshuffle(normalize(f_k(shuffle(x_k))))          # NxC, shuffling BN
    logits = [q.k | q.queue] / T ; labels = 0                # Nx(1+K)
    loss = CrossEntropy(logits, labels)
    enqueue(all_gather(k))                                   # after the logits

Shuffling BN comes in two forms, chosen by ``shuffle_bn``:

- ``ddp``: the official cross-process form. Under torchrun the key images are all-gathered, rank 0 draws a
  permutation, each process encodes its slice of the shuffled global batch with its own BN statistics, and the
  keys are gathered back and un-shuffled.
- ``split``: the single-process form of the official one-GPU demo. Every BatchNorm of both encoders is a
  :class:`SplitBatchNorm` that computes statistics separately over ``bn_splits`` contiguous chunks of the
  batch (as if each chunk were on its own GPU), and the key batch is permuted before the key encoder and
  un-permuted after it.
- ``none``: plain BN, no shuffle (the "cheating" baseline of the paper's appendix).
- ``auto``: ``ddp`` when more than one process runs, else ``split``.

The key path never receives gradients (by design; facebookresearch/moco#67): ``encoder_k``'s parameters have
``requires_grad=False`` and the keys are computed under ``torch.no_grad()``.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
import torch.nn.functional as F
from torch import nn

from essence.core import distributed as dist
from essence.moco.config import ModelConfig
from essence.moco.loss import batch_logits, infonce_logits
from essence.nn.ema import make_momentum_copy, update_momentum
from essence.nn.resnet import build_resnet

__all__ = ["SplitBatchNorm", "Encoder", "MoCo", "MoCoOutput", "resolve_shuffle_bn", "build_encoder"]


class SplitBatchNorm(nn.BatchNorm2d):
    """BatchNorm2d whose training-mode statistics are computed separately over ``num_splits`` groups of the batch,
    emulating ``num_splits`` devices with their own BN. Group s holds samples s, s + S, s + 2S, ... (a free
    ``view``, no copy); :class:`MoCo` orders each batch so that these groups are contiguous chunks, exactly the
    slices that ``num_splits`` processes would see.

    The affine parameters are shared. The running statistics are updated with the mean over the chunks of each
    chunk's statistics, as in the official demo (``momentum=None``: a cumulative average, as BatchNorm2d). In eval
    mode, or with ``num_splits = 1``, it is an ordinary BatchNorm2d, and its state dict is identical to
    BatchNorm2d's.
    """

    def __init__(self, num_features: int, num_splits: int, **kw):
        super().__init__(num_features, **kw)
        if num_splits < 1:
            raise ValueError(f"num_splits must be a positive integer, got {num_splits!r}")
        self.num_splits = int(num_splits)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        S = self.num_splits
        if not self.training or S == 1:
            return super().forward(x)
        N, C, H, W = x.shape
        if N % S:
            raise ValueError(f"SplitBatchNorm: the batch ({N}) must be divisible by num_splits ({S})")
        # (N, C, H, W) -> (N/S, S*C, H, W): sample a*S + s lands in channel group s of one BatchNorm call.
        xs = x.reshape(N // S, S * C, H, W)
        mean_s = self.running_mean.repeat(S)
        var_s = self.running_var.repeat(S)
        self.num_batches_tracked.add_(1)
        # momentum=None: cumulative average over the batches seen, as BatchNorm2d does
        momentum = self.momentum if self.momentum is not None else 1.0 / float(self.num_batches_tracked)
        y = F.batch_norm(xs, mean_s, var_s, self.weight.repeat(S), self.bias.repeat(S), True, momentum, self.eps)
        with torch.no_grad():
            self.running_mean.copy_(mean_s.view(S, C).mean(0))
            self.running_var.copy_(var_s.view(S, C).mean(0))
        return y.view(N, C, H, W)


def resolve_shuffle_bn(mode: str) -> str:
    """``auto`` -> ``ddp`` with several processes, else ``split``."""
    if mode == "auto":
        return "ddp" if dist.get_world_size() > 1 else "split"
    if mode == "ddp" and dist.get_world_size() == 1:
        raise ValueError("model.shuffle_bn=ddp needs several processes (torchrun); use split or auto on one device")
    return mode


class Encoder(nn.Module):
    """f_q / f_k: a backbone and a projection head, fc (v1) or Linear-ReLU-Linear without BN (v2 ``--mlp``).

    Shape: (N, C_in, H, W) -> (N, dim), not normalised; :meth:`features` gives the pooled backbone features.
    """

    def __init__(self, backbone: nn.Module, dim: int, mlp: bool):
        super().__init__()
        self.backbone = backbone
        d = backbone.num_features
        if mlp:
            self.head = nn.Sequential(nn.Linear(d, d), nn.ReLU(inplace=True), nn.Linear(d, dim))
        else:
            self.head = nn.Linear(d, dim)

    def features(self, x: torch.Tensor) -> torch.Tensor:
        return self.backbone(x)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.head(self.backbone(x))


def build_encoder(cfg: ModelConfig, bn_splits: int = 1) -> Encoder:
    norm = (lambda c: SplitBatchNorm(c, bn_splits)) if bn_splits > 1 else None
    return Encoder(build_resnet(cfg.arch, width=cfg.width, in_chans=cfg.in_chans, norm_layer=norm), cfg.dim,
                   cfg.mlp)


@dataclass
class MoCoOutput:
    loss: torch.Tensor        # scalar
    logits: torch.Tensor      # Nx(1+K) (moco, memory bank) or Nx(N_global) (end-to-end)
    labels: torch.Tensor      # N: index of the positive in each row
    keys: torch.Tensor        # NxC normalised keys of this process (detached)

    @property
    def accuracy(self) -> torch.Tensor:
        """Pretext (instance discrimination) top-1: how often the positive has the largest logit."""
        return (self.logits.argmax(1) == self.labels).float().mean()


class MoCo(nn.Module):
    """The MoCo method module (and its end-to-end / memory-bank variants). Call ``moco(x_q, x_k)`` per step.

    Args:
        cfg: :class:`~essence.moco.config.ModelConfig` (arch, width, dim, mlp, K, m, T, mechanism, shuffle_bn, ...).
        bank_size: number of training images (``mechanism='memory_bank'`` only: one stored feature per image).

    Buffers (saved in checkpoints, so a resumed run keeps its dictionary): ``queue`` (C, K), ``queue_ptr`` (1,),
    and for the memory bank ``bank`` (bank_size, C).
    """

    def __init__(self, cfg: ModelConfig, *, bank_size: int | None = None):
        super().__init__()
        self.cfg = cfg
        self.K, self.m, self.T = cfg.K, cfg.m, cfg.T
        self.mechanism = cfg.mechanism
        self.shuffle_bn = resolve_shuffle_bn(cfg.shuffle_bn) if cfg.mechanism != "memory_bank" else "none"
        splits = cfg.bn_splits if self.shuffle_bn == "split" else 1
        self.encoder_q = build_encoder(cfg, splits)
        if self.mechanism == "moco":
            self.encoder_k = make_momentum_copy(self.encoder_q)       # identical start, requires_grad=False
            queue = F.normalize(torch.randn(cfg.dim, cfg.K), dim=0)    # pitfall 2: normalised at init
            self.register_buffer("queue", queue)
            self.register_buffer("queue_ptr", torch.zeros(1, dtype=torch.long))
        elif self.mechanism == "memory_bank":
            if not bank_size or bank_size < 1:
                raise ValueError("mechanism=memory_bank needs bank_size = the number of training images")
            self.register_buffer("bank", F.normalize(torch.randn(int(bank_size), cfg.dim), dim=1))

    # -- the paper's steps ---------------------------------------------------------------------------------
    @torch.no_grad()
    def _momentum_update_key_encoder(self) -> None:
        update_momentum(self.encoder_k, self.encoder_q, self.m)

    @torch.no_grad()
    def _dequeue_and_enqueue(self, keys: torch.Tensor) -> None:
        """Write the (gathered) keys at the pointer, wrapping around; any batch size works (no K % N == 0)."""
        keys = keys.detach().float()
        n = keys.shape[0]
        ptr = int(self.queue_ptr)
        if n > self.K:  # only the last K keys would survive a sequential write
            ptr, keys, n_total = (ptr + n - self.K) % self.K, keys[-self.K:], n
            n = self.K
        else:
            n_total = n
        idx = (ptr + torch.arange(n, device=keys.device)) % self.K
        self.queue[:, idx] = keys.T
        self.queue_ptr[0] = (int(self.queue_ptr) + n_total) % self.K

    def _split_order(self, index: torch.Tensor) -> torch.Tensor:
        """Reorder a batch index so that SplitBatchNorm's strided groups are contiguous chunks of ``index``:
        position a*S + s gets index[s*N/S + a] (chunk s = what process s would hold)."""
        S = self.cfg.bn_splits
        if index.shape[0] % S:
            raise ValueError(f"the batch ({index.shape[0]}) must be divisible by model.bn_splits ({S}) "
                             "for shuffle_bn=split")
        return index.view(S, -1).T.reshape(-1)

    def _encode_q(self, encoder: nn.Module, x: torch.Tensor) -> torch.Tensor:
        """Normalised f(x) in batch order; with split BN each contiguous chunk has its own statistics."""
        if self.shuffle_bn != "split":
            return F.normalize(encoder(x).float(), dim=1)
        order = self._split_order(torch.arange(x.shape[0], device=x.device))
        return F.normalize(encoder(x[order]).float(), dim=1)[torch.argsort(order)]

    def _draw_perm(self, n: int, generator: torch.Generator | None, device: torch.device) -> torch.Tensor:
        perm = torch.randperm(n, generator=generator).to(device)
        return dist.broadcast(perm, src=0) if dist.is_distributed() else perm

    def _encode_keys(self, encoder: nn.Module, x_k: torch.Tensor, generator: torch.Generator | None,
                     gather_grad: bool = False) -> torch.Tensor:
        """Normalised keys through ``encoder`` with shuffling BN. Returns this process's keys (N, C), or with
        ``gather_grad`` the whole global batch's keys in order (end-to-end, gradients kept)."""
        if self.shuffle_bn == "ddp":
            x_all = dist.all_gather(x_k)
            n, rank = x_k.shape[0], dist.get_rank()
            perm = self._draw_perm(x_all.shape[0], generator, x_k.device)
            k = F.normalize(encoder(x_all[perm[rank * n:(rank + 1) * n]]).float(), dim=1)
            k_all = (dist.all_gather_with_grad(k) if gather_grad else dist.all_gather(k))[torch.argsort(perm)]
            return k_all if gather_grad else k_all[rank * n:(rank + 1) * n]
        if self.shuffle_bn == "split":
            # shuffle, then give chunk s of the shuffled batch its own BN statistics, then un-shuffle
            perm = self._split_order(self._draw_perm(x_k.shape[0], generator, x_k.device))
            k = F.normalize(encoder(x_k[perm]).float(), dim=1)[torch.argsort(perm)]
        else:
            k = F.normalize(encoder(x_k).float(), dim=1)
        return dist.all_gather_with_grad(k) if gather_grad else k

    # -- forward -------------------------------------------------------------------------------------------
    def forward(self, x_q: torch.Tensor, x_k: torch.Tensor | None = None, *, index: torch.Tensor | None = None,
                generator: torch.Generator | None = None) -> MoCoOutput:
        """One contrastive step on a batch of two views.

        Args:
            x_q, x_k: the two augmented views (N, C_in, H, W) (x_k is unused by the memory bank).
            index: dataset indices of the batch (memory bank only).
            generator: CPU generator for the shuffle permutation and memory-bank negatives (reproducible runs).
        """
        if self.mechanism == "memory_bank":
            return self._forward_memory_bank(x_q, index, generator)
        if x_k is None or x_k.shape != x_q.shape:
            raise ValueError(f"x_k must have the shape of x_q {tuple(x_q.shape)}, got "
                             f"{None if x_k is None else tuple(x_k.shape)}")
        if self.mechanism == "end_to_end":
            q = self._encode_q(self.encoder_q, x_q)
            keys = self._encode_keys(self.encoder_q, x_k, generator, gather_grad=True)   # gradients flow
            logits, labels = batch_logits(q, keys, self.T, offset=dist.get_rank() * q.shape[0])
            loss = F.cross_entropy(logits, labels)
            return MoCoOutput(loss, logits.detach(), labels, keys.detach())
        if self.cfg.symmetric:
            loss_12, logits, labels, k2 = self._contrast(x_q, x_k, generator, update=True)
            loss_21, _, _, k1 = self._contrast(x_k, x_q, generator, update=False)
            self._dequeue_and_enqueue(dist.all_gather(torch.cat([k1, k2])))
            return MoCoOutput(loss_12 + loss_21, logits, labels, k2)
        loss, logits, labels, k = self._contrast(x_q, x_k, generator, update=True)
        self._dequeue_and_enqueue(dist.all_gather(k))       # pitfall 4: after the logits
        return MoCoOutput(loss, logits, labels, k)

    def _contrast(self, x_q, x_k, generator, update: bool):
        q = self._encode_q(self.encoder_q, x_q)                                 # NxC
        with torch.no_grad():
            if update:
                self._momentum_update_key_encoder()
            k = self._encode_keys(self.encoder_k, x_k, generator)              # NxC
        logits, labels = infonce_logits(q, k, self.queue.clone().detach(), self.T)
        return F.cross_entropy(logits, labels), logits.detach(), labels, k

    def _forward_memory_bank(self, x, index, generator) -> MoCoOutput:
        """Wu et al. (2018): the positive key is the bank's stored feature of the same image; K negatives are
        drawn uniformly from the bank; afterwards the bank entries move towards the new queries (momentum 0.5)."""
        if index is None or index.shape != (x.shape[0],):
            raise ValueError("mechanism=memory_bank needs index= the dataset indices of the batch, shape (N,)")
        q = F.normalize(self.encoder_q(x).float(), dim=1)
        index = index.to(self.bank.device).long()
        neg = torch.randint(0, self.bank.shape[0], (self.K,), generator=generator).to(self.bank.device)
        logits, labels = infonce_logits(q, self.bank[index].clone(), self.bank[neg].T.clone(), self.T)
        loss = F.cross_entropy(logits, labels)
        with torch.no_grad():
            q_all, idx_all = dist.all_gather(q.detach()), dist.all_gather(index)
            mb = self.cfg.bank_momentum
            self.bank[idx_all] = F.normalize(mb * self.bank[idx_all] + (1 - mb) * q_all, dim=1)
        return MoCoOutput(loss, logits.detach(), labels, q.detach())

    @torch.no_grad()
    def features(self, x: torch.Tensor, kind: str = "backbone") -> torch.Tensor:
        """Evaluation features of the query encoder: pooled backbone (linear protocol) or normalised q."""
        if kind == "backbone":
            return self.encoder_q.features(x)
        if kind == "embedding":
            return F.normalize(self.encoder_q(x).float(), dim=1)
        raise ValueError(f"kind must be 'backbone' or 'embedding', got {kind!r}")
