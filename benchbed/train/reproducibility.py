"""Seeding every random source an entry touches, torch's deterministic kernels, and what a record says
about whether the same suite, seed and machine give the same numbers."""
from __future__ import annotations

import os
import random

import numpy as np
import torch

# cuBLAS's documented setting for reproducible results (CUDA >= 10.2); ":16:8" is its smaller-memory twin.
CUBLAS_WORKSPACE = ":4096:8"
CUBLAS_REPRODUCIBLE = (":4096:8", ":16:8")


def seed_everything(seed: int, device: torch.device) -> torch.Generator:
    deterministic_kernels(device)
    random.seed(seed)
    np.random.seed(seed % 2**32)
    torch.manual_seed(seed)
    return torch.Generator(device=device).manual_seed(seed)


def deterministic_kernels(device: torch.device) -> None:
    """torch's deterministic algorithms, warn-only: an op with no deterministic kernel (some CUDA backward
    passes) still runs and warns rather than failing the entry, and ``determinism`` says so. cuBLAS reads its
    workspace setting when its handle is created, at the first CUDA matrix product of the process: the runner
    seeds before the teacher trains, early enough unless something else ran on the GPU first."""
    if device.type == "cuda":
        os.environ.setdefault("CUBLAS_WORKSPACE_CONFIG", CUBLAS_WORKSPACE)
    torch.use_deterministic_algorithms(True, warn_only=True)
    torch.backends.cudnn.benchmark = False


def determinism(device: torch.device, timed: bool = False) -> dict[str, object]:
    """The settings that decide whether a rerun on the same machine repeats an entry's numbers exactly, and
    ``deterministic``: false, with the reasons, when it may not. The thread count is part of it: a different
    number of CPU threads sums in a different order; ``timed``: the entry ran under a seconds budget."""
    reasons = []
    if timed:
        reasons.append("a seconds budget: how much an entry trains depends on the machine's speed and load")
    if not torch.are_deterministic_algorithms_enabled():
        reasons.append("torch's deterministic algorithms are off")
    if torch.backends.cudnn.benchmark:
        reasons.append("cuDNN autotuning is on")
    cublas = os.environ.get("CUBLAS_WORKSPACE_CONFIG")
    if device.type == "cuda":
        if cublas not in CUBLAS_REPRODUCIBLE:
            reasons.append(f"CUBLAS_WORKSPACE_CONFIG is {cublas!r}, not one of {', '.join(CUBLAS_REPRODUCIBLE)}")
        if torch.is_deterministic_algorithms_warn_only_enabled():
            reasons.append("warn-only: CUDA ops with no deterministic kernel (atomic adds, e.g. adaptive average "
                           "pooling's backward) still ran; see the run's warnings")
    info: dict[str, object] = {
        "deterministic": not reasons, "why_not": reasons,
        "deterministic_algorithms": torch.are_deterministic_algorithms_enabled(),
        "warn_only": torch.is_deterministic_algorithms_warn_only_enabled(),
        "cudnn_benchmark": torch.backends.cudnn.benchmark,
        "torch_threads": torch.get_num_threads(), "interop_threads": torch.get_num_interop_threads()}
    if device.type == "cuda":
        info["cublas_workspace_config"] = cublas
    return info
