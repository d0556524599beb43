"""The core's own hook implementations, registered ``trylast`` so that a method's override wins."""
from __future__ import annotations

from typing import Any

from torch import nn

from benchbed import cost, robustness
from benchbed.config import EvaluationSettings, SecureCostSettings
from benchbed.context import EntryContext
from benchbed.hookspecs import hookimpl
from benchbed.training import accuracy


@hookimpl(trylast=True)
def evaluate(ctx: EntryContext, model: nn.Module, settings: EvaluationSettings) -> dict[str, Any]:
    data = ctx.data
    metrics = {"clean_accuracy": accuracy(model, data.test_x, data.test_y, settings.batch_size),
               "val_accuracy": accuracy(model, data.val_x, data.val_y, settings.batch_size)}
    if settings.corruptions is not None:
        metrics.update(robustness.corruption_accuracy(model, data, settings.corruptions, settings.batch_size))
    if settings.pgd is not None:
        metrics.update(robustness.pgd_accuracy(model, data, settings.pgd, settings.batch_size, ctx.seed))
    return metrics


@hookimpl(trylast=True)
def secure_cost(model: nn.Module, input_shape: tuple[int, int, int], settings: SecureCostSettings,
                profile: cost.CostProfile) -> dict[str, Any]:
    return cost.price(model, input_shape, settings, profile)


@hookimpl
def cost_profiles() -> list[cost.CostProfile]:
    return [cost.aby3_profile(), cost.securenn_profile()]
