"""Each phase of an entry — mask search, finetune, evaluation, price — timed and with its peak memory:
on CUDA the allocator's peak, on a CPU the process's peak resident memory (Linux lets a process
reset it, so each phase reads its own; elsewhere it is the process's peak so far).

An entry's process is forked from the run's and shares its pages: the data, the teachers, and the
heap its training freed and kept (``keep_freed_pages``), which the entry reuses without growing its
resident size. So the resident peak is what the machine must hold for one entry, and on Linux each
phase also records ``own_mb``: the peak of the memory private to the process (what it wrote, copied
out of the shared pages or new), sampled every ``SAMPLE_S`` — what each further entry run side by side
adds, and the figure that tells the methods apart."""
from __future__ import annotations

import resource
import sys
import threading
import time
from contextlib import contextmanager
from pathlib import Path
from typing import Iterator

import torch

from benchbed.train.devices import synchronize

PROC = Path("/proc/self")
SAMPLE_S = 0.2  # a training step of ResNet-18 on a CPU takes seconds; reading the rollup, milliseconds


def _reset_peak(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.reset_peak_memory_stats(device)
        return
    try:
        (PROC / "clear_refs").write_text("5")  # resets VmHWM to the current resident size
    except OSError:
        pass


def _peak_mb(device: torch.device) -> float:
    if device.type == "cuda":
        return torch.cuda.max_memory_allocated(device) / 1e6
    try:
        line = next(l for l in (PROC / "status").read_text().splitlines() if l.startswith("VmHWM:"))
        return int(line.split()[1]) / 1e3
    except (OSError, StopIteration):
        scale = 1 if sys.platform == "darwin" else 1024  # ru_maxrss: bytes on macOS, KiB elsewhere
        return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * scale / 1e6


def private_mb() -> float | None:
    """The process's private memory (clean and dirty) in MB, or None off Linux."""
    try:
        fields = dict(line.split(":", 1) for line in (PROC / "smaps_rollup").read_text().splitlines()[1:])
        return sum(int(fields[k].split()[0]) for k in ("Private_Clean", "Private_Dirty")) / 1e3
    except (OSError, KeyError, ValueError):
        return None


class _PrivatePeak:
    """The largest ``private_mb`` seen from start to ``stop``, read every ``SAMPLE_S`` on a thread of its own."""

    def __init__(self) -> None:
        self.peak = private_mb()
        self._stopped = threading.Event()
        self._thread = threading.Thread(target=self._sample, daemon=True)
        if self.peak is not None:
            self._thread.start()

    def _sample(self) -> None:
        while not self._stopped.wait(SAMPLE_S):
            self._take()

    def _take(self) -> None:
        now = private_mb()
        if now is not None and self.peak is not None:
            self.peak = max(self.peak, now)

    def stop(self) -> float | None:
        if self._thread.is_alive():
            self._stopped.set()
            self._thread.join()
        self._take()
        return self.peak


class PhaseLog:
    """``with log("finetune"): ...`` adds {"seconds", "peak_mb", "own_mb"} under ``log.phases["finetune"]``
    (``own_mb`` None where the private memory cannot be read: off Linux, and on CUDA, whose peak is the
    process's own allocator's)."""

    def __init__(self, device: torch.device):
        self.device = device
        self.phases: dict[str, dict[str, float | None]] = {}

    @contextmanager
    def __call__(self, name: str) -> Iterator[None]:
        synchronize(self.device)
        _reset_peak(self.device)
        private = _PrivatePeak() if self.device.type == "cpu" else None
        start = time.perf_counter()
        try:
            yield
        finally:
            synchronize(self.device)
            own = private.stop() if private is not None else None
            self.phases[name] = {"seconds": round(time.perf_counter() - start, 3),
                                 "peak_mb": round(_peak_mb(self.device), 1),
                                 "own_mb": None if own is None else round(own, 1)}
