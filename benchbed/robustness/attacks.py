"""L∞ PGD in pixel space ([0, 1], before the model's own normalisation)."""
from __future__ import annotations

from typing import Callable

import torch
import torch.nn.functional as F
from torch import nn

Objective = Callable[[torch.Tensor, torch.Tensor, torch.Tensor], torch.Tensor]


def cross_entropy_objective(logits: torch.Tensor, y: torch.Tensor, x: torch.Tensor) -> torch.Tensor:
    return F.cross_entropy(logits.float(), y)


def pgd(model: nn.Module, x: torch.Tensor, y: torch.Tensor, *, eps: float, step: float, steps: int,
        random_start: bool = True, generator: torch.Generator | None = None,
        objective: Objective = cross_entropy_objective) -> torch.Tensor:
    """Maximise ``objective(model(x_adv), y, x)`` over the eps-ball around ``x`` intersected with [0, 1].

    The model's mode is the caller's choice (evaluation attacks run in eval mode); its parameters
    get no gradient from the attack."""
    requires = [p.requires_grad for p in model.parameters()]
    for p in model.parameters():
        p.requires_grad_(False)
    try:
        x = x.detach()
        if random_start:
            noise = torch.rand(x.shape, generator=generator, device=x.device, dtype=x.dtype) * 2 - 1
            adv = (x + eps * noise).clamp(0, 1)
        else:
            adv = x.clone()
        for _ in range(steps):
            adv.requires_grad_(True)
            loss = objective(model(adv), y, x)
            (grad,) = torch.autograd.grad(loss, adv)
            adv = adv.detach() + step * grad.sign()
            adv = torch.min(torch.max(adv, x - eps), x + eps).clamp(0, 1)
        return adv.detach()
    finally:
        for p, r in zip(model.parameters(), requires):
            p.requires_grad_(r)
