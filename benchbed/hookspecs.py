"""The contract between the benchbed core and method plugins. Nothing else crosses it.

A *method plugin* is a module registered in the ``benchbed`` entry-point group under the method's
name; it implements ``method_info``, ``build_mask`` and ``finetune``. For one entry the core calls
those hooks on that plugin alone (``PluginManager.subset_hook_caller`` leaves out every other
method), together with any non-method plugins and the core's defaults. ``evaluate`` and
``secure_cost`` have core defaults registered ``trylast``: a method that measures itself
differently (RLNet's dual-BN evaluation) implements them and its answer wins (``firstresult``).
"""
from __future__ import annotations

from typing import Any

import pluggy
from torch import nn

from benchbed.config import EvaluationSettings, SecureCostSettings
from benchbed.context import EntryContext, FinetuneResult, MaskResult, MethodInfo
from benchbed.cost import CostProfile

PROJECT = "benchbed"
hookspec = pluggy.HookspecMarker(PROJECT)
hookimpl = pluggy.HookimplMarker(PROJECT)


@hookspec
def method_info() -> MethodInfo:
    """Describe the method this plugin implements: description, paper, options model (a pydantic
    model with ``extra="forbid"`` whose defaults are the paper's values) and whether it obeys ReLU
    budgets. The method's name is the name the plugin is registered under (its entry-point name)."""


@hookspec(firstresult=True)
def build_mask(ctx: EntryContext, model: nn.Module) -> MaskResult:
    """Linearize ``model`` for ``ctx.budget`` DReLUs.

    ``model`` is a private copy of the shared all-ReLU teacher, on ``ctx.device`` in train mode.
    Change it only through its sites (``benchbed.sites``); train only on ``ctx.train_batches``,
    which charges the entry's compute budget (``ctx.clock``), shared with ``finetune``. Return the
    model with every site frozen to a standard kernel (relu, masked, patch) and at most
    ``ctx.budget`` DReLUs over the counted sites; methods are compared at exactly the budget, so land
    on it. Put anything worth recording (search epochs, whether the budget stopped the search) in
    ``MaskResult.info``. ``ctx.options`` holds the method's validated options.
    """


@hookspec(firstresult=True)
def finetune(ctx: EntryContext, model: nn.Module) -> FinetuneResult:
    """Train the linearized ``model`` (sites frozen) with what is left of the compute budget.

    Select the returned weights on the validation split (``ctx.data.val_x``), never on test.
    ``ctx.teacher`` is the frozen all-ReLU teacher for distillation.
    """


@hookspec(firstresult=True)
def evaluate(ctx: EntryContext, model: nn.Module, settings: EvaluationSettings) -> dict[str, Any]:
    """Measure the final ``model``. Return a flat dict of metrics (fractions in [0, 1]) with at least
    ``clean_accuracy`` (test split) and ``val_accuracy``; nested dicts hold per-item detail. The core
    default is used unless a method implements its own."""


@hookspec(firstresult=True)
def secure_cost(model: nn.Module, input_shape: tuple[int, int, int], settings: SecureCostSettings,
                profile: CostProfile) -> dict[str, Any]:
    """Price one inference of ``model`` on an input of ``input_shape`` under ``profile`` (called once
    for each of the suite's ``secure_cost.profiles``): totals (``drelus``, ``secure_mults``, ``comm_mb``
    of all parties, ``busiest_party_mb``, ``rounds``, ``latency_s`` per network of ``settings``) and a
    ``per_layer`` list, read from the model's sites and linear layers. The core default is used unless
    a plugin prices differently."""


@hookspec
def cost_profiles() -> list[CostProfile]:
    """Contribute protocol profiles (bytes and rounds per primitive, local compute per op) that a
    suite can list in ``secure_cost.profiles``. Every plugin may add some; the core ships ``aby3`` and
    ``cheetah`` (calibrated on SPU) and ``securenn`` (as the knapsack paper's authors price it)."""
