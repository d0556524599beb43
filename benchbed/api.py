"""What a plugin imports — the one door between the benchbed core and methods: the hook marker, the
types the hooks pass, the site switches, the core training loop and losses, and the robustness
pieces (dual BN, attacks, AugMix, evaluation) that robust methods build on. Plugins import nothing
else from ``benchbed``; a test enforces it. Everything here is stable for plugin authors."""
from benchbed.compute import FORWARD_SHARE
from benchbed.config import (DistillationOptions, EvaluationSettings, RobustTraining, SecureCostSettings, Strict,
                             TrainRecipe)
from benchbed.context import EntryContext, FinetuneResult, MaskResult, MethodInfo, PublishedResult
from benchbed.data import DataBundle, TrainingData, to_float
from benchbed.dual_bn import bn_path, convert_dual_bn, has_dual_bn
from benchbed.errors import BenchbedError
from benchbed.evaluation import evaluate_model
from benchbed.hookspecs import hookimpl
from benchbed.models import stage_modules
from benchbed.polynomials import dapa_bypass, dapa_coefficients
from benchbed.robust_training import adversarial, augmix
from benchbed.sites import (IDENTITY, ZERO, MaskedKernel, PatchKernel, ReLUSite, SiteKernel, counted_sites, drelu_count, patch_drelus, patch_gate,
                            eval_mode, relu_count, sites)
from benchbed.training import accuracy, cross_entropy, distillation, distilled_finetune, fit, kd_loss, planned_steps

__all__ = [
    "FORWARD_SHARE", "IDENTITY", "ZERO", "BenchbedError", "DataBundle", "DistillationOptions", "EntryContext",
    "EvaluationSettings", "FinetuneResult", "MaskResult", "MaskedKernel", "MethodInfo", "PatchKernel", "PublishedResult", "ReLUSite", "RobustTraining",
    "SecureCostSettings", "SiteKernel", "Strict", "TrainRecipe", "TrainingData", "accuracy", "adversarial", "augmix", "bn_path",
    "convert_dual_bn", "counted_sites", "cross_entropy", "dapa_bypass", "dapa_coefficients", "distillation", "distilled_finetune",
    "drelu_count", "eval_mode",
    "evaluate_model", "fit", "has_dual_bn", "hookimpl", "kd_loss", "patch_drelus", "patch_gate", "planned_steps",
    "relu_count",
    "sites", "stage_modules", "to_float",
]
