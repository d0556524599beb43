"""Robust training pieces shared by the robust teacher recipe and RLNet: AugMix on device batches,
PGD examples through the adversarial BatchNorm path, and the teacher's robust loss."""
from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn
from torchvision.transforms import v2

from benchbed.config import RobustTraining
from benchbed.model.dual_bn import bn_path
from benchbed.model.passes import eval_mode
from benchbed.robustness.attacks import pgd
from benchbed.train.losses import LossFn


def augmix(x: torch.Tensor, settings: RobustTraining) -> torch.Tensor:
    """torchvision's AugMix on a float batch in [0, 1]; randomness from the global torch RNG."""
    transform = v2.AugMix(severity=settings.augmix_severity, mixture_width=settings.augmix_width,
                          chain_depth=settings.augmix_depth, all_ops=settings.augmix_all_ops)
    as_bytes = (x * 255).round().to(torch.uint8)
    groups = [transform(part) for part in as_bytes.chunk(settings.augmix_groups)]
    return torch.cat(groups).to(x.dtype) / 255


def adversarial(model: nn.Module, x: torch.Tensor, y: torch.Tensor, settings: RobustTraining, objective=None) -> torch.Tensor:
    """PGD examples through the adversarial BN path, generated in eval mode so that the attack's
    forward passes leave the BatchNorm statistics alone."""
    extra = {} if objective is None else {"objective": objective}
    with eval_mode(model), bn_path(model, "adv"):
        return pgd(model, x, y, eps=settings.eps, step=settings.step, steps=settings.pgd_steps, **extra)


def robust_teacher_loss(model: nn.Module, settings: RobustTraining) -> LossFn:
    """Mean of CE on clean (given), AugMix (clean BN) and PGD (adversarial BN) inputs."""

    def loss(logits: torch.Tensor, y: torch.Tensor, x: torch.Tensor) -> torch.Tensor:
        clean = F.cross_entropy(logits.float(), y)
        mixed = F.cross_entropy(model(augmix(x, settings)).float(), y)
        adv = adversarial(model, x, y, settings)
        with bn_path(model, "adv"):
            attacked = F.cross_entropy(model(adv).float(), y)
        return (clean + mixed + attacked) / 3

    return loss
