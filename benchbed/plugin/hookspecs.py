"""The contract between the benchbed core and plugins. Nothing else crosses it.

A *method plugin* is a module registered in the ``benchbed`` entry-point group under the method's
name; it implements ``method_info``, ``build_mask`` and ``finetune``. For one entry the core calls
those hooks on that plugin alone (``PluginManager.subset_hook_caller`` leaves out every other
method), together with any non-method plugins. ``evaluate`` and ``secure_cost`` are a method's own
extra measurements: the core measures every entry itself, and records what a method adds beside
its own figures, never in their place.

Any plugin, method or not, may also contribute what suites name: ``datasets``, ``models``,
``cost_profiles`` (protocol profiles) and ``metrics``. The core's built-ins arrive
through the same hooks (``benchbed.plugin.defaults``).
"""
from __future__ import annotations

from typing import Any

import pluggy
from torch import nn

from benchbed.config import EvaluationSettings, SecureCostSettings
from benchbed.data.registry import DatasetSpec
from benchbed.model.registry import ModelSpec
from benchbed.plugin.types import EntryContext, FinetuneResult, MaskResult, MethodInfo
from benchbed.robustness.registry import Metric
from benchbed.secure.cost import CostProfile

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
    """Linearize ``model`` for ``ctx.budget`` DReLUs (an int for every budgeted method).

    ``model`` is a private copy of the shared all-ReLU teacher, on ``ctx.device`` in train mode.
    Change it only through its sites (``benchbed.api.sites``); train only on ``ctx.train_batches``,
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
    """Extra metrics of the final ``model`` that the core does not measure (fractions in [0, 1] for
    accuracies; nested dicts hold detail). The core measures clean, validation and every robustness
    metric of the suite itself; a metric here under a name the core also measured is recorded apart
    and flagged where it disagrees."""


@hookspec(firstresult=True)
def secure_cost(model: nn.Module, input_shape: tuple[int, int, int], settings: SecureCostSettings,
                profile: CostProfile) -> dict[str, Any]:
    """A method's own price of one inference of ``model`` under ``profile``, recorded beside the
    core's (``benchbed.secure.cost.price``) and flagged where they disagree."""


@hookspec
def cost_profiles() -> list[CostProfile]:
    """Contribute protocol profiles (bytes and rounds per primitive, local compute per op) that a
    suite can list in ``secure_cost.profiles``."""


@hookspec
def datasets() -> list[DatasetSpec]:
    """Contribute datasets (``benchbed.api.DatasetSpec``: a name, a loader returning a ``DataBundle`` with
    its validation split carved out of train, the input shape, the classes and a presence check) that a
    suite can name in ``dataset.name``; every plugin may add some."""


@hookspec
def models() -> list[ModelSpec]:
    """Contribute architectures (``benchbed.api.ModelSpec``: a name and a builder returning a model whose
    every ReLU is a ``ReLUSite`` and whose first layer normalises its input) that a suite can name in
    ``model.name``; every plugin may add some."""


@hookspec
def metrics() -> list[Metric]:
    """Contribute metrics (``benchbed.api.Metric``: a name, a settings model, the
    measurement, its column titles and whether a dual-BN model is measured through its adversarial
    BatchNorms) that a suite turns on under ``evaluation.<name>``; every entry is then measured with it."""
