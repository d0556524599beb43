"""The one evaluation every method gets: clean and validation accuracy, corruption accuracy and PGD.

The core ``evaluate`` hook is this function; a method that measures itself differently (RLNet's dual
BN) calls it once per BN path with the metrics that path serves, so a new robustness metric added here
reaches every method."""
from __future__ import annotations

from typing import Any, Callable, Collection

from torch import nn

from benchbed.config import EvaluationSettings
from benchbed.data import DataBundle
from benchbed.robustness import corruption_accuracy, pgd_accuracy
from benchbed.training import accuracy

METRICS = ("clean", "val", "corruptions", "pgd")


def evaluate_model(model: nn.Module, data: DataBundle, settings: EvaluationSettings, seed: int,
                   metrics: Collection[str] = METRICS,
                   progress: Callable[[str, float, float], None] = lambda label, done, total: None) -> dict[str, Any]:
    """The chosen ``metrics`` of ``model`` (in eval mode) on ``data``'s test and validation splits;
    corruptions and PGD only where ``settings`` turns them on. ``progress(label, done, total)`` hears
    where it stands (the entry context's ``progress``)."""
    unknown = set(metrics) - set(METRICS)
    if unknown:
        raise ValueError(f"unknown metrics {sorted(unknown)}; choose from {METRICS}")
    model.eval()
    size = settings.batch_size
    out: dict[str, Any] = {}
    progress("evaluating: clean and validation accuracy", 0, 1)
    if "clean" in metrics:
        out["clean_accuracy"] = accuracy(model, data.test_x, data.test_y, size)
    if "val" in metrics:
        out["val_accuracy"] = accuracy(model, data.val_x, data.val_y, size)
    if "corruptions" in metrics and settings.corruptions is not None:
        out.update(corruption_accuracy(model, data, settings.corruptions, size,
                                       lambda done, total: progress("evaluating: corruptions", done, total)))
    if "pgd" in metrics and settings.pgd is not None:
        progress(f"evaluating: PGD-{settings.pgd.steps} on {settings.pgd.images} images", 0, 1)
        out.update(pgd_accuracy(model, data, settings.pgd, size, seed))
    return out
