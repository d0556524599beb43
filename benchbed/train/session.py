"""What a training loop needs and nothing an entry adds: the data it may see, the device, the seeded
generator, the compute clock it is charged to (unlimited unless a budget is set), and where it reports.
The shared teacher and ``benchbed bench`` train on a plain ``Session``; an entry's ``EntryContext``
(``benchbed.plugin.types``) is a session with the entry's method, budget, options and teacher."""
from __future__ import annotations

import time
from dataclasses import dataclass, field
from typing import Callable, Iterator

import torch

from benchbed.data.bundle import TrainingData, to_float, train_batches
from benchbed.train.compute import ComputeClock
from benchbed.train.devices import autocast


@dataclass
class Session:
    """Training batches come from ``train_batches``, which charges ``clock``; ``cuts`` collects the parts
    of a recipe that ran shorter than asked (``record_cut``)."""

    data: TrainingData
    device: torch.device
    generator: torch.Generator
    clock: ComputeClock
    seed: int = 0
    log: Callable[[str], None] = print
    progress: Callable[[str, float, float], None] = lambda label, done, total: None
    cuts: dict[str, str] = field(default_factory=dict)

    @staticmethod
    def clock_for(data: TrainingData, device: torch.device, epochs: float | None = None, seconds: float | None = None,
                  timer: Callable[[], float] = time.perf_counter) -> ComputeClock:
        """The clock of a budget of ``epochs`` of ``data``'s training split and/or ``seconds`` (None: no limit)."""
        return ComputeClock(epochs, seconds, len(data.train_y), device=device, timer=timer)

    @classmethod
    def create(cls, data: TrainingData, device: torch.device, *, seed: int = 0, generator: torch.Generator | None = None,
               epochs: float | None = None, seconds: float | None = None,
               timer: Callable[[], float] = time.perf_counter, **rest) -> "Session":
        """A session over ``data`` with its clock made from the budget and a generator seeded by ``seed``
        (unless one is given); ``rest`` are the other fields."""
        return cls(data=data, device=device, seed=seed, clock=cls.clock_for(data, device, epochs, seconds, timer),
                   generator=generator or torch.Generator(device=device).manual_seed(seed), **rest)

    def train_batches(self, batch_size: int, *, augmented: bool = True) -> Iterator[tuple[torch.Tensor, torch.Tensor]]:
        """One epoch of training batches, stopping early when the compute budget runs out."""
        for x, y in train_batches(self.data, batch_size, self.generator, augmented=augmented):
            if not self.clock.allows(len(y)):
                return
            yield x, y

    def sample_train_images(self, n: int) -> torch.Tensor:
        """``n`` training images (float in [0, 1], on the device) drawn without replacement by the seed:
        the same images for every method of the same seed."""
        n = min(n, len(self.data.train_y))
        chosen = torch.randperm(len(self.data.train_y), generator=torch.Generator().manual_seed(self.seed))[:n]
        return to_float(self.data.train_x[chosen.to(self.data.train_x.device)])

    def search_epochs(self, share: float, cap: float | None = None) -> float:
        """The epochs a method's mask search may plan on: under a split budget (``compute.finetune_share``)
        the whole search part, otherwise ``share`` of what is left (the rest is its finetune's); at most
        ``cap`` (the recipe's own epochs)."""
        remaining = self.clock.remaining_epochs()
        planned = remaining if self.clock.finetune_epochs is not None else share * remaining
        return planned if cap is None else min(cap, planned)

    def record_cut(self, part: str, why: str) -> None:
        """Say that ``part`` of a recipe ran shorter than asked; an entry's record and leaderboard show it."""
        self.cuts[part] = why

    @property
    def autocast(self) -> torch.autocast:
        """bf16 autocast where the suite's precision resolves to bf16 (``benchbed.train.devices``)."""
        return autocast(self.device)
