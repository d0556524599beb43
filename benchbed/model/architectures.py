"""The built-in architectures, registered through the core's ``models`` hook like any plugin's. Every
ReLU of every model is its own ``ReLUSite``; inputs are pixels in [0, 1] and the normalisation is the
model's first layer, so attacks work in pixel space."""
from __future__ import annotations

from typing import Sequence

import torch
from torch import nn

from benchbed.errors import BenchbedError
from benchbed.model.registry import ModelRegistry, ModelSpec
from benchbed.model.sites import ReLUSite


class Normalize(nn.Module):
    def __init__(self, mean: Sequence[float], std: Sequence[float]):
        super().__init__()
        self.register_buffer("mean", torch.tensor(mean, dtype=torch.float32).view(1, -1, 1, 1))
        self.register_buffer("std", torch.tensor(std, dtype=torch.float32).view(1, -1, 1, 1))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return (x - self.mean.to(x.dtype)) / self.std.to(x.dtype)


def _conv3x3(cin: int, cout: int, stride: int = 1) -> nn.Conv2d:
    return nn.Conv2d(cin, cout, 3, stride=stride, padding=1, bias=False)


def _shortcut(cin: int, cout: int, stride: int) -> nn.Sequential:
    """A residual block's shortcut: the identity, or a strided 1x1 projection with its BN where the shape changes."""
    if stride == 1 and cin == cout:
        return nn.Sequential()
    return nn.Sequential(nn.Conv2d(cin, cout, 1, stride=stride, bias=False), nn.BatchNorm2d(cout))


class BasicBlock(nn.Module):
    """Post-activation ResNet block: relu1 after the first BN, relu2 after the residual sum."""

    def __init__(self, cin: int, cout: int, stride: int):
        super().__init__()
        self.conv1 = _conv3x3(cin, cout, stride)
        self.bn1 = nn.BatchNorm2d(cout)
        self.relu1 = ReLUSite()
        self.conv2 = _conv3x3(cout, cout)
        self.bn2 = nn.BatchNorm2d(cout)
        self.shortcut = _shortcut(cin, cout, stride)
        self.relu2 = ReLUSite()

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        out = self.relu1(self.bn1(self.conv1(x)))
        return self.relu2(self.bn2(self.conv2(out)) + self.shortcut(x))


class CifarResNet(nn.Module):
    """ResNet for small images: 3x3 stem conv, no max-pool; ``stages`` of (width, blocks, stride).
    ``stem_relu=False`` builds it with no ReLU after the stem at all, as SNL's and AutoReP's code do."""

    def __init__(self, stages: Sequence[tuple[int, int, int]], num_classes: int, in_channels: int,
                 mean: Sequence[float], std: Sequence[float], stem_relu: bool = True):
        super().__init__()
        width = stages[0][0]
        self.normalize = Normalize(mean, std)
        self.conv1 = _conv3x3(in_channels, width)
        self.bn1 = nn.BatchNorm2d(width)
        self.relu = ReLUSite(role="stem") if stem_relu else nn.Identity()
        layers = []
        for out, blocks, stride in stages:
            layers.append(nn.Sequential(*[BasicBlock(width if i == 0 else out, out, stride if i == 0 else 1)
                                      for i in range(blocks)]))
            width = out
        self.layers = nn.ModuleList(layers)
        self.pool = nn.AdaptiveAvgPool2d(1)
        self.fc = nn.Linear(width, num_classes)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = self.relu(self.bn1(self.conv1(self.normalize(x))))
        for layer in self.layers:
            x = layer(x)
        return self.fc(torch.flatten(self.pool(x), 1))


class PreActBlock(nn.Module):
    """Wide-ResNet block: BN-ReLU-conv twice; the first ReLU also feeds a projection shortcut."""

    def __init__(self, cin: int, cout: int, stride: int):
        super().__init__()
        self.bn1 = nn.BatchNorm2d(cin)
        self.relu1 = ReLUSite()
        self.conv1 = _conv3x3(cin, cout, stride)
        self.bn2 = nn.BatchNorm2d(cout)
        self.relu2 = ReLUSite()
        self.conv2 = _conv3x3(cout, cout)
        self.project = None if (stride == 1 and cin == cout) else nn.Conv2d(cin, cout, 1, stride=stride, bias=False)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        act = self.relu1(self.bn1(x))
        out = self.conv2(self.relu2(self.bn2(self.conv1(act))))
        return out + (x if self.project is None else self.project(act))


class WideResNet(nn.Module):
    """Pre-activation: its stem conv has no ReLU after it, so ``stem_relu`` changes nothing."""

    def __init__(self, depth: int, widen: int, num_classes: int, in_channels: int,
                 mean: Sequence[float], std: Sequence[float], stem_relu: bool = True):
        super().__init__()
        if (depth - 4) % 6:
            raise BenchbedError(f"wide ResNet depth must be 6n+4, got {depth}")
        n = (depth - 4) // 6
        widths = [16, 16 * widen, 32 * widen, 64 * widen]
        self.normalize = Normalize(mean, std)
        self.conv1 = _conv3x3(in_channels, widths[0])
        layers, cin = [], widths[0]
        for out, stride in zip(widths[1:], (1, 2, 2)):
            layers.append(nn.Sequential(*[PreActBlock(cin if i == 0 else out, out, stride if i == 0 else 1)
                                      for i in range(n)]))
            cin = out
        self.layers = nn.ModuleList(layers)
        self.bn = nn.BatchNorm2d(cin)
        self.relu = ReLUSite()
        self.pool = nn.AdaptiveAvgPool2d(1)
        self.fc = nn.Linear(cin, num_classes)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = self.conv1(self.normalize(x))
        for layer in self.layers:
            x = layer(x)
        return self.fc(torch.flatten(self.pool(self.relu(self.bn(x))), 1))


class Bottleneck(nn.Module):
    """ImageNet ResNet-50 block (v1.5, the torchvision layout): 1x1, 3x3 with the stride, 1x1 to 4x the
    width; a ReLU after each of the first two BNs and one after the residual sum."""

    expansion = 4

    def __init__(self, cin: int, width: int, stride: int):
        super().__init__()
        cout = width * self.expansion
        self.conv1 = nn.Conv2d(cin, width, 1, bias=False)
        self.bn1 = nn.BatchNorm2d(width)
        self.relu1 = ReLUSite()
        self.conv2 = _conv3x3(width, width, stride)
        self.bn2 = nn.BatchNorm2d(width)
        self.relu2 = ReLUSite()
        self.conv3 = nn.Conv2d(width, cout, 1, bias=False)
        self.bn3 = nn.BatchNorm2d(cout)
        self.shortcut = _shortcut(cin, cout, stride)
        self.relu3 = ReLUSite()

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        out = self.relu2(self.bn2(self.conv2(self.relu1(self.bn1(self.conv1(x))))))
        return self.relu3(self.bn3(self.conv3(out)) + self.shortcut(x))


class ImageNetResNet(nn.Module):
    """ResNet for 224x224 images: 7x7 stride-2 stem, 3x3 stride-2 max-pool, bottleneck stages of
    (width, blocks, stride). For pricing at the scale the 2PC systems report (Cheetah's and
    CrypTFlow2's ResNet-50): its max-pool is priced as the comparisons it computes, but it has no
    secure export."""

    def __init__(self, stages: Sequence[tuple[int, int, int]], num_classes: int, in_channels: int,
                 mean: Sequence[float], std: Sequence[float], stem_relu: bool = True):
        super().__init__()
        self.normalize = Normalize(mean, std)
        self.conv1 = nn.Conv2d(in_channels, 64, 7, stride=2, padding=3, bias=False)
        self.bn1 = nn.BatchNorm2d(64)
        self.relu = ReLUSite(role="stem") if stem_relu else nn.Identity()
        self.maxpool = nn.MaxPool2d(3, stride=2, padding=1)
        layers, cin = [], 64
        for width, blocks, stride in stages:
            layers.append(nn.Sequential(*[Bottleneck(cin if i == 0 else width * 4, width, stride if i == 0 else 1)
                                          for i in range(blocks)]))
            cin = width * 4
        self.layers = nn.ModuleList(layers)
        self.pool = nn.AdaptiveAvgPool2d(1)
        self.fc = nn.Linear(cin, num_classes)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = self.maxpool(self.relu(self.bn1(self.conv1(self.normalize(x)))))
        for layer in self.layers:
            x = layer(x)
        return self.fc(torch.flatten(self.pool(x), 1))


def stage_modules(model: nn.Module) -> list[nn.Module]:
    """The modules whose outputs are the model's stages (for feature distillation such as attention
    transfer); empty for a model that does not declare ``layers``."""
    layers = getattr(model, "layers", None)
    return list(layers) if isinstance(layers, nn.ModuleList) else []


BUILTIN_MODELS: list[ModelSpec] = [
    ModelSpec("resnet18_cifar", lambda **kw: CifarResNet([(64, 2, 1), (128, 2, 2), (256, 2, 2), (512, 2, 2)], **kw),
              "ResNet-18 for 32x32: 3x3 stem, no max-pool (557,056 ReLUs with the stem ReLU, 491,520 without)"),
    ModelSpec("wrn22_8", lambda **kw: WideResNet(22, 8, **kw), "Wide ResNet 22-8, pre-activation"),
    ModelSpec("resnet_narrow", lambda **kw: CifarResNet([(16, 1, 1), (32, 1, 2), (64, 1, 2)], **kw),
              "narrow 3-stage ResNet (16/32/64 channels, one block each) for small inputs and CPU suites"),
    ModelSpec("resnet_tiny", lambda **kw: CifarResNet([(8, 1, 1), (16, 1, 2), (32, 1, 2)], **kw),
              "tiny 3-stage ResNet (8/16/32 channels, one block each) for Fashion-MNIST on CPUs "
              "(28,224 ReLUs on 28x28 with the stem ReLU, 21,952 without)"),
    ModelSpec("resnet50_imagenet",
              lambda **kw: ImageNetResNet([(64, 3, 1), (128, 4, 2), (256, 6, 2), (512, 3, 2)], **kw),
              "ResNet-50 for 224x224 ImageNet (v1.5; 9,608,704 ReLUs and a 3x3 max-pool): for pricing at the "
              "2PC systems' scale, no secure export"),
]


def builtin_models() -> ModelRegistry:
    """The core's models alone (the run's registry adds every plugin's): what tests and the calibration use."""
    return ModelRegistry(("benchbed", spec) for spec in BUILTIN_MODELS)
