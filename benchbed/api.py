"""What a plugin imports — the one door between the benchbed core and plugins: the hook marker, the
types the hooks pass, the site switches, the core training loop and losses, top-k under a budget, the
robustness pieces (dual BN, attacks, AugMix, evaluation) that robust methods build on, the site kernels'
elementwise pieces (a per-channel polynomial, a mask in the activation's layout), and what a plugin
needs to contribute a dataset, a model, a protocol profile or a robustness metric; and, for a lab that
trains elsewhere, any registered model by name (``build_model``) and a suite's splits (``suite_splits``). Plugins import nothing
else from ``benchbed``; a test enforces it. Everything here is stable for plugin authors."""
from benchbed.config import (DistillationOptions, EvaluationSettings, RobustTraining, SecureCostSettings, Strict,
                             TrainRecipe)
from benchbed.data.bundle import DataBundle, TrainingData, bundle_from_arrays, to_float
from benchbed.data.registry import DatasetSpec
from benchbed.errors import BenchbedError
from benchbed.model.architectures import Normalize, stage_modules
from benchbed.model.dual_bn import bn_path, convert_dual_bn, has_dual_bn
from benchbed.model.fused import broadcast_like, polynomial
from benchbed.model.passes import eval_mode, forward_hooks, observe
from benchbed.model.polynomials import dapa_bypass, dapa_coefficients
from benchbed.model.registry import ModelSpec
from benchbed.model.selection import top_k
from benchbed.model.sites import (IDENTITY, ZERO, MaskedKernel, PatchKernel, ReLUSite, SiteKernel, convert_relus,
                                  counted_sites, drelu_count, patch_drelus, patch_gate, relu_count, sites)
from benchbed.plugin.hookspecs import hookimpl
from benchbed.plugin.toolkit import distilled_finetune
from benchbed.plugin.types import (Claim, ClaimSide, Condition, EntryContext, FinetuneResult, MaskResult, MethodInfo,
                                   PublishedResult)
from benchbed.robustness.evaluate import evaluate_model
from benchbed.robustness.registry import Metric
from benchbed.robustness.training import adversarial, augmix
from benchbed.submissions.describe import Splits, build_model, suite_splits
from benchbed.secure.cost import Beaver, CostProfile, Linear, Op, SetupStep
from benchbed.train.loop import accuracy, fit, planned_steps
from benchbed.train.losses import cross_entropy, distillation, kd_loss
from benchbed.train.meter import FORWARD_SHARE, forward_share_after

__all__ = [
    "FORWARD_SHARE", "IDENTITY", "ZERO", "Beaver", "BenchbedError", "Claim", "ClaimSide", "Condition", "CostProfile", "DataBundle",
    "DatasetSpec", "Linear", "Op", "SetupStep",
    "DistillationOptions", "EntryContext", "EvaluationSettings", "FinetuneResult", "MaskResult", "MaskedKernel",
    "MethodInfo", "ModelSpec", "Normalize", "PatchKernel", "PublishedResult", "ReLUSite", "RobustTraining", "Metric",
    "SecureCostSettings", "SiteKernel", "Splits", "Strict", "TrainRecipe", "TrainingData", "accuracy", "adversarial", "augmix",
    "bn_path", "broadcast_like", "build_model", "bundle_from_arrays", "convert_dual_bn", "convert_relus", "counted_sites", "cross_entropy",
    "dapa_bypass", "dapa_coefficients", "distillation", "distilled_finetune", "drelu_count", "eval_mode",
    "evaluate_model", "fit", "forward_hooks", "forward_share_after", "has_dual_bn", "hookimpl", "kd_loss", "observe", "patch_drelus",
    "patch_gate", "planned_steps", "polynomial", "relu_count", "sites", "stage_modules", "suite_splits", "to_float", "top_k",
]
