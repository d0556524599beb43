"""The compute budget every method of a suite gets, identical for all: training epochs (images drawn
from the core's batch iterator / training-set size; a forward-only image, as in a distortion probe,
counts as a third of a training image) and device-seconds (wall time of the method's hooks, read only
after the device has finished its queued work). The core iterator stops handing out batches once
either runs out; code that ignores it is stopped by an alarm after a grace period and its entry is
flagged as over budget."""
from __future__ import annotations

import signal
import threading
import time
from contextlib import contextmanager
from dataclasses import dataclass
from typing import Callable, Iterator

import torch

from benchbed.errors import BudgetExceeded
from benchbed.train.devices import synchronize

# How far past its seconds budget an entry may run before it is stopped by force.
GRACE_FRACTION = 0.10
GRACE_SECONDS = 5.0
# A training step is a forward and a backward pass, about three forwards' worth of work.
FORWARD_SHARE = 1 / 3
# What the core's own meter may see beyond what the batch iterator handed out before an entry counts as
# over budget: the meter sees a method's passes, the iterator its draws, and one batch may straddle them.
OBSERVED_SLACK_FRACTION = 0.02
OBSERVED_SLACK_IMAGES = 512


@dataclass
class ComputeClock:
    """``images`` is what the method was charged (batches drawn, passes it declared); ``observed`` is
    what the core saw pass through the student with gradients on (``meter``), however the method
    drove it. Usage is the larger of the two, so a method that trains on its own loop is still charged."""

    epochs: float | None
    seconds: float | None
    train_size: int
    images: float = 0.0
    observed: float = 0.0
    device: torch.device | None = None
    timer: Callable[[], float] = time.perf_counter
    elapsed: float = 0.0
    _started: float | None = None
    exhausted_at: str | None = None

    @property
    def epochs_used(self) -> float:
        return max(self.images, self.observed) / self.train_size

    def _now(self) -> float:
        # Without a seconds budget nothing reads the time mid-entry, so the GPU is never stalled for it.
        if self.seconds is not None:
            synchronize(self.device)
        return self.timer()

    @property
    def seconds_used(self) -> float:
        running = self._now() - self._started if self._started is not None else 0.0
        return self.elapsed + running

    def remaining_epochs(self) -> float:
        return float("inf") if self.epochs is None else max(0.0, self.epochs - self.epochs_used)

    def remaining_seconds(self) -> float:
        return float("inf") if self.seconds is None else max(0.0, self.seconds - self.seconds_used)

    @property
    def exhausted(self) -> bool:
        if self.epochs is not None and self.epochs_used >= self.epochs - 1e-9:
            self.exhausted_at = self.exhausted_at or "epochs"
        elif self.seconds is not None and self.seconds_used >= self.seconds:
            self.exhausted_at = self.exhausted_at or "seconds"
        return self.exhausted_at is not None

    def allows(self, images: float) -> bool:
        """Whether a batch of ``images`` still fits; charges it if so."""
        if self.exhausted:
            return False
        if self.epochs is not None and (max(self.images, self.observed) + images) / self.train_size > self.epochs + 1e-9:
            self.exhausted_at = "epochs"
            return False
        self.images += images
        return True

    def charge(self, images: float) -> None:
        """Charge work done beyond the batches drawn (extra passes per batch); the next draw sees it."""
        self.images += images

    def allows_forward(self, images: int) -> bool:
        """Whether forward-only work on ``images`` still fits; charges it if so."""
        return self.allows(images * FORWARD_SHARE)

    def meter(self, model: torch.nn.Module) -> Callable[[], None]:
        """Count every image that passes through ``model`` with gradients enabled as training work;
        returns the function that stops counting."""

        def count(module, args) -> None:
            if torch.is_grad_enabled() and args and isinstance(args[0], torch.Tensor):
                self.observed += args[0].shape[0]

        return model.register_forward_pre_hook(count).remove

    def overrun(self) -> str | None:
        """Why the entry used more than its budget, whatever the method did; None within it."""
        if self.epochs is not None:
            slack = self.epochs * self.train_size * OBSERVED_SLACK_FRACTION + OBSERVED_SLACK_IMAGES
            if self.images > self.epochs * self.train_size + 1e-6 or self.observed > self.epochs * self.train_size + slack:
                return (f"used {self.epochs_used:.2f} epochs of training against a budget of {self.epochs:g} "
                        f"(charged {self.images / self.train_size:.2f}, seen by the core {self.observed / self.train_size:.2f})")
        if self.seconds is not None and self.seconds_used > self.seconds * (1 + GRACE_FRACTION) + GRACE_SECONDS:
            return f"ran {self.seconds_used:.1f} s against a compute budget of {self.seconds:g} s"
        return None

    @contextmanager
    def running(self) -> Iterator[None]:
        """Count wall time inside the block; past the grace period, interrupt it with BudgetExceeded."""
        self._started = self._now()
        alarm = self.seconds is not None and threading.current_thread() is threading.main_thread()
        if alarm:
            limit = self.remaining_seconds() * (1 + GRACE_FRACTION) + GRACE_SECONDS

            def stop(signum, frame):
                raise BudgetExceeded(f"entry ran past its {self.seconds:g} s compute budget and was stopped")

            previous = signal.signal(signal.SIGALRM, stop)
            signal.setitimer(signal.ITIMER_REAL, limit)
        try:
            yield
        finally:
            if alarm:
                signal.setitimer(signal.ITIMER_REAL, 0)
                signal.signal(signal.SIGALRM, previous)
            synchronize(self.device)
            self.elapsed += self.timer() - self._started
            self._started = None

    def record(self) -> dict:
        return {"limit": {"epochs": self.epochs, "seconds": self.seconds},
                "used": {"epochs": round(self.epochs_used, 4), "seconds": round(self.seconds_used, 3)},
                "charged_epochs": round(self.images / self.train_size, 4),
                "observed_epochs": round(self.observed / self.train_size, 4),
                "exhausted": self.exhausted_at}
