"""Evaluation of IDVAE and its baselines: FID under an "ensemble of experts", precision / recall, test
reconstruction error, and the class accuracy of conditional samples.

The paper notes that a ranking by FID depends on the feature network, and recommends checking FID with several
("an ensemble of experts"). The experts here (:data:`EXPERTS`):

- ``inception``: the TF Inception-v3 pool features of :mod:`essence.metrics.fid` (2048-d; about 11 images/s
  on 2 CPU cores, so presets use fewer samples for it);
- ``classifier``: the penultimate layer (128-d) of a small Fashion-MNIST CNN classifier trained here on the
  training split (cached under ``~/.cache/essence/idvae``); it also scores conditional samples;
- ``random_cnn``: an untrained CNN with fixed random weights (512-d pooled features), independent of any data;
- ``pixels``: raw pixels (784-d), a trivial reference.

FID compares prior samples G(z_p), z_p ~ N(0, I), with the same number of test images. Reconstruction error is
the per-pixel MSE in [0, 1] pixel units of x against G(mu(x)) (z = mu, no sampling), one value per test image.
Precision / recall (Kynkäänniemi et al. 2019, k = 3) use the same features.
"""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path

import torch
import torch.nn.functional as F
from torch import nn

from essence.core.checkpoint import load_checkpoint, read_checkpoint, save_checkpoint
from essence.core.loop import eval_mode
from essence.core.progress import progress
from essence.data.cache import cache_dir, cache_key
from essence.idvae.config import EXTRACTORS, DataConfig, EvalConfig, IDVAEConfig
from essence.idvae.data import load_images, to_model_range, to_uint8
from essence.idvae.model import VAE, build_model
from essence.metrics.fid import feature_statistics, frechet_distance
from essence.metrics.precision_recall import precision_recall

__all__ = ["FashionClassifier", "RandomCNN", "train_classifier", "get_classifier", "Expert", "build_experts",
           "generate", "reconstruction_errors", "fid", "conditional_accuracy", "evaluate_model", "load_model",
           "evaluate_checkpoint", "EXPERTS"]

EXPERTS = EXTRACTORS


class FashionClassifier(nn.Module):
    """A small CNN: images (N, 1, 28, 28) in [0, 1] -> logits (N, 10); ``features`` gives the 128-d
    penultimate layer."""

    def __init__(self, num_classes: int = 10, channels: int = 1, size: int = 28):
        super().__init__()
        self.conv1 = nn.Conv2d(channels, 32, 3, padding=1)
        self.conv2 = nn.Conv2d(32, 64, 3, padding=1)
        self.fc1 = nn.Linear(64 * (size // 4) ** 2, 128)
        self.fc2 = nn.Linear(128, num_classes)

    def features(self, x: torch.Tensor) -> torch.Tensor:
        x = (x - 0.5) / 0.5
        x = F.max_pool2d(F.relu(self.conv1(x)), 2)
        x = F.max_pool2d(F.relu(self.conv2(x)), 2)
        return F.relu(self.fc1(x.flatten(1)))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.fc2(self.features(x))


class RandomCNN(nn.Module):
    """An untrained CNN with fixed random (Kaiming) weights from ``seed``: (N, C, H, W) in [0, 1] -> (N, 512)."""

    def __init__(self, channels: int = 1, seed: int = 0):
        super().__init__()
        g = torch.Generator().manual_seed(seed)
        self.convs = nn.ModuleList([nn.Conv2d(channels, 32, 3, padding=1), nn.Conv2d(32, 64, 4, 2, 1),
                                    nn.Conv2d(64, 128, 4, 2, 1)])
        with torch.no_grad():
            for conv in self.convs:
                fan_in = conv.in_channels * conv.kernel_size[0] * conv.kernel_size[1]
                conv.weight.copy_(torch.randn(conv.weight.shape, generator=g) * (2.0 / fan_in) ** 0.5)
                conv.bias.zero_()
        for p in self.parameters():
            p.requires_grad_(False)

    @torch.no_grad()
    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = (x - 0.5) / 0.5
        for conv in self.convs:
            x = F.relu(conv(x))
        return F.adaptive_avg_pool2d(x, 2).flatten(1)


def train_classifier(data: DataConfig, cfg: EvalConfig, *, device: torch.device | str = "cpu", seed: int = 0,
                     show_progress: bool = True) -> tuple[FashionClassifier, float]:
    """Train the Fashion-MNIST classifier (Adam 1e-3, batch 128, ``cfg.classifier_epochs`` epochs on the first
    ``cfg.classifier_train_limit`` training images); returns it (eval mode) and its test accuracy."""
    x, y = load_images(data, "train", limit=cfg.classifier_train_limit or 0)
    g = torch.Generator().manual_seed(seed)
    torch.manual_seed(seed)
    net = FashionClassifier().to(device)
    opt = torch.optim.Adam(net.parameters(), lr=1e-3)
    per_epoch = max(1, x.shape[0] // 128)
    batches = [perm[i * 128:(i + 1) * 128] for _ in range(cfg.classifier_epochs)
               for perm in [torch.randperm(x.shape[0], generator=g)] for i in range(per_epoch)]
    net.train()
    for i in progress(batches, desc="idvae classifier", unit="step", disable=not show_progress or None):
        loss = F.cross_entropy(net(x[i].to(device).float() / 255), y[i].to(device))
        opt.zero_grad(set_to_none=True)
        loss.backward()
        opt.step()
    net.eval()
    tx, ty = load_images(data, "test", limit=0)
    with torch.no_grad():
        pred = torch.cat([net(tx[s:s + 1000].to(device).float() / 255).argmax(1).cpu()
                          for s in range(0, tx.shape[0], 1000)])
    return net, float((pred == ty).double().mean())


def get_classifier(data: DataConfig, cfg: EvalConfig, *, device: torch.device | str = "cpu",
                   seed: int = 0) -> tuple[FashionClassifier, float]:
    """The classifier for (data, epochs, limit, seed), from the cache or trained now and cached."""
    key = cache_key("idvae-classifier/1", data.root, cfg.classifier_epochs, cfg.classifier_train_limit, seed)
    path = cache_dir("idvae") / f"classifier-{key}.safetensors"
    net = FashionClassifier()
    if path.exists():
        ckpt = load_checkpoint(path, modules={"classifier": net}, restore_rng=False)
        return net.to(device).eval(), float(ckpt.state["test_accuracy"])
    net, acc = train_classifier(data, cfg, device=device, seed=seed)
    save_checkpoint(path, modules={"classifier": net}, state={"test_accuracy": acc}, rng=False)
    return net.eval(), acc


class Expert:
    """A named feature network: images (N, C, H, W) uint8 or float in [0, 1] -> float features (N, D) on CPU."""

    def __init__(self, name: str, net: Callable[[torch.Tensor], torch.Tensor], device: torch.device | str,
                 batch_size: int = 500):
        self.name, self.net, self.device, self.batch_size = name, net, device, batch_size

    @torch.no_grad()
    def __call__(self, images: torch.Tensor) -> torch.Tensor:
        out = []
        for s in range(0, images.shape[0], self.batch_size):
            x = images[s:s + self.batch_size].to(self.device)
            x = x.float() / 255 if x.dtype == torch.uint8 else x.float()
            out.append(self.net(x).float().cpu())
        return torch.cat(out)


def build_experts(names: tuple[str, ...], *, data: DataConfig, cfg: EvalConfig, device: torch.device | str = "cpu",
                  classifier: FashionClassifier | None = None) -> dict[str, Expert]:
    """The feature networks named in ``names`` (see :data:`EXPERTS`)."""
    experts: dict[str, Expert] = {}
    for name in names:
        if name not in EXPERTS:
            raise ValueError(f"unknown feature network {name!r}; choose from {list(EXPERTS)}")
        if name == "classifier":
            net = classifier if classifier is not None else get_classifier(data, cfg, device=device)[0]
            experts[name] = Expert(name, net.to(device).eval().features, device, cfg.batch_size)
        elif name == "random_cnn":
            experts[name] = Expert(name, RandomCNN().to(device).eval(), device, cfg.batch_size)
        elif name == "pixels":
            experts[name] = Expert(name, lambda x: x.flatten(1), device, cfg.batch_size)
        else:
            from essence.metrics.fid import InceptionFeatures

            experts[name] = Expert(name, InceptionFeatures(device=device), device, min(cfg.batch_size, 50))
    return experts


@torch.no_grad()
def generate(model: VAE, n: int, *, seed: int = 0, labels: torch.Tensor | None = None, batch_size: int = 500,
             device: torch.device | str = "cpu") -> torch.Tensor:
    """n prior samples as uint8 images (n, C, S, S), from z_p ~ N(0, I) drawn with ``seed`` (eval mode)."""
    if n < 1:
        raise ValueError(f"the number of samples must be positive, got {n}")
    if model.conditional and labels is None:
        raise ValueError("this model is conditional: pass labels (one class index per sample)")
    if not model.conditional and labels is not None:
        raise ValueError("labels were given but the model is not conditional")
    if labels is not None and labels.shape != (n,):
        raise ValueError(f"labels must have shape ({n},), got {tuple(labels.shape)}")
    g = torch.Generator().manual_seed(seed)
    z = torch.randn(n, model.cfg.latent, generator=g)
    out = []
    with eval_mode(model):
        for s in range(0, n, batch_size):
            y = labels[s:s + batch_size].to(device) if labels is not None else None
            out.append(to_uint8(model.decode(z[s:s + batch_size].to(device), y)).cpu())
    return torch.cat(out)


@torch.no_grad()
def reconstruct_images(model: VAE, images: torch.Tensor, labels: torch.Tensor | None = None, *,
                       batch_size: int = 500, device: torch.device | str = "cpu") -> torch.Tensor:
    """G(mu(x)) of uint8 images (N, C, S, S) as uint8 images (eval mode)."""
    out = []
    with eval_mode(model):
        for s in range(0, images.shape[0], batch_size):
            y = labels[s:s + batch_size].to(device) if labels is not None else None
            out.append(to_uint8(model.reconstruct(to_model_range(images[s:s + batch_size].to(device)), y)).cpu())
    return torch.cat(out)


@torch.no_grad()
def reconstruction_errors(model: VAE, images: torch.Tensor, labels: torch.Tensor | None = None, *,
                          batch_size: int = 500, device: torch.device | str = "cpu") -> torch.Tensor:
    """Per-image MSE (N,) between x and G(mu(x)), per pixel, in [0, 1] pixel units (float outputs, not rounded)."""
    out = []
    with eval_mode(model):
        for s in range(0, images.shape[0], batch_size):
            x = to_model_range(images[s:s + batch_size].to(device))
            y = labels[s:s + batch_size].to(device) if labels is not None else None
            rec = model.reconstruct(x, y).float()
            out.append(((rec - x) / 2).pow(2).flatten(1).mean(1).cpu())
    return torch.cat(out).double()


def fid(real_features: torch.Tensor, fake_features: torch.Tensor) -> float:
    """Fréchet distance between the Gaussian fits of two feature sets (N, D) and (M, D)."""
    return frechet_distance(*feature_statistics(real_features), *feature_statistics(fake_features))


@torch.no_grad()
def conditional_accuracy(model: VAE, classifier: FashionClassifier, n: int, *, seed: int = 0,
                         device: torch.device | str = "cpu") -> torch.Tensor:
    """Whether each of n samples is classified as the label it was generated for: bool (n,).

    A conditional model gets labels 0, 1, ..., K-1, 0, ...; an unconditional model's samples are scored against
    the same labels (chance level, the trivial baseline).
    """
    K = classifier.fc2.out_features
    labels = torch.arange(n) % K
    imgs = generate(model, n, seed=seed, labels=labels if model.conditional else None, device=device)
    with eval_mode(classifier):
        pred = torch.cat([classifier(imgs[s:s + 1000].to(device).float() / 255).argmax(1).cpu()
                          for s in range(0, n, 1000)])
    return pred == labels


def evaluate_model(model: VAE, cfg: IDVAEConfig, experts: dict[str, Expert], *, test_images: torch.Tensor,
                   test_labels: torch.Tensor, real_features: dict[str, torch.Tensor] | None = None,
                   classifier: FashionClassifier | None = None, device: torch.device | str = "cpu",
                   seed: int = 1234) -> dict:
    """All metrics of one model. Returns ``{"fid": {expert: value}, "precision": {...}, "recall": {...},
    "recon_mse": mean, "recon_mse_items": (N,) list, "cond_acc": mean, "cond_acc_items": (n,) list}``.

    ``real_features[name]`` caches the experts' features of the test images (computed when missing).
    Every expert sees the first ``eval.samples`` test images and as many samples (``eval.inception_samples``
    for Inception); samples are drawn with ``seed`` (the same z_p for every model).
    """
    ev = cfg.eval
    real_features = {} if real_features is None else real_features
    n_max = max(ev.samples, ev.inception_samples if "inception" in experts else 0)
    labels = torch.arange(n_max) % cfg.model.num_classes if model.conditional else None
    samples = generate(model, n_max, seed=seed, labels=labels, batch_size=ev.batch_size, device=device)
    out: dict = {"fid": {}, "precision": {}, "recall": {}}
    for name, expert in experts.items():
        n = min(ev.inception_samples if name == "inception" else ev.samples, test_images.shape[0])
        if name not in real_features or real_features[name].shape[0] != n:
            real_features[name] = expert(test_images[:n])
        fake = expert(samples[:n])
        out["fid"][name] = fid(real_features[name], fake)
        if name != "inception" or n > ev.pr_k:
            pr = precision_recall(real_features[name], fake, k=min(ev.pr_k, n - 1))
            out["precision"][name], out["recall"][name] = pr["precision"], pr["recall"]
    errs = reconstruction_errors(model, test_images, test_labels if model.conditional else None,
                                 batch_size=ev.batch_size, device=device)
    out["recon_mse"], out["recon_mse_items"] = float(errs.mean()), errs.tolist()
    if classifier is not None:
        acc = conditional_accuracy(model, classifier, min(ev.samples, 2000), seed=seed + 1, device=device)
        out["cond_acc"], out["cond_acc_items"] = float(acc.double().mean()), acc.double().tolist()
    return out


def load_model(path: str | Path, *, device: str | torch.device = "cpu") -> tuple[VAE, IDVAEConfig, int]:
    """Rebuild a trained model from a checkpoint (file or run directory); returns (model, config, step)."""
    path = Path(path)
    if path.is_dir() and (path / "checkpoints").is_dir():
        path = path / "checkpoints"
    ckpt = read_checkpoint(path)
    if ckpt.config is None:
        raise ValueError(f"{ckpt.path} carries no config; it was not written by essence idvae")
    cfg = IDVAEConfig.from_dict(ckpt.config)
    model = build_model(cfg.model)
    model.load_state_dict(ckpt.module_state("model"))
    return model.to(device).eval(), cfg, ckpt.step


def evaluate_checkpoint(path: str | Path, *, device: str | torch.device = "cpu",
                        overrides: tuple[str, ...] = ()) -> dict:
    """Evaluate a saved run on the test split: FID / precision / recall per expert, reconstruction MSE, and
    the class accuracy of conditional samples."""
    model, cfg, step = load_model(path, device=device)
    if overrides:
        cfg = cfg.with_overrides(overrides)
    test_x, test_y = load_images(cfg.data, "test")
    classifier, clf_acc = get_classifier(cfg.data, cfg.eval, device=device)
    experts = build_experts(cfg.eval.extractors, data=cfg.data, cfg=cfg.eval, device=device, classifier=classifier)
    res = evaluate_model(model, cfg, experts, test_images=test_x, test_labels=test_y, classifier=classifier,
                         device=device)
    res = {k: v for k, v in res.items() if not k.endswith("_items")}
    res.update(step=step, kind=cfg.model.kind, conditional=cfg.model.conditional,
               classifier_test_accuracy=clf_acc, samples=cfg.eval.samples)
    return res
