"""Small Fashion-MNIST classifiers for the robustness benchmark (scaled-down stand-ins for the paper's nets).

- ``alexnet``: this benchmark's baseline ("AlexNet"): two 5x5 conv layers with max-pooling and a small
  fully connected head, no normalisation layers (AlexNet's design, a few thousand times smaller).
- ``vgg``: a VGG-style net (3x3 conv pairs with BatchNorm, as VGG-19+BN in Table 1).
- ``resnet``: a pre-activation ResNet (BasicBlocks, three stages), as ResNet-18/50 in Table 1.
- ``mlp``: a one-hidden-layer perceptron (the least accurate model, to span a wide range of clean error).
- ``wide_resnet``: the ResNet at twice the width (the most accurate).

Every model takes images in [0, 1] (N, C, H, W) (C = 1: Fashion-MNIST, 3: the composited photos) and
normalises them itself, so corrupted images can be fed directly.
"""

from __future__ import annotations

import torch
from torch import nn

from essence.core.registry import Registry

__all__ = ["ARCHITECTURES", "build_model", "AlexNetSmall", "VGGSmall", "ResNetSmall", "MLP"]

FMNIST_MEAN, FMNIST_STD = 0.2860, 0.3530
RGB_MEAN, RGB_STD = 0.45, 0.25      # the composited photos (essence.data.composite)


class _Normalize(nn.Module):
    def __init__(self, mean: float, std: float, in_channels: int = 1):
        super().__init__()
        self.mean, self.std = (mean, std) if in_channels == 1 else (RGB_MEAN, RGB_STD)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return (x - self.mean) / self.std


class AlexNetSmall(nn.Module):
    """conv5x5(8) - ReLU - maxpool - conv5x5(16) - ReLU - maxpool - fc(64) - ReLU - dropout - fc."""

    def __init__(self, in_channels: int = 1, num_classes: int = 10):
        super().__init__()
        self.features = nn.Sequential(
            _Normalize(FMNIST_MEAN, FMNIST_STD, in_channels),
            nn.Conv2d(in_channels, 8, 5, padding=2), nn.ReLU(inplace=True), nn.MaxPool2d(2),
            nn.Conv2d(8, 16, 5, padding=2), nn.ReLU(inplace=True), nn.MaxPool2d(2),
            nn.AdaptiveAvgPool2d(7))
        self.classifier = nn.Sequential(nn.Flatten(), nn.Linear(16 * 49, 64), nn.ReLU(inplace=True),
                                        nn.Dropout(0.5), nn.Linear(64, num_classes))

    def forward(self, x: torch.Tensor) -> torch.Tensor:   # (N, C, H, W) in [0, 1] -> (N, classes)
        return self.classifier(self.features(x))


def _conv_bn(cin: int, cout: int) -> list[nn.Module]:
    return [nn.Conv2d(cin, cout, 3, padding=1, bias=False), nn.BatchNorm2d(cout), nn.ReLU(inplace=True)]


class VGGSmall(nn.Module):
    """[conv3x3-BN-ReLU] x2 (32) - pool - [conv3x3-BN-ReLU] x2 (64) - pool - conv(128) - GAP - fc."""

    def __init__(self, in_channels: int = 1, num_classes: int = 10, width: int = 16):
        super().__init__()
        w = width
        self.features = nn.Sequential(
            _Normalize(FMNIST_MEAN, FMNIST_STD, in_channels),
            *_conv_bn(in_channels, w), *_conv_bn(w, w), nn.MaxPool2d(2),
            *_conv_bn(w, 2 * w), *_conv_bn(2 * w, 2 * w), nn.MaxPool2d(2),
            *_conv_bn(2 * w, 4 * w), nn.AdaptiveAvgPool2d(1), nn.Flatten())
        self.classifier = nn.Linear(4 * w, num_classes)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.classifier(self.features(x))


class _PreActBlock(nn.Module):
    def __init__(self, cin: int, cout: int, stride: int):
        super().__init__()
        self.bn1, self.conv1 = nn.BatchNorm2d(cin), nn.Conv2d(cin, cout, 3, stride, 1, bias=False)
        self.bn2, self.conv2 = nn.BatchNorm2d(cout), nn.Conv2d(cout, cout, 3, 1, 1, bias=False)
        self.shortcut = (nn.Conv2d(cin, cout, 1, stride, bias=False) if stride != 1 or cin != cout else None)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        out = torch.relu(self.bn1(x))
        skip = self.shortcut(out) if self.shortcut is not None else x
        out = self.conv1(out)
        out = self.conv2(torch.relu(self.bn2(out)))
        return out + skip


class ResNetSmall(nn.Module):
    """Pre-activation ResNet: conv3x3(w) stem, stages of BasicBlocks (w, 2w, 4w; strides 2, 2, 1), GAP, fc."""

    def __init__(self, in_channels: int = 1, num_classes: int = 10, width: int = 16, blocks: int = 1):
        super().__init__()
        w = width
        layers: list[nn.Module] = [_Normalize(FMNIST_MEAN, FMNIST_STD, in_channels),
                                   nn.Conv2d(in_channels, w, 3, 1, 1, bias=False)]
        cin = w
        for cout, stride in ((w, 2), (2 * w, 2), (4 * w, 1)):
            for b in range(blocks):
                layers.append(_PreActBlock(cin, cout, stride if b == 0 else 1))
                cin = cout
        layers += [nn.BatchNorm2d(cin), nn.ReLU(inplace=True), nn.AdaptiveAvgPool2d(1), nn.Flatten()]
        self.features = nn.Sequential(*layers)
        self.classifier = nn.Linear(cin, num_classes)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.classifier(self.features(x))


class MLP(nn.Module):
    """flatten - fc(hidden) - ReLU - fc: no convolution, no translation invariance (AdaptiveAvgPool to 16 px
    first, so it accepts any image size)."""

    def __init__(self, in_channels: int = 1, num_classes: int = 10, hidden: int = 128):
        super().__init__()
        self.features = nn.Sequential(_Normalize(FMNIST_MEAN, FMNIST_STD, in_channels), nn.AdaptiveAvgPool2d(16),
                                      nn.Flatten(), nn.Linear(in_channels * 256, hidden), nn.ReLU(inplace=True))
        self.classifier = nn.Linear(hidden, num_classes)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.classifier(self.features(x))


ARCHITECTURES: Registry[type[nn.Module]] = Registry("architecture")
ARCHITECTURES.register("alexnet", AlexNetSmall)
ARCHITECTURES.register("vgg", VGGSmall)
ARCHITECTURES.register("resnet", ResNetSmall)
ARCHITECTURES.register("mlp", MLP)
ARCHITECTURES.register("wide_resnet", lambda in_channels=1, num_classes=10: ResNetSmall(in_channels, num_classes,
                                                                                       width=32, blocks=1))


def build_model(arch: str, in_channels: int = 1, num_classes: int = 10) -> nn.Module:
    return ARCHITECTURES.get(arch)(in_channels=in_channels, num_classes=num_classes)
