"""Datasets by name. Any plugin contributes loaders through the ``datasets`` hook (the core's
built-ins arrive the same way, ``benchbed.data.datasets``); suites name them under ``dataset.name``."""
from __future__ import annotations

from dataclasses import dataclass, replace
from pathlib import Path
from typing import Callable, Iterable

from benchbed.data.bundle import DataBundle
from benchbed.errors import BenchbedError


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


class DatasetRegistry:
    def __init__(self, specs: Iterable[DatasetSpec]):
        self.specs: dict[str, DatasetSpec] = {}
        for spec in specs:
            if spec.name in self.specs:
                raise BenchbedError(f"two plugins register a dataset named {spec.name!r}; disable one of them "
                                    "with BENCHBED_DISABLE")
            self.specs[spec.name] = spec

    def __contains__(self, name: object) -> bool:
        return name in self.specs

    def __getitem__(self, name: str) -> DatasetSpec:
        if name not in self.specs:
            raise BenchbedError(f"unknown dataset {name!r}; choose one of {', '.join(self.specs)} "
                                "(a plugin adds datasets through the `datasets` hook)")
        return self.specs[name]

    def names(self) -> list[str]:
        return list(self.specs)

    def load(self, name: str, root: str | Path = "data", download: bool = False, val_fraction: float = 0.1,
             split_seed: int = 0) -> DataBundle:
        root = Path(root).expanduser()
        return replace(self[name].load(root, download, val_fraction, split_seed), root=str(root))
