"""The core's own hook implementations, registered ``trylast`` so that a method's override wins."""
from __future__ import annotations

from typing import Any

from torch import nn

from benchbed import cost
from benchbed.config import EvaluationSettings, SecureCostSettings
from benchbed.context import EntryContext
from benchbed.evaluation import evaluate_model
from benchbed.hookspecs import hookimpl


@hookimpl(trylast=True)
def evaluate(ctx: EntryContext, model: nn.Module, settings: EvaluationSettings) -> dict[str, Any]:
    return evaluate_model(model, ctx.data, settings, ctx.seed, progress=ctx.progress)


@hookimpl(trylast=True)
def secure_cost(model: nn.Module, input_shape: tuple[int, int, int], settings: SecureCostSettings,
                profile: cost.CostProfile) -> dict[str, Any]:
    return cost.price(model, input_shape, settings, profile)


@hookimpl
def cost_profiles() -> list[cost.CostProfile]:
    return [cost.aby3_profile(), cost.cheetah_profile(), cost.securenn_profile()]
