"""Each phase of an entry — mask search, finetune, evaluation, price — timed and with its peak memory:
on CUDA the allocator's peak, on a CPU the process's peak resident memory (Linux lets a process
reset it, so each phase reads its own; elsewhere it is the process's peak so far)."""
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


def _peak_mb(device: torch.device) -> float:
    if device.type == "cuda":
        return torch.cuda.max_memory_allocated(device) / 1e6
    try:
        line = next(l for l in (PROC / "status").read_text().splitlines() if l.startswith("VmHWM:"))
        return int(line.split()[1]) / 1e3
    except (OSError, StopIteration):
        scale = 1 if sys.platform == "darwin" else 1024  # ru_maxrss: bytes on macOS, KiB elsewhere
        return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * scale / 1e6


class PhaseLog:
    """``with log("finetune"): ...`` adds {"seconds", "peak_mb"} under ``log.phases["finetune"]``."""

    def __init__(self, device: torch.device):
        self.device = device
        self.phases: dict[str, dict[str, float]] = {}

    @contextmanager
    def __call__(self, name: str) -> Iterator[None]:
        synchronize(self.device)
        _reset_peak(self.device)
        start = time.perf_counter()
        try:
            yield
        finally:
            synchronize(self.device)
            self.phases[name] = {"seconds": round(time.perf_counter() - start, 3),
                                 "peak_mb": round(_peak_mb(self.device), 1)}
