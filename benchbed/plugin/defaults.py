"""The core's own contributions, registered through the same hooks as any plugin's: the built-in
datasets, models, protocol profiles and metrics (clean accuracy among them)."""
from __future__ import annotations

from benchbed.data.datasets import BUILTIN_DATASETS
from benchbed.data.registry import DatasetSpec
from benchbed.model.architectures import BUILTIN_MODELS
from benchbed.model.registry import ModelSpec
from benchbed.plugin.hookspecs import hookimpl
from benchbed.robustness.autoattack_accuracy import AUTOATTACK_METRIC
from benchbed.robustness.clean_accuracy import CLEAN_METRIC
from benchbed.robustness.corruption_accuracy import CORRUPTION_METRIC
from benchbed.robustness.pgd_accuracy import PGD_METRIC
from benchbed.robustness.registry import Metric
from benchbed.secure import profiles
from benchbed.secure.cost import CostProfile


@hookimpl
def cost_profiles() -> list[CostProfile]:
    return [profiles.aby3_profile(), profiles.cheetah_profile(), profiles.delphi_profile(), profiles.securenn_profile()]


@hookimpl
def datasets() -> list[DatasetSpec]:
    return list(BUILTIN_DATASETS)


@hookimpl
def models() -> list[ModelSpec]:
    return list(BUILTIN_MODELS)


@hookimpl
def metrics() -> list[Metric]:
    return [CLEAN_METRIC, PGD_METRIC, AUTOATTACK_METRIC, CORRUPTION_METRIC]
