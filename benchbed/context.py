"""What the core hands a method for one entry (method × budget × seed), and what it gets back."""
from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable, Iterator

import torch
from pydantic import BaseModel
from torch import nn

from benchbed.compute import ComputeClock
from benchbed.data import DataBundle, train_batches


@dataclass
class EntryContext:
    """Everything an entry may use. Training batches come only from ``train_batches``, which charges
    the entry's compute budget; ``notes`` is copied into the entry's record."""

    method: str
    budget: int | None
    seed: int
    data: DataBundle
    teacher: nn.Module | None
    clock: ComputeClock
    device: torch.device
    options: BaseModel
    generator: torch.Generator
    workdir: Path
    log: Callable[[str], None] = print
    progress: Callable[[str, float, float], None] = lambda label, done, total: None
    notes: dict[str, Any] = field(default_factory=dict)

    def train_batches(self, batch_size: int, *, augmented: bool = True) -> Iterator[tuple[torch.Tensor, torch.Tensor]]:
        """One epoch of training batches, stopping early when the compute budget runs out."""
        for x, y in train_batches(self.data, batch_size, self.generator, augmented=augmented):
            if not self.clock.allows(len(y)):
                return
            yield x, y

    @property
    def autocast(self) -> torch.autocast:
        """bf16 autocast on CUDA; a no-op context on CPU."""
        return torch.autocast(self.device.type, dtype=torch.bfloat16, enabled=self.device.type == "cuda")


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


@dataclass
class MethodInfo:
    """A method's self-description. Its name is the name its plugin is registered under."""

    description: str
    paper: str = ""
    options: type[BaseModel] = BaseModel
    budgeted: bool = True  # False for reference rows (all-ReLU) that run once, whatever the budgets
