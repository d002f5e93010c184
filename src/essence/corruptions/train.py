"""Training of the small Fashion-MNIST classifiers, and CLAHE (the paper's histogram-equalisation study)."""

from __future__ import annotations

from collections.abc import Callable

import numpy as np
import torch
import torch.nn.functional as F

from essence.core.loop import Precision, build_scheduler, check_finite
from essence.core.progress import ProgressBar
from essence.corruptions.model import build_model

__all__ = ["train_classifier", "predict_logits", "clahe", "augment_batch", "images_to_tensor"]


def clahe(x: torch.Tensor, clip_limit: float = 2.0, tiles: int = 2) -> torch.Tensor:
    """Contrast Limited Adaptive Histogram Equalisation (OpenCV) of each image, x (N, C, H, W) in [0, 1]:
    grey images directly, RGB images on the L channel of CIE Lab (colour kept). ``tiles`` x ``tiles`` tiles:
    2 x 2 tiles of 16 px at 32 px (OpenCV's default 8 x 8 tiles are 28 px at ImageNet's 224)."""
    import cv2

    op = cv2.createCLAHE(clipLimit=clip_limit, tileGridSize=(tiles, tiles))
    u8 = torch.round(x.clamp(0, 1) * 255).to(torch.uint8).cpu()
    if x.shape[1] == 1:
        out = np.stack([op.apply(img[0])[None] for img in u8.numpy()])
    else:
        hwc = u8.permute(0, 2, 3, 1).contiguous().numpy()
        out = np.empty_like(hwc)
        for i, img in enumerate(hwc):
            lab = cv2.cvtColor(img, cv2.COLOR_RGB2LAB)
            lab[..., 0] = op.apply(np.ascontiguousarray(lab[..., 0]))
            out[i] = cv2.cvtColor(lab, cv2.COLOR_LAB2RGB)
        out = out.transpose(0, 3, 1, 2)
    return torch.from_numpy(np.ascontiguousarray(out)).to(x.device, torch.float32) / 255


def images_to_tensor(images: np.ndarray) -> torch.Tensor:
    """uint8 images (N, H, W) or (N, H, W, C) -> float (N, C, H, W) in [0, 1]."""
    t = torch.from_numpy(np.ascontiguousarray(images))
    t = t[:, None] if t.ndim == 3 else t.permute(0, 3, 1, 2)
    return t.float().div_(255).contiguous()


def augment_batch(x: torch.Tensor, gen: torch.Generator, pad: int = 4) -> torch.Tensor:
    """The standard CIFAR augmentation, per sample: random crop from a reflect-padded image and a random
    horizontal flip (the paper's rule allows crops and flips)."""
    n, _, h, w = x.shape
    padded = torch.nn.functional.pad(x, (pad, pad, pad, pad), mode="reflect")
    dy = torch.randint(0, 2 * pad + 1, (n,), generator=gen)
    dx = torch.randint(0, 2 * pad + 1, (n,), generator=gen)
    rows = (dy[:, None] + torch.arange(h)[None])[:, None, :, None].expand(n, x.shape[1], h, w + 2 * pad)
    out = torch.gather(padded, 2, rows)
    cols = (dx[:, None] + torch.arange(w)[None])[:, None, None, :].expand(n, x.shape[1], h, w)
    out = torch.gather(out, 3, cols)
    flip = torch.rand(n, generator=gen) < 0.5
    return torch.where(flip[:, None, None, None], out.flip(-1), out)


def train_classifier(arch: str, images: np.ndarray, labels: np.ndarray, *, epochs: int, batch_size: int, lr: float,
                     weight_decay: float, precision: str = "auto", seed: int = 0, device: torch.device | str = "cpu",
                     model: torch.nn.Module | None = None, transform: Callable | None = None,
                     augment: bool = False, warmup: bool = True,
                     log: Callable | None = None, desc: str = "") -> torch.nn.Module:
    """Train ``arch`` (or continue ``model``) on uint8 images (N, H, W) or (N, H, W, C) with AdamW and a
    cosine schedule (linear warm-up over 10% of the steps when ``warmup``), cross-entropy.

    ``augment``: random crops and flips (:func:`augment_batch`); ``transform`` maps the float batch
    (N, C, H, W) to the network input (e.g. :func:`clahe`), after augmentation.
    """
    device = torch.device(device)
    gen = torch.Generator().manual_seed(seed)
    torch.manual_seed(seed)
    x_all = images_to_tensor(images)
    net = model if model is not None else build_model(arch, in_channels=x_all.shape[1])
    net = net.to(device).to(memory_format=torch.channels_last)
    y_all = torch.from_numpy(labels).long()
    steps_per_epoch = max(len(x_all) // batch_size, 1)
    total = epochs * steps_per_epoch
    opt = torch.optim.AdamW(net.parameters(), lr=lr, weight_decay=weight_decay)
    sched = build_scheduler(opt, "cosine", total, warmup_steps=max(total // 10, 1) if warmup else 0)
    prec = Precision(precision, device)
    step = 0
    net.train()
    with ProgressBar(total, desc=desc or f"train {arch}", unit="step") as bar:
        for _ in range(epochs):
            order = torch.randperm(len(x_all), generator=gen)
            for i in range(steps_per_epoch):
                idx = order[i * batch_size:(i + 1) * batch_size]
                xb, yb = x_all[idx], y_all[idx]
                if augment:
                    xb = augment_batch(xb, gen)
                if transform is not None:
                    xb = transform(xb)
                xb = xb.to(device).contiguous(memory_format=torch.channels_last)
                with prec.autocast():
                    loss = F.cross_entropy(net(xb).float(), yb.to(device))
                check_finite(loss, step)
                prec.backward(loss)
                prec.step(opt)
                sched.step()
                step += 1
                bar.update(1, loss=f"{loss.item():.3f}")
                if log is not None and step % 20 == 0:
                    log(step=step, loss=loss.item(), lr=sched.get_last_lr()[0])
    net.eval()
    return net


@torch.no_grad()
def predict_logits(model: torch.nn.Module, x: torch.Tensor, *, batch_size: int = 1000,
                   precision: str = "auto") -> torch.Tensor:
    """Logits (N, classes) in float32 for a float batch (N, C, H, W) in [0, 1]."""
    device = next(model.parameters()).device
    prec = Precision(precision, device)
    outs = []
    model.eval()
    for i in range(0, len(x), batch_size):
        xb = x[i:i + batch_size].to(device).contiguous(memory_format=torch.channels_last)
        with prec.autocast():
            outs.append(model(xb).float().cpu())
    return torch.cat(outs)
