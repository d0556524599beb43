"""Datasets by name. Any plugin contributes loaders through the ``datasets`` hook (the core's
built-ins arrive the same way, ``benchbed.data.datasets``); suites name them under ``dataset.name``."""
from __future__ import annotations

from dataclasses import dataclass, replace
from pathlib import Path
from typing import Callable, Iterable

from benchbed.data.bundle import DataBundle
from benchbed.registry import Registry


@dataclass(frozen=True)
class DatasetSpec:
    """A named dataset. ``load(root, download, val_fraction, split_seed)`` returns its ``DataBundle``
    (``benchbed.api.bundle_from_arrays`` makes one from arrays); ``present(root)`` says, without
    loading, whether ``root`` holds it (validation checks it before any work); ``sizes`` its (train, test)
    image counts, for planning a suite and for a dry run's synthetic stand-in when it is absent."""

    name: str
    load: Callable[[Path, bool, float, int], DataBundle]
    input_shape: tuple[int, int, int]
    num_classes: int
    present: Callable[[Path], bool] = lambda root: True
    description: str = ""
    sizes: tuple[int, int] | None = None  # (train, test) images as published: what `benchbed plan` counts


class DatasetRegistry(Registry[DatasetSpec]):
    def __init__(self, entries: Iterable[tuple[str, DatasetSpec]]):
        super().__init__("dataset", "datasets", entries)

    def load(self, name: str, root: str | Path = "data", download: bool = False, val_fraction: float = 0.1,
             split_seed: int = 0) -> DataBundle:
        root = Path(root).expanduser()
        return replace(self[name].load(root, download, val_fraction, split_seed), root=str(root))
