"""The device an entry runs on, and the two things every GPU code path needs from it."""
from __future__ import annotations

import torch

from benchbed.errors import BenchbedError


def resolve_device(choice: str) -> torch.device:
    if choice == "cuda" and not torch.cuda.is_available():
        raise BenchbedError("the suite asks for `device: cuda` but no CUDA device is visible; use `device: auto`")
    if choice == "auto":
        choice = "cuda" if torch.cuda.is_available() else "cpu"
    return torch.device(choice)


def autocast(device: torch.device) -> torch.autocast:
    """bf16 autocast on CUDA; a no-op context elsewhere."""
    return torch.autocast(device.type, dtype=torch.bfloat16, enabled=device.type == "cuda")


def synchronize(device: torch.device | None) -> None:
    """Wait for the device's queued work, so that a clock read after it measures the device."""
    if device is not None and device.type == "cuda":
        torch.cuda.synchronize(device)
