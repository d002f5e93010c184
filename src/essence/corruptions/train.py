"""Training of the small Fashion-MNIST classifiers, and CLAHE (the paper's histogram-equalisation study)."""

from __future__ import annotations

from collections.abc import Callable

import numpy as np
import torch
import torch.nn.functional as F

from essence.core.loop import Precision, build_scheduler, check_finite
from essence.core.progress import ProgressBar
from essence.corruptions.model import build_model

__all__ = ["train_classifier", "predict_logits", "clahe"]


def clahe(x: torch.Tensor, clip_limit: float = 2.0, tiles: int = 4) -> torch.Tensor:
    """Contrast Limited Adaptive Histogram Equalisation of each grey image (OpenCV), x (N, 1, H, W) in [0, 1]."""
    import cv2

    op = cv2.createCLAHE(clipLimit=clip_limit, tileGridSize=(tiles, tiles))
    u8 = torch.round(x.clamp(0, 1) * 255).to(torch.uint8).cpu().numpy()
    out = np.stack([op.apply(img[0])[None] for img in u8])
    return torch.from_numpy(out).to(x.device, torch.float32) / 255


def train_classifier(arch: str, images: np.ndarray, labels: np.ndarray, *, epochs: int, batch_size: int, lr: float,
                     weight_decay: float, precision: str = "auto", seed: int = 0, device: torch.device | str = "cpu",
                     model: torch.nn.Module | None = None, transform: Callable | None = None,
                     log: Callable | None = None, desc: str = "") -> torch.nn.Module:
    """Train ``arch`` (or continue ``model``) on uint8 images (N, H, W) with AdamW + one-cycle cross-entropy.

    ``transform`` maps a float batch (N, 1, H, W) to the network input (e.g. :func:`clahe`).
    """
    device = torch.device(device)
    gen = torch.Generator().manual_seed(seed)
    torch.manual_seed(seed)
    net = model if model is not None else build_model(arch)
    net = net.to(device).to(memory_format=torch.channels_last)
    x_all = torch.from_numpy(images).float().div_(255)[:, None]
    y_all = torch.from_numpy(labels).long()
    steps_per_epoch = max(len(x_all) // batch_size, 1)
    total = epochs * steps_per_epoch
    opt = torch.optim.AdamW(net.parameters(), lr=lr, weight_decay=weight_decay)
    sched = build_scheduler(opt, "cosine", total, warmup_steps=max(total // 10, 1))
    prec = Precision(precision, device)
    step = 0
    net.train()
    with ProgressBar(total, desc=desc or f"train {arch}", unit="step") as bar:
        for _ in range(epochs):
            order = torch.randperm(len(x_all), generator=gen)
            for i in range(steps_per_epoch):
                idx = order[i * batch_size:(i + 1) * batch_size]
                xb, yb = x_all[idx], y_all[idx]
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
