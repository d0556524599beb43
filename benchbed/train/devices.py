"""The device an entry runs on, the precision it computes in, and the wait for its queued work."""
from __future__ import annotations

import functools
from pathlib import Path
from typing import Literal

import torch

from benchbed.errors import BenchbedError


def resolve_device(choice: str) -> torch.device:
    if choice == "cuda" and not torch.cuda.is_available():
        raise BenchbedError("the suite asks for `device: cuda` but no CUDA device is visible; use `device: auto`")
    if choice == "auto":
        choice = "cuda" if torch.cuda.is_available() else "cpu"
    return torch.device(choice)


Precision = Literal["auto", "native", "fp32", "bf16"]
_choice: list[Precision] = ["auto"]  # the suite's ``precision``, set where an entry or the teacher runs


def set_precision(choice: Precision) -> None:
    _choice[0] = choice


@functools.cache
def native_bf16_cpu(cpuinfo: Path = Path("/proc/cpuinfo")) -> bool:
    """Whether this CPU computes bf16 in hardware (AMX or AVX-512 BF16), where oneDNN's bf16 convolutions
    run about twice as fast as fp32 ones; elsewhere bf16 is emulated and slower."""
    try:
        flags = cpuinfo.read_text().split()
    except OSError:
        return False
    return "amx_bf16" in flags or "avx512_bf16" in flags


def precision(device: torch.device) -> str:
    """``bf16`` (autocast) or ``fp32`` on ``device``: ``auto`` is bf16 on CUDA only; ``native`` also on CPUs
    that compute bf16 in hardware."""
    choice = _choice[0]
    if choice in ("fp32", "bf16"):
        return choice
    native = choice == "native" and device.type == "cpu" and native_bf16_cpu()
    return "bf16" if device.type == "cuda" or native else "fp32"


def autocast(device: torch.device) -> torch.autocast:
    """bf16 autocast where ``precision`` says bf16; a no-op context otherwise."""
    return torch.autocast(device.type, dtype=torch.bfloat16, enabled=precision(device) == "bf16")


def synchronize(device: torch.device | None) -> None:
    """Wait for the device's queued work, so that a clock read after it measures the device."""
    if device is not None and device.type == "cuda":
        torch.cuda.synchronize(device)
