"""Robust accuracy: L∞ PGD with sanity checks, and the 15 CIFAR-C corruptions × 5 severities.

Corrupted test sets come from the official CIFAR-10-C / CIFAR-100-C ``.npy`` files when they are in
the data root (what papers report); otherwise they are generated once with ``benchbed.corruptions``,
cached in the data root, and marked "generated"."""
from __future__ import annotations

import math
import os
import zlib
from pathlib import Path
from typing import Callable

import numpy as np
import torch
from torch import nn

from benchbed.attacks import pgd
from benchbed.config import CorruptionSettings, PGDSettings
from benchbed.corruptions import corrupt
from benchbed.data import DataBundle, eval_batches
from benchbed.training import accuracy

OFFICIAL_DIRS = {"cifar10": "CIFAR-10-C", "cifar100": "CIFAR-100-C"}
# Bump when a generated corruption changes, so that stale caches are not reused.
GENERATOR_VERSION = 1


def pgd_accuracy(model: nn.Module, data: DataBundle, settings: PGDSettings, batch_size: int, seed: int) -> dict:
    """PGD accuracy on the first ``settings.images`` test images, in eval mode, with two sanity checks:
    the attack never beats clean accuracy's upper bound, and the full attack is not weaker than a
    ``check_steps`` attack by more than two binomial standard errors (a sign of gradient masking)."""
    model.eval()
    x_all, y_all = data.test_x[:settings.images], data.test_y[:settings.images]
    generator = torch.Generator(device=y_all.device).manual_seed(seed)
    counts = torch.zeros(3, dtype=torch.long, device=y_all.device)  # clean, weak attack, full attack
    attack = dict(eps=settings.eps, step=settings.step, random_start=settings.random_start, generator=generator)
    for x, y in eval_batches(x_all, y_all, batch_size):
        with torch.no_grad():
            counts[0] += (model(x).argmax(1) == y).sum()
        for i, steps in ((1, settings.check_steps), (2, settings.steps)):
            adv = pgd(model, x, y, steps=steps, **attack)
            with torch.no_grad():
                counts[i] += (model(adv).argmax(1) == y).sum()
    n = len(y_all)
    clean, weak, full = (c / n for c in counts.tolist())
    noise = 2 * math.sqrt(max(weak * (1 - weak), 1 / n) / n)
    checks = {"adversarial_not_above_clean": full <= clean,
              "more_steps_not_weaker": full <= weak + noise}
    return {"pgd_accuracy": full,
            "pgd": {"eps": settings.eps, "step": settings.step, "steps": settings.steps, "images": n,
                    "random_start": settings.random_start, "clean_accuracy_subset": clean,
                    f"accuracy_{settings.check_steps}_steps": weak, "checks": checks,
                    "gradient_masking_suspected": not all(checks.values())}}


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
