"""Metrics of a trained StyleGAN2: FID and precision/recall in a feature space, PPL in W, the Jacobian-norm
spread (section 7), and FID with the offline Inception network.

Feature spaces:

- ``classifier`` (default on Fashion-MNIST; the card's "FID-FMNIST" proxy): the 128-d penultimate layer of a
  small CNN trained on the Fashion-MNIST training split (cached under ``~/.cache/essence/stylegan2``). Numbers are
  comparable between essence runs only, not with the paper.
- ``inception``: the TF-ported Inception-v3 pool features of ``essence.metrics.fid`` (slow on a CPU: about 0.1 s
  per image).

PPL deviation (documented): LPIPS needs VGG-16 weights that are not available offline; the distance here is
the squared L2 distance between classifier features, divided by epsilon^2, at path endpoints in W (``ppl2_wend``
otherwise: epsilon 1e-4, no crop, 1st/99th percentile outliers removed as in the official code).
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn

from essence.core.checkpoint import read_checkpoint
from essence.core.runtime import resolve_device
from essence.stylegan2.config import EvalConfig, StyleGAN2Config
from essence.stylegan2.model import Generator

__all__ = ["FMNISTClassifier", "classifier_features_net", "generate_images", "features_of", "fid_from_features",
           "evaluate_generator", "generation_batch", "ppl_w", "jacobian_lengths", "load_generator",
           "evaluate_checkpoint", "TruncationSweep"]


# ------------------------------------------------------------------------------------- feature network
class FMNISTClassifier(nn.Module):
    """Three conv blocks and a 128-d feature layer; ``features(x)`` for x in [-1, 1], (N, 1, 32, 32)."""

    def __init__(self, dim: int = 128):
        super().__init__()
        self.body = nn.Sequential(
            nn.Conv2d(1, 32, 3, padding=1), nn.ReLU(), nn.MaxPool2d(2),
            nn.Conv2d(32, 64, 3, padding=1), nn.ReLU(), nn.MaxPool2d(2),
            nn.Conv2d(64, 128, 3, padding=1), nn.ReLU(), nn.MaxPool2d(2),
            nn.Flatten(), nn.Linear(128 * 16, dim), nn.ReLU())
        self.head = nn.Linear(dim, 10)
        # channels-last (NHWC): oneDNN's fast layout; with batches of 256, features of 5,000 images take 1.1 s
        # instead of 3.3 s (NCHW, batches of 1,024) on a 2-core Xeon
        self.to(memory_format=torch.channels_last)

    def features(self, x: torch.Tensor) -> torch.Tensor:
        return self.body(x.contiguous(memory_format=torch.channels_last))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.head(self.features(x))


def classifier_features_net(epochs: int = 3, device: str | torch.device = "cpu", seed: int = 0,
                            root: str | None = None) -> tuple[FMNISTClassifier, float]:
    """The Fashion-MNIST feature network (trained once, then loaded from the cache) and its test accuracy."""
    from safetensors.torch import load_file, save_file

    from essence.data.cache import cache_dir, cache_key
    from essence.data.fashion_mnist import load_fashion_mnist
    from essence.stylegan2.data import load_fashion_mnist32, to_signed

    path = cache_dir("stylegan2") / f"fmnist-classifier-{cache_key('v1', epochs, seed)}.safetensors"
    net = FMNISTClassifier()
    if path.exists():
        state = load_file(str(path))
        acc = float(state.pop("test_accuracy"))
        net.load_state_dict(state)
        return net.to(device).eval(), acc
    torch.manual_seed(seed)
    x = to_signed(load_fashion_mnist32("train", root))
    _, y = load_fashion_mnist("train", root)
    y = torch.from_numpy(y)
    net = net.to(device)
    opt = torch.optim.Adam(net.parameters(), lr=1e-3)
    g = torch.Generator().manual_seed(seed)
    for _ in range(epochs):
        perm = torch.randperm(x.shape[0], generator=g)
        for i in range(0, x.shape[0], 256):
            idx = perm[i:i + 256]
            loss = F.cross_entropy(net(x[idx].to(device)), y[idx].to(device))
            opt.zero_grad(set_to_none=True)
            loss.backward()
            opt.step()
    net.eval()
    xt = to_signed(load_fashion_mnist32("test", root))
    _, yt = load_fashion_mnist("test", root)
    with torch.no_grad():
        pred = torch.cat([net(xt[i:i + 1024].to(device)).argmax(1).cpu() for i in range(0, xt.shape[0], 1024)])
    acc = float((pred.numpy() == yt).mean())
    state = {k: v.detach().cpu().contiguous() for k, v in net.state_dict().items()}
    state["test_accuracy"] = torch.tensor(acc)
    save_file(state, str(path))
    return net, acc


# ------------------------------------------------------------------------------------------ generation
def generation_batch(batch: int | None, device: str | torch.device) -> int:
    """Images per generator forward: ``batch`` when given, else 64 on the CPU and 256 on an accelerator. On the
    CPU a forward is bound by the cache, not by call overhead: at 32 px (channels 64, one thread) an image costs
    1.7 ms in batches of 64 and 3.4 ms in batches of 256. The images do not depend on it (per-sample z and
    noise)."""
    if batch is not None:
        if batch < 1:
            raise ValueError(f"batch must be positive, got {batch}")
        return batch
    return 64 if torch.device(device).type == "cpu" else 256


@torch.no_grad()
def generate_images(G: Generator, n: int, *, psi: float = 1.0, seed: int = 0, batch: int | None = None,
                    noise_mode: str = "const", device: str | torch.device = "cpu",
                    z: torch.Tensor | None = None) -> torch.Tensor:
    """n images in [-1, 1] (N, C, R, R) on the CPU from z ~ N(0, I) drawn with ``seed``; ``batch`` images per
    forward (default: :func:`generation_batch`)."""
    if z is None:
        z = torch.randn(n, G.z_dim, generator=torch.Generator().manual_seed(seed))
    batch = generation_batch(batch, device)
    out = []
    for i in range(0, z.shape[0], batch):
        out.append(G(z[i:i + batch].to(device), psi=psi, noise_mode=noise_mode, fused=None).float().cpu())
    return torch.cat(out).clamp(-1, 1)


@torch.no_grad()
def features_of(net: FMNISTClassifier, images: torch.Tensor, batch: int = 256,
                device: str | torch.device = "cpu") -> torch.Tensor:
    """Classifier features (N, 128) of images in [-1, 1] (floats) or uint8 [0, 255]."""
    if images.dtype == torch.uint8:
        images = images.float() / 127.5 - 1
    return torch.cat([net.features(images[i:i + batch].to(device)).float().cpu()
                      for i in range(0, images.shape[0], batch)])


def fid_from_features(real: torch.Tensor, fake: torch.Tensor) -> float:
    """Fréchet distance between the Gaussians fitted to two feature sets (essence.metrics.fid)."""
    from essence.metrics.fid import feature_statistics, frechet_distance

    return frechet_distance(*feature_statistics(real), *feature_statistics(fake))


# ----------------------------------------------------------------------------------------- PPL, Jacobian
@torch.no_grad()
def ppl_w(G: Generator, net: FMNISTClassifier, n: int, *, epsilon: float = 1e-4, seed: int = 0,
          batch: int | None = None, device: str | torch.device = "cpu") -> np.ndarray:
    """Per-sample path-length distances in W at endpoints: d(g(lerp(w0, w1, 0)), g(lerp(w0, w1, eps))) / eps^2
    with d = squared L2 between classifier features; const noise for both images. ``batch`` pairs per forward
    (default: half of :func:`generation_batch`). Returns (n,) floats."""
    g = torch.Generator().manual_seed(seed)
    batch = generation_batch(batch, device) if batch is not None else generation_batch(None, device) // 2
    z_all = torch.randn(2, n, G.z_dim, generator=g)   # drawn up front: the pairs do not depend on ``batch``
    out = []
    for i in range(0, n, batch):
        b = min(batch, n - i)
        ws = G.mapping(z_all[:, i:i + b].reshape(2 * b, G.z_dim).to(device))
        w0, w1 = ws[:b], ws[b:]
        wt = torch.cat([w0, w0.lerp(w1, epsilon)])
        img = G.synthesis(wt, noise_mode="const", fused=None).float()
        f = net.features(img)
        out.append(((f[:b] - f[b:]).square().sum(1) / epsilon ** 2).cpu())
    return torch.cat(out).double().numpy()


def ppl_summary(dist: np.ndarray) -> float:
    """The official filtered mean: distances between the 1st and 99th percentiles."""
    lo, hi = np.percentile(dist, 1), np.percentile(dist, 99)
    return float(dist[(dist >= lo) & (dist <= hi)].mean())


def jacobian_lengths(G: Generator, n: int, *, seed: int = 0, batch: int = 64,
                     device: str | torch.device = "cpu") -> np.ndarray:
    """|J_w^T y| for n random (w, y) pairs (y ~ N(0, I) / sqrt(HW), as in the regulariser); const noise.
    Their coefficient of variation is section 7's "Jacobian-norm spread"."""
    g = torch.Generator().manual_seed(seed)
    R = G.resolution   # every z first, then y sample by sample: the pairs do not depend on ``batch``
    z_all = torch.randn(n, G.z_dim, generator=g)
    out = []
    for i in range(0, n, batch):
        b = min(batch, n - i)
        with torch.no_grad():
            ws = G.mapping(z_all[i:i + b].to(device))
        ws.requires_grad_(True)
        img = G.synthesis(ws, noise_mode="const", fused=False).float()
        y = torch.stack([torch.randn(G.img_channels, R, R, generator=g) for _ in range(b)]).to(device) / R
        (grad,) = torch.autograd.grad((img * y).sum(), ws)
        out.append(grad.square().sum(2).mean(1).sqrt().detach().cpu())
    return torch.cat(out).double().numpy()


# ------------------------------------------------------------------------------------------ checkpoints
def load_generator(path: str | Path, device: str | torch.device = "cpu",
                   which: str = "G_ema") -> tuple[Generator, StyleGAN2Config, int]:
    """The EMA generator of a run directory or checkpoint: (G_ema in eval mode, config, step).

    Raises ValueError for a checkpoint without a config or without an EMA generator."""
    from essence.core.checkpoint import CheckpointError

    src = Path(path)
    if src.is_dir() and (src / "checkpoints").is_dir():
        src = src / "checkpoints"
    ckpt = read_checkpoint(src)
    cfg = StyleGAN2Config.from_dict(ckpt.require_config())
    G = Generator(cfg.model)
    try:
        state = ckpt.module_state(which)
    except CheckpointError:
        raise ValueError(f"{ckpt.path} has no EMA generator ({which!r}); it is not a stylegan2 training "
                         f"checkpoint") from None
    G.load_state_dict(state)
    return G.to(device).eval().requires_grad_(False), cfg, ckpt.step


def evaluate_generator(G: Generator, ecfg: EvalConfig, *, real_feats: torch.Tensor, net: FMNISTClassifier,
                       device: str | torch.device = "cpu", psi: float = 1.0, seed: int = 0,
                       ppl: bool = True, jacobian: bool = True) -> dict:
    """FID / precision / recall (classifier features) of ``ecfg.n_gen`` samples; PPL and the Jacobian spread."""
    from essence.metrics.precision_recall import precision_recall

    fake = generate_images(G, ecfg.n_gen, psi=psi, seed=seed, device=device)
    ff = features_of(net, fake, device=device)
    res = {"fid": fid_from_features(real_feats, ff), **precision_recall(real_feats, ff, k=ecfg.pr_k)}
    if ppl:
        d = ppl_w(G, net, ecfg.ppl_samples, epsilon=ecfg.ppl_epsilon, seed=seed + 1, device=device)
        res["ppl"] = ppl_summary(d)
        res["ppl_samples"] = d
    if jacobian:
        lengths = jacobian_lengths(G, min(512, ecfg.ppl_samples), seed=seed + 2, device=device)
        res["jacobian_cv"] = float(lengths.std() / lengths.mean())
        res["jacobian_lengths"] = lengths
    return res


class TruncationSweep:
    """Precision and recall for several psi on the same z (claim (d))."""

    def __init__(self, psis=(1.0, 0.7, 0.5)):
        self.psis = tuple(psis)

    def __call__(self, G, ecfg: EvalConfig, *, real_feats, net, device="cpu", seed: int = 0) -> dict:
        return {psi: evaluate_generator(G, ecfg, real_feats=real_feats, net=net, device=device, psi=psi, seed=seed,
                                        ppl=False, jacobian=False) for psi in self.psis}


def evaluate_checkpoint(path: str | Path, *, device: str = "auto", n_gen: int | None = None,
                        inception: int = 0, overrides: tuple[str, ...] = ()) -> dict:
    """All metrics of a run's EMA generator against the Fashion-MNIST test split (``inception``: also the
    Inception FID on that many images)."""
    dev = resolve_device(device)
    G, cfg, step = load_generator(path, dev)
    cfg = cfg.with_overrides(list(overrides))
    ecfg = cfg.eval if n_gen is None else cfg.eval.replace(n_gen=n_gen)
    if cfg.data.source != "fashion_mnist" or cfg.model.resolution != 32:
        raise ValueError("the classifier-feature metrics are defined for Fashion-MNIST 32 x 32 runs; use "
                         "--inception N for other data")
    from essence.stylegan2.data import load_fashion_mnist32

    net, acc = classifier_features_net(ecfg.classifier_epochs, dev)
    real = load_fashion_mnist32("test", cfg.data.path)[:ecfg.n_real]
    real_feats = features_of(net, real, device=dev)
    res = evaluate_generator(G, ecfg, real_feats=real_feats, net=net, device=dev)
    out = {"step": step, "classifier_test_accuracy": acc, "n_gen": ecfg.n_gen, "n_real": int(real.shape[0]),
           **{k: v for k, v in res.items() if not isinstance(v, np.ndarray)}}
    if inception:
        out["fid_inception"] = inception_fid(G, real[:inception], inception, device=dev)
    return out


def inception_fid(G: Generator, real_u8: torch.Tensor, n: int, *, device="cpu", seed: int = 0) -> float:
    """FID with the offline Inception-v3 of essence.metrics.fid on n generated vs the given real images."""
    from essence.metrics.fid import FID, InceptionFeatures

    metric = FID(InceptionFeatures(device=device))
    for i in range(0, real_u8.shape[0], 64):
        metric.update(real_u8[i:i + 64].to(device), real=True)
    fake = generate_images(G, n, seed=seed, device=device)
    for i in range(0, n, 64):
        metric.update(((fake[i:i + 64] + 1) / 2).to(device), real=False)
    return float(metric.compute())
