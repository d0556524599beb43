"""Metrics by name. Any plugin contributes metrics through the ``metrics`` hook (the core's clean
accuracy, PGD, corruption and AutoAttack metrics arrive the same way); a suite turns one on by giving
its settings under ``evaluation.<name>`` (a metric marked ``always``, clean accuracy, is on in every
suite), and every entry, dual-BN ones included, is measured with it."""
from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Callable, Iterable

from pydantic import BaseModel, ValidationError
from torch import nn

from benchbed.data.bundle import DataBundle
from benchbed.errors import BenchbedError
from benchbed.registry import Registry, did_you_mean

Progress = Callable[[str, float, float], None]


@dataclass(frozen=True)
class Metric:
    """``measure(model, data, settings, batch_size, seed, progress)`` returns flat metrics (fractions) and
    nested detail, reading only the test split, in eval mode. ``columns`` titles the flat accuracies the
    leaderboard shows (key -> title); ``sample_size(result)`` is the number of test images they were
    measured on (for the binomial interval). ``adversarial``: a dual-BN model is measured through its
    adversarial BatchNorms (RLNet's protocol), otherwise through its clean ones."""

    name: str
    settings: type[BaseModel]
    measure: Callable[[nn.Module, DataBundle, Any, int, int, Progress], dict]
    columns: dict[str, str]
    sample_size: Callable[[dict], int]
    adversarial: bool = False
    description: str = ""
    # ``judge(metrics)``, run once every metric has measured: flags read across metrics (AutoAttack against
    # PGD-20), returned as flat metrics and written into the metric's own detail
    judge: Callable[[dict], dict] | None = None
    # ``cost(settings, classes)``: (gradient passes in training images, no-grad forwards in images) one
    # model's measurement makes at most — what ``benchbed plan`` charges an entry's evaluation
    cost: Callable[[Any, int], tuple[float, float]] | None = None
    # measured on every entry, whether the suite names it or not (clean accuracy); first, before the rest
    always: bool = False


class MetricRegistry(Registry[Metric]):
    def __init__(self, entries: Iterable[tuple[str, Metric]]):
        entries = list(entries)
        reserved = [package for package, metric in entries if metric.name == "batch_size"]
        if reserved:  # evaluation.batch_size is the evaluation's own setting
            raise BenchbedError(f"{reserved[0]} registers a robustness metric named 'batch_size', which is "
                                "evaluation's own setting; rename it")
        super().__init__("metric", "metrics", entries)

    def settings(self, name: str, given: Any) -> BaseModel:
        """``given`` (a mapping from a suite, or the settings model itself) validated against metric ``name``."""
        model = self[name].settings
        return given if isinstance(given, model) else model.model_validate(given or {})

    def chosen(self, sections: dict[str, Any]) -> dict[str, BaseModel]:
        """The metrics a suite's ``evaluation`` sections turn on, with their settings: those measured on
        every entry first, then the suite's in its order."""
        always = {name: self.settings(name, sections.get(name)) for name, metric in self.items() if metric.always}
        return {**always, **{name: self.settings(name, given) for name, given in sections.items() if name not in always}}

    def problems(self, sections: dict[str, Any]) -> list[str]:
        """Why a suite's ``evaluation`` sections do not validate, each with its field path."""
        found = []
        for name, given in sections.items():
            if name not in self:
                found.append(f"evaluation.{name}: unknown metric; installed: {', '.join(self)}"
                             + did_you_mean(name, self))
                continue
            try:
                self.settings(name, given)
            except ValidationError as exc:
                found += [f"evaluation.{name}.{'.'.join(map(str, e['loc']))}: {e['msg']}" for e in exc.errors()]
        return found
