"""Corruption accuracy: the 15 CIFAR-C corruptions × 5 severities. Corrupted test sets come from the
official CIFAR-10-C / CIFAR-100-C ``.npy`` files when they are in the data root (what papers report);
otherwise they are generated once with ``benchbed.robustness.corruptions``, cached, and marked "generated"."""
from __future__ import annotations

import os
import zlib
from pathlib import Path
from typing import Callable

import numpy as np
import torch
from pydantic import Field, field_validator
from torch import nn

from benchbed.config import Strict
from benchbed.data.bundle import DataBundle
from benchbed.robustness.corruptions import corrupt
from benchbed.robustness.registry import Metric
from benchbed.train.loop import accuracy

CIFAR_C = ("gaussian_noise", "shot_noise", "impulse_noise", "defocus_blur", "glass_blur", "motion_blur", "zoom_blur",
           "snow", "frost", "fog", "brightness", "contrast", "elastic_transform", "pixelate", "jpeg_compression")


class CorruptionSettings(Strict):
    names: list[str] = Field(default_factory=lambda: list(CIFAR_C))
    severities: list[int] = Field(default_factory=lambda: [1, 2, 3, 4, 5])
    images: int = Field(10_000, ge=1, description="test images per corruption and severity")

    @field_validator("names")
    @classmethod
    def _known(cls, names: list[str]) -> list[str]:
        unknown = [n for n in names if n not in CIFAR_C]
        if unknown or not names:
            raise ValueError(f"unknown corruptions {unknown}; choose from {', '.join(CIFAR_C)}")
        return names

    @field_validator("severities")
    @classmethod
    def _severities(cls, severities: list[int]) -> list[int]:
        if not severities or any(s not in (1, 2, 3, 4, 5) for s in severities):
            raise ValueError("severities are among 1..5")
        return severities


OFFICIAL_DIRS = {"cifar10": "CIFAR-10-C", "cifar100": "CIFAR-100-C"}
# Bump when a generated corruption changes, so that stale caches are not reused.
GENERATOR_VERSION = 1


def official_files(root: Path, dataset: str) -> Path | None:
    folder = Path(root) / OFFICIAL_DIRS.get(dataset, "")
    return folder if dataset in OFFICIAL_DIRS and (folder / "labels.npy").exists() else None


def _official(folder: Path, name: str, severity: int, limit: int) -> tuple[torch.Tensor, torch.Tensor] | None:
    path = folder / f"{name}.npy"
    if not path.exists():
        return None
    images = np.load(path, mmap_mode="r")
    labels = np.load(folder / "labels.npy", mmap_mode="r")
    per_severity = len(images) // 5
    block = slice((severity - 1) * per_severity, (severity - 1) * per_severity + min(limit, per_severity))
    x = torch.from_numpy(np.ascontiguousarray(images[block].transpose(0, 3, 1, 2)))
    return x, torch.from_numpy(np.asarray(labels[block], dtype=np.int64))


def cache_root(data_root: Path) -> Path:
    """Where generated corruptions are cached: beside the data, or in the user's cache when the data
    root is read-only (a system-wide dataset such as Debian's)."""
    if os.access(data_root, os.W_OK):
        return data_root / "benchbed-corruptions"
    return Path(os.environ.get("XDG_CACHE_HOME", Path.home() / ".cache")) / "benchbed" / "corruptions"


def _generated(data: DataBundle, name: str, severity: int, limit: int) -> tuple[torch.Tensor, torch.Tensor]:
    x, y = data.test_x[:limit], data.test_y[:limit]
    cache = cache_root(Path(data.root)) / f"{data.name}-v{GENERATOR_VERSION}" / f"{name}-s{severity}-n{len(y)}.pt"
    if cache.exists():
        try:
            return torch.load(cache, weights_only=True).to(x.device), y
        except Exception:  # a corrupt cache file is regenerated, not trusted
            cache.unlink()
    generator = torch.Generator(device=x.device).manual_seed(zlib.crc32(f"{name}/{severity}".encode()))
    corrupted = corrupt(x, name, severity, generator)
    cache.parent.mkdir(parents=True, exist_ok=True)
    tmp = cache.with_name(cache.name + ".tmp")
    torch.save(corrupted.cpu(), tmp)
    tmp.replace(cache)
    return corrupted, y


def corruption_accuracy(model: nn.Module, data: DataBundle, settings: CorruptionSettings, batch_size: int,
                        progress: Callable[[int, int], None] = lambda done, total: None) -> dict:
    """Mean accuracy over the chosen corruptions × severities, with per-corruption detail;
    ``progress(done, total)`` after each corruption."""
    folder = official_files(Path(data.root), data.name)
    per_severity: dict[str, dict[int, float]] = {}
    sources: dict[str, str] = {}
    for done, name in enumerate(settings.names):
        progress(done, len(settings.names))
        per_severity[name] = {}
        for severity in settings.severities:
            found = _official(folder, name, severity, settings.images) if folder else None
            sources[name] = "official" if found is not None else "generated"
            x, y = found if found is not None else _generated(data, name, severity, settings.images)
            per_severity[name][severity] = accuracy(model, x.to(data.test_y.device), y.to(data.test_y.device), batch_size)
    per_corruption = {name: sum(v.values()) / len(v) for name, v in per_severity.items()}
    kinds = set(sources.values())
    return {"corruption_accuracy": sum(per_corruption.values()) / len(per_corruption),
            "corruptions": {"source": kinds.pop() if len(kinds) == 1 else sources, "images": settings.images,
                            "severities": list(settings.severities), "per_corruption": per_corruption,
                            "per_severity": per_severity}}


CORRUPTION_METRIC = Metric(
    "corruptions", CorruptionSettings,
    lambda model, data, settings, batch_size, seed, progress: corruption_accuracy(
        model, data, settings, batch_size, lambda done, total: progress("evaluating: corruptions", done, total)),
    columns={"corruption_accuracy": "corruption acc %"}, sample_size=lambda result: result["corruptions"]["images"],
    cost=lambda s, classes: (0.0, len(s.names) * len(s.severities) * s.images),
    description="mean accuracy over the CIFAR-C corruptions × severities (official files, or generated)")
