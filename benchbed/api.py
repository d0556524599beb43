"""What a method plugin imports: the hook marker, the types the hooks pass, the site switches and
the core training loop. Everything here is stable for plugin authors."""
from benchbed.config import EvaluationSettings, SecureCostSettings, Strict
from benchbed.context import EntryContext, FinetuneResult, MaskResult, MethodInfo
from benchbed.errors import BenchbedError
from benchbed.hookspecs import hookimpl
from benchbed.sites import (IDENTITY, ZERO, ReLUSite, SiteKernel, counted_sites, drelu_count, patch_drelus, patch_gate,
                            relu_count, sites)
from benchbed.training import (DistillationOptions, TrainRecipe, accuracy, cross_entropy, distillation,
                               distilled_finetune, fit, kd_loss)

__all__ = [
    "BenchbedError", "DistillationOptions", "distilled_finetune", "EntryContext", "EvaluationSettings", "FinetuneResult", "IDENTITY", "MaskResult", "MethodInfo",
    "ReLUSite", "SecureCostSettings", "SiteKernel", "Strict", "TrainRecipe", "ZERO", "accuracy", "counted_sites",
    "cross_entropy", "distillation", "drelu_count", "fit", "hookimpl", "kd_loss", "patch_drelus", "patch_gate",
    "relu_count", "sites",
]
