"""The losses methods share: cross-entropy and Hinton distillation against a frozen teacher. A loss is
``loss(logits, y, x)``; ``x`` lets a distillation loss run its teacher on the same batch."""
from __future__ import annotations

from typing import Callable

import torch
import torch.nn.functional as F
from torch import nn

LossFn = Callable[[torch.Tensor, torch.Tensor, torch.Tensor], torch.Tensor]


def kd_loss(student_logits: torch.Tensor, teacher_logits: torch.Tensor, temperature: float) -> torch.Tensor:
    """Hinton distillation: batch-mean KL(teacher_T ‖ student_T) × T²."""
    t = temperature
    return F.kl_div(F.log_softmax(student_logits.float() / t, 1), F.log_softmax(teacher_logits.float() / t, 1),
                    reduction="batchmean", log_target=True) * t * t


def cross_entropy(label_smoothing: float = 0.0) -> LossFn:
    return lambda logits, y, x: F.cross_entropy(logits.float(), y, label_smoothing=label_smoothing)


def distillation(teacher: nn.Module, temperature: float = 4.0, kd_weight: float = 1.0,
                 ce_weight: float = 1.0, label_smoothing: float = 0.0) -> LossFn:
    """``ce_weight·CE + kd_weight·KD(T)`` against a frozen teacher evaluated on the same batch."""

    def loss(logits: torch.Tensor, y: torch.Tensor, x: torch.Tensor) -> torch.Tensor:
        with torch.no_grad():
            teacher_logits = teacher(x)
        ce = F.cross_entropy(logits.float(), y, label_smoothing=label_smoothing)
        return ce_weight * ce + kd_weight * kd_loss(logits, teacher_logits, temperature)

    return loss
