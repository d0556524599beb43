"""The one evaluation every entry gets: every metric of the registry the suite turns on, clean
accuracy (with validation accuracy) always and first. A dual-BN model (RLNet's) is measured as its paper measures it: clean accuracy,
validation accuracy and the non-adversarial metrics through its clean BatchNorms, the adversarial
metrics (and a second clean accuracy) through its adversarial ones — so a metric added to the registry
reaches every method, whatever its BatchNorms."""
from __future__ import annotations

from contextlib import nullcontext
from typing import Any

import torch
from torch import nn

from benchbed.config import EvaluationSettings
from benchbed.data.bundle import DataBundle
from benchbed.model.dual_bn import bn_path, has_dual_bn
from benchbed.model.graph import fold_batchnorms
from benchbed.robustness.registry import MetricRegistry, Progress
from benchbed.train.loop import accuracy


def inference_model(model: nn.Module, input_shape: tuple[int, ...]) -> tuple[nn.Module, int]:
    """``model`` as evaluation runs it, and how many BatchNorms that took folding: the same network with
    its BatchNorms folded into their convolutions, a pass fewer over every map (resnet_tiny infers
    1.6x faster so on a CPU; outputs equal up to float rounding), in eval mode, channels_last as the
    batches are (``to_float``)."""
    model, folded = fold_batchnorms(model, input_shape)
    return model.eval().to(memory_format=torch.channels_last), folded


def evaluate_model(model: nn.Module, data: DataBundle, settings: EvaluationSettings, seed: int,
                   metrics: MetricRegistry, progress: Progress = lambda label, done, total: None) -> dict[str, Any]:
    """Every metric the suite turns on (clean accuracy always) of ``model`` (in eval mode) on ``data``.
    ``columns`` names each accuracy's leaderboard title and the number of test images it was measured on."""
    model, folded = inference_model(model, data.input_shape)
    size = settings.batch_size
    dual = has_dual_bn(model)
    out: dict[str, Any] = {}
    columns: dict[str, dict] = {}
    chosen = metrics.chosen(settings.metrics)
    for adversarial in (False, True):
        path = bn_path(model, "adv" if adversarial else "clean") if dual else nullcontext()
        with path:
            if adversarial and dual:  # the clean accuracy of the path the adversarial metrics are measured on
                out["clean_accuracy_adv_bn"] = accuracy(model, data.test_x, data.test_y, size)
                columns["clean_accuracy_adv_bn"] = {"title": "clean acc, adv BN %", "images": len(data.test_y)}
            for name, options in chosen.items():
                metric = metrics[name]
                if metric.adversarial != adversarial:
                    continue
                result = metric.measure(model, data, options, size, seed, progress)
                out.update(result)
                columns.update({key: {"title": title, "images": metric.sample_size(result)}
                                for key, title in metric.columns.items()})
    for name in chosen:
        if metrics[name].judge is not None:
            out.update(metrics[name].judge(out))
    if dual:
        out["bn_paths"] = {name: "adv" if metrics[name].adversarial else "clean" for name in chosen}
    out["columns"] = columns
    out["inference"] = {"batchnorms_folded": folded}  # how the model was run (not a figure)
    return out
