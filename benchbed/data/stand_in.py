"""A dry run's data: the suite's dataset, or where it is absent random images of its real size and
shape; validation and test cut to a few hundred images (``dry_cut``). The measuring process and the
run's own make the same data from the same suite (the random images have a fixed seed)."""
from __future__ import annotations

from dataclasses import replace
from pathlib import Path
from typing import Callable

import numpy as np

from benchbed.config import DatasetConfig
from benchbed.data.bundle import DataBundle, bundle_from_arrays
from benchbed.data.registry import DatasetRegistry
from benchbed.errors import BenchbedError

VAL_IMAGES = 256  # validation and test, cut: model selection's passes are charged to the few steps, and clean
                  # accuracy on all of test would outlast them


def stand_in(spec_cfg: DatasetConfig, datasets: DatasetRegistry, log: Callable[[str], None]) -> DataBundle:
    """The suite's dataset, or where it is absent random images of its real size and shape."""
    spec = datasets[spec_cfg.name]
    if spec.present(Path(spec_cfg.root).expanduser()):
        return datasets.load(spec_cfg.name, spec_cfg.root, False, spec_cfg.val_fraction, spec_cfg.split_seed)
    if spec.sizes is None:
        raise BenchbedError(f"dataset {spec.name!r} is absent and states no sizes for a stand-in; put it under "
                            f"{spec_cfg.root} or give its plugin `sizes`")
    n_train, n_test = spec.sizes
    log(f"dry run: {spec.name} is not under {spec_cfg.root}; {n_train:,} + {n_test:,} random images of its shape "
        f"{list(spec.input_shape)} stand in")
    rng = np.random.default_rng(0)
    x = lambda n: rng.integers(0, 256, (n, *spec.input_shape), dtype=np.uint8)  # noqa: E731
    y = lambda n: rng.integers(0, spec.num_classes, n).astype(np.int64)  # noqa: E731
    big = spec.input_shape[1] >= 32
    return bundle_from_arrays(f"{spec.name} (synthetic)", x(n_train), y(n_train), x(n_test), y(n_test),
                              spec.num_classes, spec_cfg.val_fraction, spec_cfg.split_seed,
                              crop_padding=4 if big else 2, flip=True)


def dry_cut(data: DataBundle) -> DataBundle:
    """Validation and test cut to ``VAL_IMAGES``."""
    return replace(data, val_x=data.val_x[:VAL_IMAGES], val_y=data.val_y[:VAL_IMAGES],
                   test_x=data.test_x[:VAL_IMAGES], test_y=data.test_y[:VAL_IMAGES])
