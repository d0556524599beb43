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
from typing import Iterator

import torch

from benchbed.devices import synchronize
from benchbed.errors import BudgetExceeded

# How far past its seconds budget an entry may run before it is stopped by force.
GRACE_FRACTION = 0.10
GRACE_SECONDS = 5.0
# A training step is a forward and a backward pass, about three forwards' worth of work.
FORWARD_SHARE = 1 / 3


@dataclass
class ComputeClock:
    epochs: float | None
    seconds: float | None
    train_size: int
    images: float = 0.0
    device: torch.device | None = None
    elapsed: float = 0.0
    _started: float | None = None
    exhausted_at: str | None = None

    @property
    def epochs_used(self) -> float:
        return self.images / self.train_size

    def _now(self) -> float:
        # Without a seconds budget nothing reads the time mid-entry, so the GPU is never stalled for it.
        if self.seconds is not None:
            synchronize(self.device)
        return time.perf_counter()

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
        if self.epochs is not None and (self.images + images) / self.train_size > self.epochs + 1e-9:
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
            self.elapsed += time.perf_counter() - self._started
            self._started = None

    def record(self) -> dict:
        return {"limit": {"epochs": self.epochs, "seconds": self.seconds},
                "used": {"epochs": round(self.epochs_used, 4), "seconds": round(self.seconds_used, 3)},
                "exhausted": self.exhausted_at}
