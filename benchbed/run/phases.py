"""Each phase of an entry — mask search, finetune, evaluation, price — timed and with its peak memory:
on CUDA the allocator's peak, on a CPU the process's peak resident memory (Linux lets a process
reset it, so each phase reads its own; elsewhere it is the process's peak so far). An entry's process
is forked from the run's, so its resident memory includes the pages of the data and teachers it
shares: the peak is what the machine must hold, and ``rise_mb`` (the peak less what was resident as
the phase began) is what the phase itself added, the figure that tells the methods apart."""
from __future__ import annotations

import resource
import sys
import time
from contextlib import contextmanager
from pathlib import Path
from typing import Iterator

import torch

from benchbed.train.devices import synchronize

PROC = Path("/proc/self")


def _reset_peak(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.reset_peak_memory_stats(device)
        return
    try:
        (PROC / "clear_refs").write_text("5")  # resets VmHWM to the current resident size
    except OSError:
        pass


def _status_mb(field: str) -> float | None:
    """A ``/proc/self/status`` figure (kB) in MB, or None off Linux."""
    try:
        line = next(l for l in (PROC / "status").read_text().splitlines() if l.startswith(f"{field}:"))
        return int(line.split()[1]) / 1e3
    except (OSError, StopIteration):
        return None


def _peak_mb(device: torch.device) -> float:
    if device.type == "cuda":
        return torch.cuda.max_memory_allocated(device) / 1e6
    peak = _status_mb("VmHWM")
    if peak is None:
        scale = 1 if sys.platform == "darwin" else 1024  # ru_maxrss: bytes on macOS, KiB elsewhere
        peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * scale / 1e6
    return peak


def _current_mb(device: torch.device) -> float:
    if device.type == "cuda":
        return torch.cuda.memory_allocated(device) / 1e6
    current = _status_mb("VmRSS")
    return _peak_mb(device) if current is None else current  # off Linux: no rise can be told


class PhaseLog:
    """``with log("finetune"): ...`` adds {"seconds", "peak_mb", "rise_mb"} under ``log.phases["finetune"]``."""

    def __init__(self, device: torch.device):
        self.device = device
        self.phases: dict[str, dict[str, float]] = {}

    @contextmanager
    def __call__(self, name: str) -> Iterator[None]:
        synchronize(self.device)
        _reset_peak(self.device)
        resident = _current_mb(self.device)
        start = time.perf_counter()
        try:
            yield
        finally:
            synchronize(self.device)
            peak = _peak_mb(self.device)
            self.phases[name] = {"seconds": round(time.perf_counter() - start, 3), "peak_mb": round(peak, 1),
                                 "rise_mb": round(max(0.0, peak - resident), 1)}
