"""The compute budget every entry of a suite gets, identical for all: epochs of training-image
equivalents and/or device-seconds. Usage is what the core's meter (``benchbed.train.meter``) counted
of the student's and the teacher's layers, whoever called them; seconds are the wall time of the
method's hooks, read only after the device has finished its queued work. The batch iterator stops
handing out batches once the next would not fit; code that ignores it is stopped when its metered work
passes the budget, or by an alarm past the seconds budget, and its entry is flagged as over budget.

A suite may split the budget (``compute.finetune``): the finetune then gets exactly that part, and the
mask search at most the rest — what a claim about masks at the same finetune needs."""
from __future__ import annotations

import signal
import threading
import time
from contextlib import contextmanager
from dataclasses import dataclass, field
from typing import Callable, Iterator

import torch

from benchbed.errors import BudgetExceeded
from benchbed.train.devices import synchronize
from benchbed.train.meter import FORWARD_SHARE

# How far past its seconds budget an entry may run before the alarm stops it by force.
GRACE_FRACTION = 0.10
GRACE_SECONDS = 5.0
# How far past a budget an entry may end and still be ok: the last batch straddles the limit.
SLACK_FRACTION = 0.02
SLACK_IMAGES = 512
SECONDS_SLACK_FRACTION = 0.05

__all__ = ["ComputeClock", "FORWARD_SHARE"]


@dataclass
class ComputeClock:
    """``usage`` is the entry's metered work in training images; ``stage`` names the part of a split
    budget that runs now ("search" or "finetune"), with its own limit."""

    epochs: float | None
    seconds: float | None
    train_size: int
    device: torch.device | None = None
    timer: Callable[[], float] = time.perf_counter
    usage: float = 0.0
    elapsed: float = 0.0
    exhausted_at: str | None = None
    finetune_epochs: float | None = None
    stage: str = "search"
    stage_start: float = 0.0
    stages: dict[str, float] = field(default_factory=dict)
    _started: float | None = None
    _estimate: float = 1.0  # training images per image of a batch, as the last batch cost
    _last_draw: tuple[float, int] | None = None

    # -- limits -----------------------------------------------------------------------------------
    def _stage_limit_units(self) -> float | None:
        """The training images the current stage may use in all (since the entry started)."""
        if self.epochs is None:
            return None
        total = self.epochs * self.train_size
        if self.finetune_epochs is None:
            return total
        if self.stage == "search":
            return total - self.finetune_epochs * self.train_size
        return self.stage_start + self.finetune_epochs * self.train_size

    def hard_limit(self) -> float | None:
        """Metered work past which an entry is stopped where it stands."""
        if self.epochs is None:
            return None
        return self.epochs * self.train_size * (1 + SLACK_FRACTION) + SLACK_IMAGES

    def begin_finetune(self, metered: float) -> None:
        """Enter the finetune stage (``metered``: the core's count so far): under a split budget it gets
        exactly its share, whatever the search left."""
        self.stages["search"] = metered
        self.stage, self.stage_start, self.exhausted_at = "finetune", self.usage, None

    # -- usage ------------------------------------------------------------------------------------
    @property
    def epochs_used(self) -> float:
        return self.usage / self.train_size

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
        limit = self._stage_limit_units()
        return float("inf") if limit is None else max(0.0, limit - self.usage) / self.train_size

    def remaining_seconds(self) -> float:
        return float("inf") if self.seconds is None else max(0.0, self.seconds - self.seconds_used)

    @property
    def exhausted(self) -> bool:
        limit = self._stage_limit_units()
        if limit is not None and self.usage >= limit - 1e-9:
            self.exhausted_at = self.exhausted_at or "epochs"
        elif self.seconds is not None and self.seconds_used >= self.seconds:
            self.exhausted_at = self.exhausted_at or "seconds"
        return self.exhausted_at is not None

    def allows(self, images: int) -> bool:
        """Whether a batch of ``images`` still fits at what the last batch cost per image."""
        if self._last_draw is not None:
            before, n = self._last_draw
            if self.usage > before and n:
                self._estimate = (self.usage - before) / n
        if self.exhausted:
            return False
        limit = self._stage_limit_units()
        if limit is not None and self.usage + images * self._estimate > limit + 1e-9:
            self.exhausted_at = "epochs"
            return False
        self._last_draw = (self.usage, images)
        return True

    def fits(self, images: float, share: float = 1.0) -> bool:
        """Whether ``images`` no-grad forwards of ``share`` of the model (a probe re-runs part of it)
        still fit; the meter charges them when they run."""
        limit = self._stage_limit_units()
        return not self.exhausted and (limit is None or self.usage + images * share * FORWARD_SHARE <= limit + 1e-9)

    def overrun(self, metered: float) -> str | None:
        """Why the entry used more than its budget (``metered``: the core's own count); None within it."""
        if self.epochs is not None and metered > self.epochs * self.train_size * (1 + SLACK_FRACTION) + SLACK_IMAGES:
            return (f"used {metered / self.train_size:.2f} epochs of training against a budget of {self.epochs:g} "
                    "(metered by the core)")
        if self.epochs is not None and self.finetune_epochs is not None and "search" in self.stages:
            parts = {"mask search": (self.stages["search"], self.epochs - self.finetune_epochs),
                     "finetune": (metered - self.stages["search"], self.finetune_epochs)}
            for part, (used, allowed) in parts.items():
                if used > allowed * self.train_size * (1 + SLACK_FRACTION) + SLACK_IMAGES:
                    return (f"its {part} used {used / self.train_size:.2f} epochs against the {allowed:g} the split "
                            "budget gives it (metered by the core)")
        if self.seconds is not None and self.seconds_used > self.seconds * (1 + SECONDS_SLACK_FRACTION):
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

    def record(self, metered: float | None = None, breakdown: dict | None = None) -> dict:
        used = self.usage if metered is None else metered
        out = {"limit": {"epochs": self.epochs, "seconds": self.seconds, "finetune_epochs": self.finetune_epochs},
               "used": {"epochs": round(used / self.train_size, 4), "seconds": round(self.seconds_used, 3)},
               "exhausted": self.exhausted_at}
        if "search" in self.stages:
            out["used"]["search_epochs"] = round(self.stages["search"] / self.train_size, 4)
            out["used"]["finetune_epochs"] = round((used - self.stages["search"]) / self.train_size, 4)
        if breakdown:
            out["by_kind"] = {k: round(v / self.train_size, 4) for k, v in breakdown.items()}
        return out
