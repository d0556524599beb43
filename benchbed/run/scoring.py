"""Scoring a final model, the same for every entry of a run (``runner``), a finished run priced again
(``reprice``) and a model trained elsewhere (``submissions.verify``): its ReLUs and DReLUs counted
from its sites, the suite's one evaluation, and its price under every profile the suite names. The
model is always the one the core rebuilt from the saved payload; no plugin code runs here."""
from __future__ import annotations

from contextlib import nullcontext
from typing import Any, Callable, ContextManager

from torch import nn

from benchbed.config import SecureCostSettings, Suite
from benchbed.data.bundle import DataBundle
from benchbed.model.sites import drelu_count, relu_count
from benchbed.plugin.manager import Plugins
from benchbed.robustness.evaluate import evaluate_model
from benchbed.secure.cost import CostProfile, price
from benchbed.registry import Registry

Progress = Callable[[str, float, float], None]


def counts(model: nn.Module) -> dict[str, int]:
    """ReLUs and DReLUs over the counted sites (the budget's), and over every site."""
    return {"relus": relu_count(model), "drelus": drelu_count(model),
            "relus_all_sites": relu_count(model, False), "drelus_all_sites": drelu_count(model, False)}


def prices(model: nn.Module, input_shape: tuple[int, ...], settings: SecureCostSettings,
           profiles: Registry[CostProfile]) -> dict[str, dict]:
    """The model's price under each of ``settings``' profiles."""
    return {name: price(model, input_shape, settings, profiles[name]) for name in settings.profiles}


def score(model: nn.Module, suite: Suite, data: DataBundle, plugins: Plugins, seed: int,
          progress: Progress = lambda *a: None,
          phase: Callable[[str], ContextManager[None]] = lambda name: nullcontext()) -> dict[str, Any]:
    """The record fields of a final model: counts, ``metrics`` (the suite's evaluation on ``data``'s
    test split) and, when the suite prices, ``secure_cost``; ``phase`` times the evaluation and the pricing."""
    found: dict[str, Any] = counts(model)
    with phase("evaluate"):
        found["metrics"] = evaluate_model(model, data, suite.evaluation, seed, plugins.metrics, progress=progress)
    if suite.secure_cost.enabled:
        with phase("price"):
            found["secure_cost"] = prices(model, data.input_shape, suite.secure_cost, plugins.cost_profiles)
    return found
