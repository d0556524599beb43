"""Dual BatchNorm (RLNet): every BN has a clean and an adversarial copy; all other weights are shared.

``bn_path(model, "adv")`` routes a forward pass through the adversarial copies. A checkpoint of a
dual-BN model records the transform, so it loads back as one."""
from __future__ import annotations

import copy
from contextlib import contextmanager
from typing import Iterator, Literal

import torch
from torch import nn

Path = Literal["clean", "adv"]


class DualBatchNorm2d(nn.Module):
    def __init__(self, bn: nn.BatchNorm2d):
        super().__init__()
        self.clean = bn
        self.adv = copy.deepcopy(bn)
        self.path: Path = "clean"

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.clean(x) if self.path == "clean" else self.adv(x)


def convert_dual_bn(model: nn.Module) -> nn.Module:
    """Replace every ``BatchNorm2d`` of ``model`` (in place) by a dual copy starting from its statistics."""
    for name, module in list(model.named_modules()):
        for child_name, child in list(module.named_children()):
            if isinstance(child, nn.BatchNorm2d):
                setattr(module, child_name, DualBatchNorm2d(child))
    return model


def has_dual_bn(model: nn.Module) -> bool:
    return any(isinstance(m, DualBatchNorm2d) for m in model.modules())


@contextmanager
def bn_path(model: nn.Module, path: Path) -> Iterator[None]:
    duals = [m for m in model.modules() if isinstance(m, DualBatchNorm2d)]
    previous = [m.path for m in duals]
    for m in duals:
        m.path = path
    try:
        yield
    finally:
        for m, p in zip(duals, previous):
            m.path = p
