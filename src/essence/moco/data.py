"""MoCo's data: Fashion-MNIST as unlabeled training images, the two-view batch, evaluation tensors.

The training set is used *without labels* (the pretext task is instance discrimination); test labels are used
only by the evaluation protocols, and training labels only to label the kNN bank / fit the linear classifier
on frozen features, as in the paper's protocols.

Each step draws two independent augmentations of the same images (``TwoCropsTransform`` of the official
code) with :class:`~essence.nn.augment.BatchAugment`, on the device the model runs on.
"""

from __future__ import annotations

import hashlib

import torch
import torch.nn.functional as F

from essence.data import load_fashion_mnist
from essence.moco.config import DataConfig
from essence.nn.augment import AugmentConfig, BatchAugment

__all__ = ["load_images", "TwoViews", "step_generator", "normalize_for_eval", "shard_indices"]


def load_images(cfg: DataConfig, split: str, *, limit: int | None = None) -> tuple[torch.Tensor, torch.Tensor]:
    """uint8 images (N, 1, 28, 28) and int64 labels (N,) of ``split`` ('train' or 'test')."""
    images, labels = load_fashion_mnist(split, root=cfg.root)
    n = limit if limit is not None else (cfg.train_limit if split == "train" else cfg.test_limit)
    if n:
        images, labels = images[:n], labels[:n]
    return torch.from_numpy(images.copy()).unsqueeze(1), torch.from_numpy(labels.copy()).long()


def step_generator(seed: int, step: int, stream: int) -> torch.Generator:
    """A CPU generator derived from (seed, step, stream): every random draw of a step is reproducible, so a
    resumed run draws exactly what the uninterrupted run would have drawn, on any number of processes."""
    digest = hashlib.blake2b(f"{seed}/{step}/{stream}".encode(), digest_size=8).digest()
    return torch.Generator().manual_seed(int.from_bytes(digest, "little") & ((1 << 63) - 1))


def shard_indices(n: int, step: int, steps_per_epoch: int, batch: int, seed: int, rank: int = 0,
                  world: int = 1) -> torch.Tensor:
    """This process's indices for global step ``step``: a fresh permutation per epoch (drop_last), the global
    batch ``batch * world`` split into contiguous per-rank slices."""
    epoch, i = divmod(step, steps_per_epoch)
    perm = torch.randperm(n, generator=step_generator(seed, epoch, 1_000_000))
    start = i * batch * world + rank * batch
    return perm[start:start + batch]


class TwoViews:
    """x -> (aug(x), aug(x)): the query and key views, two independent draws of the same recipe."""

    def __init__(self, cfg: AugmentConfig):
        self.aug = BatchAugment(cfg)

    def __call__(self, x: torch.Tensor, generator: torch.Generator | None = None) -> tuple[torch.Tensor, torch.Tensor]:
        return self.aug(x, generator), self.aug(x, generator)


def normalize_for_eval(x: torch.Tensor, cfg: AugmentConfig) -> torch.Tensor:
    """Evaluation view: no augmentation, resized to ``cfg.size`` if needed, normalised like the training views."""
    x = x.float() / 255.0 if x.dtype == torch.uint8 else x.float()
    if x.shape[-1] != cfg.size or x.shape[-2] != cfg.size:
        x = F.interpolate(x, size=(cfg.size, cfg.size), mode="bilinear", align_corners=False, antialias=True)
    mean = x.new_tensor(cfg.mean).view(1, -1, 1, 1)
    std = x.new_tensor(cfg.std).view(1, -1, 1, 1)
    return (x - mean) / std
