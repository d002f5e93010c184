"""Export a trained query encoder as a plain ResNet backbone state dict (safetensors) that loads without essence.

``essence.nn.resnet`` uses torchvision's / timm's parameter names (``conv1``, ``bn1``, ``layer1.0.conv1``, ...,
``layerN.0.downsample.0/1``), and :class:`~essence.moco.model.SplitBatchNorm` has BatchNorm2d's state dict, so the
exported file is the query encoder's ``backbone`` with the prefix dropped and no projection head (the paper's
linear protocol drops the fc / MLP head too, ``main_lincls.py``). The small-image ResNets differ from the
ImageNet ones only in the stem (3x3 stride-1 conv, no max-pool) and, below width 64, in their channel counts;
the file's metadata says how to build the matching network in plain timm (any even width) or torchvision
(width 64, e.g. ``resnet18()`` with ``conv1``, ``maxpool`` and ``fc`` replaced)::

    import timm, torch
    from safetensors.torch import load_file
    from timm.models.resnet import BasicBlock, ResNet
    net = ResNet(BasicBlock, [1, 1, 1, 1], channels=(16, 32, 64, 128), in_chans=1, num_classes=0,
                 stem_type="deep", stem_width=8)        # a deep stem has 2 * stem_width = 16 output channels
    net.conv1 = torch.nn.Conv2d(1, 16, 3, 1, 1, bias=False); net.maxpool = torch.nn.Identity()   # small stem
    net.load_state_dict(load_file("backbone.safetensors"))      # strict: every key matches
"""

from __future__ import annotations

import json
from pathlib import Path

import torch

from essence.moco.evaluate import load_model

__all__ = ["backbone_state_dict", "export_backbone", "LAYERS"]

LAYERS = {"resnet10": (1, 1, 1, 1), "resnet18": (2, 2, 2, 2), "resnet34": (3, 4, 6, 3), "resnet50": (3, 4, 6, 3)}


def backbone_state_dict(model) -> dict[str, torch.Tensor]:
    """The query encoder's backbone tensors with torchvision/timm ResNet names (contiguous CPU copies)."""
    enc = model.encoder_q if hasattr(model, "encoder_q") else model
    return {k: v.detach().cpu().contiguous().clone() for k, v in enc.backbone.state_dict().items()}


def _build_hint(arch: str, width: int, in_chans: int) -> str:
    block = "Bottleneck" if arch == "resnet50" else "BasicBlock"
    chans = tuple(width * 2 ** i for i in range(4))
    return (f"from timm.models.resnet import ResNet, {block}; net = ResNet({block}, {list(LAYERS[arch])}, "
            f"channels={chans}, in_chans={in_chans}, num_classes=0, stem_type='deep', stem_width={width // 2}); "
            f"net.conv1 = torch.nn.Conv2d({in_chans}, {width}, 3, 1, 1, bias=False); "
            "net.maxpool = torch.nn.Identity(); net.load_state_dict(load_file(path))")


def export_backbone(checkpoint: str | Path, out: str | Path) -> Path:
    """Write the backbone of a run's (or checkpoint's) query encoder to ``out`` (.safetensors); returns the path.

    Raises:
        FileNotFoundError / ValueError: no checkpoint, or one not written by essence moco.
        ValueError: ``out`` does not end in .safetensors, or the backbone is not a small-stem ResNet.
    """
    from safetensors.torch import save_file

    out = Path(out)
    if out.suffix != ".safetensors":
        raise ValueError(f"the export is a safetensors file: name it *.safetensors, got {out.name!r}")
    model, cfg, step = load_model(checkpoint, device="cpu")
    arch = cfg.model.arch
    if arch not in LAYERS:
        raise ValueError(f"export supports the small-stem ResNets {list(LAYERS)}, got model.arch={arch!r}")
    if cfg.model.width % 2:
        raise ValueError(f"export needs an even model.width (timm's stem has 2 * stem_width channels), got "
                         f"{cfg.model.width}")
    meta = {"format": "essence.moco backbone (torchvision/timm ResNet names)", "arch": arch,
            "width": str(cfg.model.width), "in_chans": str(cfg.model.in_chans),
            "layers": json.dumps(list(LAYERS[arch])), "stem": "conv3x3 stride 1, no max-pool",
            "num_features": str(model.encoder_q.backbone.num_features), "step": str(step),
            "input": f"{cfg.aug.size} px, normalised with mean {list(cfg.aug.mean)} std {list(cfg.aug.std)}",
            "build": _build_hint(arch, cfg.model.width, cfg.model.in_chans)}
    out.parent.mkdir(parents=True, exist_ok=True)
    tmp = out.with_name(out.name + ".tmp")
    save_file(backbone_state_dict(model), str(tmp), metadata=meta)
    tmp.replace(out)
    return out
