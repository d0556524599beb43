"""What the core hands a method for one entry (method × budget × seed), and what it gets back."""
from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable, Iterator, Literal

import torch
from pydantic import BaseModel
from torch import nn

from benchbed.compute import ComputeClock
from benchbed.config import Strict
from benchbed.data import TrainingData, to_float, train_batches
from benchbed.devices import autocast

Protocol = Literal["matched", "paper"]


@dataclass
class EntryContext:
    """Everything an entry may use. ``data`` holds the training and validation splits only: the test
    split reaches nothing but the core's evaluation. Training batches come from ``train_batches``,
    which charges the entry's compute budget (the core also meters every forward pass of the student
    with gradients on, so training on a loop of one's own is charged too); ``notes`` and ``cuts`` are
    copied into the entry's record."""

    method: str
    budget: int | None
    seed: int
    data: TrainingData
    teacher: nn.Module | None
    clock: ComputeClock
    device: torch.device
    options: BaseModel
    generator: torch.Generator
    workdir: Path
    log: Callable[[str], None] = print
    progress: Callable[[str, float, float], None] = lambda label, done, total: None
    protocol: Protocol = "matched"
    notes: dict[str, Any] = field(default_factory=dict)
    cuts: dict[str, str] = field(default_factory=dict)

    def train_batches(self, batch_size: int, *, augmented: bool = True) -> Iterator[tuple[torch.Tensor, torch.Tensor]]:
        """One epoch of training batches, stopping early when the compute budget runs out."""
        for x, y in train_batches(self.data, batch_size, self.generator, augmented=augmented):
            if not self.clock.allows(len(y)):
                return
            yield x, y

    def sample_train_images(self, n: int) -> torch.Tensor:
        """``n`` training images (float in [0, 1], on the device) drawn without replacement by the entry's
        seed: the same images for every method of the same seed."""
        n = min(n, len(self.data.train_y))
        chosen = torch.randperm(len(self.data.train_y), generator=torch.Generator().manual_seed(self.seed))[:n]
        return to_float(self.data.train_x[chosen.to(self.data.train_x.device)])

    def record_cut(self, part: str, why: str) -> None:
        """Say that ``part`` of the method ran shorter than its paper's recipe under this protocol; the
        record and the leaderboard show it."""
        self.cuts[part] = why

    @property
    def autocast(self) -> torch.autocast:
        """bf16 autocast on CUDA; a no-op context on CPU."""
        return autocast(self.device)


@dataclass
class MaskResult:
    """What ``build_mask`` returns: the model with every site frozen to a standard kernel."""

    model: nn.Module
    info: dict[str, Any] = field(default_factory=dict)


@dataclass
class FinetuneResult:
    """What ``finetune`` returns: the selected model (chosen on validation, never test)."""

    model: nn.Module
    info: dict[str, Any] = field(default_factory=dict)


# How far a published ReLU count may sit from a suite's budget and still be set beside it: papers
# report rounded counts (SNL's "14.9K" for a 15,000 budget).
PUBLISHED_BUDGET_TOLERANCE = 0.02


@dataclass(frozen=True)
class PublishedResult:
    """A top-1 accuracy the method's paper reports, for the leaderboard to set beside ours."""

    dataset: str
    model: str
    stem_relu: bool
    relus: int
    accuracy: float  # a fraction
    source: str = ""

    def matches(self, dataset: str, model: str, stem_relu: bool, budget: int | None) -> bool:
        return (budget is not None and (self.dataset, self.model, self.stem_relu) == (dataset, model, stem_relu)
                and abs(self.relus - budget) <= PUBLISHED_BUDGET_TOLERANCE * budget)


@dataclass
class MethodInfo:
    """A method's self-description. Its name is the name its plugin is registered under."""

    description: str
    paper: str = ""
    options: type[BaseModel] = Strict
    budgeted: bool = True  # False for reference rows (all-ReLU) that run once, whatever the budgets
    # Option overrides that make the method run its published recipe (epochs, schedule, images per
    # probe) under ``compute: paper``; merged over the defaults, under the suite's own options.
    paper_recipe: dict[str, Any] = field(default_factory=dict)
    # The teacher variant an entry with these options distils from: "standard" (the suite's teacher)
    # or "robust" (dual-BN, trained on clean, AugMix and PGD inputs). The runner trains each once.
    teacher: Callable[[BaseModel], str] = lambda options: "standard"
    # The paper's own figures; the leaderboard shows the one at a suite's dataset, model and budget.
    published: list[PublishedResult] = field(default_factory=list)
    # Composition: the site kinds ``build_mask`` leaves (relu, masked, patch) and those ``finetune`` can
    # train. A suite that pairs one method's mask with a finetune that cannot take it fails validation.
    produces: frozenset[str] = frozenset({"relu", "masked", "patch"})
    accepts: frozenset[str] = frozenset({"relu", "masked", "patch"})
