"""ResNets for small (28-32 px) images, and a factory that also builds timm's ImageNet ResNets.

The small-input ResNets follow He et al. (2016) with the change every CIFAR recipe makes (and the official MoCo
CIFAR-10 demo makes): the 7x7 stride-2 stem and the max-pool are replaced by one 3x3 stride-1 conv, so a
28 px image keeps its resolution in the first stage. A width multiplier scales every stage (``width=64`` is the
standard 64-128-256-512), so a quick CPU preset can use e.g. ``width=16``. ``norm_layer`` lets a method swap
BatchNorm for another normalisation (MoCo's SplitBatchNorm).

    net = build_resnet("resnet18", width=16, in_chans=1)    # small stem, features (N, 128)
    net = build_resnet("timm_resnet50", in_chans=3)          # timm's ImageNet ResNet-50, features (N, 2048)

Every network maps images (N, C, H, W) to pooled features (N, ``net.num_features``); there is no classifier.
"""

from __future__ import annotations

from collections.abc import Callable

import torch
from torch import nn

from essence.core.registry import Registry

__all__ = ["BasicBlock", "Bottleneck", "ResNet", "build_resnet", "RESNETS"]

NormLayer = Callable[[int], nn.Module]


def _conv3x3(c_in: int, c_out: int, stride: int = 1) -> nn.Conv2d:
    return nn.Conv2d(c_in, c_out, 3, stride=stride, padding=1, bias=False)


class BasicBlock(nn.Module):
    """Two 3x3 convs with a residual connection (ResNet-18/34)."""

    expansion = 1

    def __init__(self, c_in: int, planes: int, stride: int, norm_layer: NormLayer):
        super().__init__()
        c_out = planes * self.expansion
        self.conv1 = _conv3x3(c_in, planes, stride)
        self.bn1 = norm_layer(planes)
        self.conv2 = _conv3x3(planes, c_out)
        self.bn2 = norm_layer(c_out)
        self.relu = nn.ReLU(inplace=True)
        self.downsample = None
        if stride != 1 or c_in != c_out:
            self.downsample = nn.Sequential(nn.Conv2d(c_in, c_out, 1, stride=stride, bias=False), norm_layer(c_out))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        identity = x if self.downsample is None else self.downsample(x)
        out = self.relu(self.bn1(self.conv1(x)))
        out = self.bn2(self.conv2(out))
        return self.relu(out + identity)


class Bottleneck(nn.Module):
    """1x1 -> 3x3 -> 1x1 with 4x expansion (ResNet-50/101); the stride sits on the 3x3 conv (torchvision v1.5)."""

    expansion = 4

    def __init__(self, c_in: int, planes: int, stride: int, norm_layer: NormLayer):
        super().__init__()
        c_out = planes * self.expansion
        self.conv1 = nn.Conv2d(c_in, planes, 1, bias=False)
        self.bn1 = norm_layer(planes)
        self.conv2 = _conv3x3(planes, planes, stride)
        self.bn2 = norm_layer(planes)
        self.conv3 = nn.Conv2d(planes, c_out, 1, bias=False)
        self.bn3 = norm_layer(c_out)
        self.relu = nn.ReLU(inplace=True)
        self.downsample = None
        if stride != 1 or c_in != c_out:
            self.downsample = nn.Sequential(nn.Conv2d(c_in, c_out, 1, stride=stride, bias=False), norm_layer(c_out))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        identity = x if self.downsample is None else self.downsample(x)
        out = self.relu(self.bn1(self.conv1(x)))
        out = self.relu(self.bn2(self.conv2(out)))
        out = self.bn3(self.conv3(out))
        return self.relu(out + identity)


class ResNet(nn.Module):
    """A ResNet feature extractor for small images: 3x3 stem (no max-pool), 4 stages, global average pool.

    Args:
        block: :class:`BasicBlock` or :class:`Bottleneck`.
        layers: blocks per stage, e.g. (2, 2, 2, 2) for ResNet-18.
        width: channels of the first stage (64 in the paper's ResNets); stages use width * (1, 2, 4, 8).
        in_chans: input channels (1 for Fashion-MNIST, 3 for RGB).
        norm_layer: ``norm_layer(num_channels) -> nn.Module``; BatchNorm2d by default.
        zero_init_residual: start each residual branch's last BN at gamma = 0 (Goyal et al. 2017).

    Shape: (N, in_chans, H, W) -> (N, num_features) with num_features = 8 * width * block.expansion.
    """

    def __init__(self, block: type[BasicBlock] | type[Bottleneck], layers: tuple[int, ...], *, width: int = 64,
                 in_chans: int = 3, norm_layer: NormLayer | None = None, zero_init_residual: bool = False):
        super().__init__()
        if len(layers) != 4 or any(int(n) < 1 for n in layers):
            raise ValueError(f"layers must be 4 positive block counts, got {layers!r}")
        if int(width) < 1:
            raise ValueError(f"width must be a positive integer, got {width!r}")
        if int(in_chans) < 1:
            raise ValueError(f"in_chans must be a positive integer, got {in_chans!r}")
        norm_layer = norm_layer or nn.BatchNorm2d
        self.in_chans = int(in_chans)
        self.conv1 = _conv3x3(in_chans, width)
        self.bn1 = norm_layer(width)
        self.relu = nn.ReLU(inplace=True)
        c_in = width
        stages = []
        for i, n in enumerate(layers):
            planes = width * 2**i
            blocks = []
            for j in range(n):
                blocks.append(block(c_in, planes, 2 if (i > 0 and j == 0) else 1, norm_layer))
                c_in = planes * block.expansion
            stages.append(nn.Sequential(*blocks))
        self.layer1, self.layer2, self.layer3, self.layer4 = stages
        self.pool = nn.AdaptiveAvgPool2d(1)
        self.num_features = c_in
        for mod in self.modules():
            if isinstance(mod, nn.Conv2d):
                nn.init.kaiming_normal_(mod.weight, mode="fan_out", nonlinearity="relu")
        if zero_init_residual:
            for mod in self.modules():
                last = getattr(mod, "bn3", None) if isinstance(mod, Bottleneck) else getattr(mod, "bn2", None)
                if isinstance(mod, (BasicBlock, Bottleneck)) and getattr(last, "weight", None) is not None:
                    nn.init.zeros_(last.weight)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if x.ndim != 4 or x.shape[1] != self.in_chans:
            raise ValueError(f"expected images (N, {self.in_chans}, H, W), got shape {tuple(x.shape)}")
        x = self.relu(self.bn1(self.conv1(x)))
        x = self.layer4(self.layer3(self.layer2(self.layer1(x))))
        return torch.flatten(self.pool(x), 1)


RESNETS: Registry[Callable[..., nn.Module]] = Registry("backbone")


def _small(block, layers):
    def build(*, width: int = 64, in_chans: int = 3, norm_layer: NormLayer | None = None, **kw) -> nn.Module:
        return ResNet(block, layers, width=width, in_chans=in_chans, norm_layer=norm_layer, **kw)
    return build


RESNETS.register("resnet10", _small(BasicBlock, (1, 1, 1, 1)))
RESNETS.register("resnet18", _small(BasicBlock, (2, 2, 2, 2)))
RESNETS.register("resnet34", _small(BasicBlock, (3, 4, 6, 3)))
RESNETS.register("resnet50", _small(Bottleneck, (3, 4, 6, 3)))


def _timm_resnet50(*, width: int = 64, in_chans: int = 3, norm_layer: NormLayer | None = None, **kw) -> nn.Module:
    """timm's ImageNet ResNet-50 (7x7 stem + max-pool), for 224 px inputs; features (N, 2048)."""
    import timm

    if width != 64:
        raise ValueError("timm_resnet50 has the standard width 64; use resnet50 (small stem) for other widths")
    extra = {"norm_layer": norm_layer} if norm_layer is not None else {}
    net = timm.create_model("resnet50", pretrained=False, num_classes=0, in_chans=in_chans, **extra, **kw)
    return net


RESNETS.register("timm_resnet50", _timm_resnet50)


def build_resnet(name: str, *, width: int = 64, in_chans: int = 3, norm_layer: NormLayer | None = None,
                 **kwargs) -> nn.Module:
    """Build a registered backbone (``resnet10|18|34|50`` with the small stem, or ``timm_resnet50``).

    Raises:
        UnknownNameError: an unregistered name (with a did-you-mean suggestion).
    """
    net = RESNETS.get(name)(width=width, in_chans=in_chans, norm_layer=norm_layer, **kwargs)
    if not hasattr(net, "num_features"):
        raise AssertionError(f"backbone {name} does not expose num_features")
    return net
