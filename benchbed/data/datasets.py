"""The built-in datasets, registered through the core's ``datasets`` hook like any plugin's: scikit-
learn's 8x8 digits (shipped, no download), CIFAR-10/100 through torchvision, and Fashion-MNIST from
Debian's ``dataset-fashion-mnist`` files or torchvision."""
from __future__ import annotations

import importlib.util
import math
from pathlib import Path
from typing import Callable

import numpy as np

from benchbed.data.bundle import DataBundle, bundle_from_arrays, split_stratified
from benchbed.data.registry import DatasetRegistry, DatasetSpec
from benchbed.errors import BenchbedError


def _digits_arrays() -> tuple[np.ndarray, np.ndarray]:
    """scikit-learn's digits as (N, 8, 8) pixels in 0..16 and labels, read from the file scikit-learn ships
    without importing it (a second per process: every measuring process loads the data afresh)."""
    spec = importlib.util.find_spec("sklearn")
    shipped = Path(spec.origin).parent / "datasets" / "data" / "digits.csv.gz" if spec and spec.origin else None
    if shipped is None or not shipped.is_file():  # another layout: scikit-learn's own loader
        from sklearn.datasets import load_digits

        digits = load_digits()
        return digits.images, digits.target
    table = np.loadtxt(shipped, delimiter=",")
    return table[:, :-1].reshape(-1, 8, 8), table[:, -1].astype(np.int64)


def _digits(root: Path, download: bool, val_fraction: float, split_seed: int) -> DataBundle:
    images, target = _digits_arrays()
    x = np.round(images * (255 / 16)).astype(np.uint8)[:, None]
    y = target.astype(np.int64)
    # scikit-learn ships no test split: a fixed stratified 20% (seed 0) is ours, whatever the suite.
    train, test = split_stratified(x, y, 0.2, seed=0)
    return bundle_from_arrays("digits", x[train], y[train], x[test], y[test], 10, val_fraction, split_seed,
                   crop_padding=1, flip=False)


def _cifar(which: str) -> Callable[[Path, bool, float, int], DataBundle]:
    def load(root: Path, download: bool, val_fraction: float, split_seed: int) -> DataBundle:
        from torchvision import datasets

        cls = datasets.CIFAR10 if which == "cifar10" else datasets.CIFAR100
        try:
            train = cls(str(root), train=True, download=download)
            test = cls(str(root), train=False, download=download)
        except RuntimeError as exc:
            hint = "set `dataset.download: true` in the suite" if not download else "check the network and the root"
            raise BenchbedError(f"{which} not found or corrupt under {root} ({exc}); {hint}") from exc
        nchw = lambda d: np.ascontiguousarray(d.transpose(0, 3, 1, 2))  # noqa: E731
        return bundle_from_arrays(which, nchw(train.data), np.asarray(train.targets), nchw(test.data), np.asarray(test.targets),
                       len(train.classes), val_fraction, split_seed, crop_padding=4, flip=True)

    return load


FASHION_MNIST_FILES = {"train": ("train-images-idx3-ubyte.gz", "train-labels-idx1-ubyte.gz"),
                       "test": ("t10k-images-idx3-ubyte.gz", "t10k-labels-idx1-ubyte.gz")}
IDX_MAGIC = {3: 2051, 1: 2049}  # images (N, rows, cols) and labels (N,), unsigned bytes


def read_idx(path: Path, dims: int) -> np.ndarray:
    """An idx file of unsigned bytes as LeCun's MNIST format defines it (gzipped or not): a big-endian
    magic number (0x00000800 | dims), ``dims`` big-endian sizes, then the bytes in C order."""
    import gzip

    raw = (gzip.open if path.suffix == ".gz" else open)(path, "rb").read()
    magic = int.from_bytes(raw[:4], "big")
    if magic != IDX_MAGIC[dims]:
        raise BenchbedError(f"{path} is not an idx{dims} file of unsigned bytes (magic {magic}, expected "
                            f"{IDX_MAGIC[dims]}); replace it with the original download")
    shape = tuple(int.from_bytes(raw[4 + 4 * i:8 + 4 * i], "big") for i in range(dims))
    body = np.frombuffer(raw, np.uint8, offset=4 + 4 * dims).copy()  # writable, as torch wants it
    if body.size != math.prod(shape):
        raise BenchbedError(f"{path} holds {body.size} bytes for a {shape} array; it is truncated, download it again")
    return body.reshape(shape)


def _fashion_folder(root: Path) -> bool:
    """``root`` holds the four original ``.gz`` files (Debian's dataset-fashion-mnist layout)."""
    return all((Path(root).expanduser() / f).is_file() for pair in FASHION_MNIST_FILES.values() for f in pair)


def _fashion_mnist(root: Path, download: bool, val_fraction: float, split_seed: int) -> DataBundle:
    if _fashion_folder(root):
        (train_x, train_y), (test_x, test_y) = ((read_idx(root / images, 3), read_idx(root / labels, 1))
                                                for images, labels in FASHION_MNIST_FILES.values())
    else:
        from torchvision import datasets

        try:
            train, test = (datasets.FashionMNIST(str(root), train=t, download=download) for t in (True, False))
        except RuntimeError as exc:
            hint = ("set `dataset.download: true` in the suite, or point `dataset.root` at a folder holding the four "
                    "original .gz files (Debian: apt-get install dataset-fashion-mnist, root /usr/share/datasets/"
                    "fashion-mnist)") if not download else "check the network and the root"
            raise BenchbedError(f"fashion_mnist not found or corrupt under {root} ({exc}); {hint}") from exc
        (train_x, train_y), (test_x, test_y) = ((d.data.numpy(), d.targets.numpy()) for d in (train, test))
    # horizontal flips keep a garment a garment; a 2-pixel shift is the 4 of CIFAR's 32 scaled to 28
    return bundle_from_arrays("fashion_mnist", train_x[:, None], train_y.astype(np.int64), test_x[:, None],
                   test_y.astype(np.int64), 10, val_fraction, split_seed, crop_padding=2, flip=True)


def _fashion_present(root: Path) -> bool:
    """The Debian layout, or torchvision's (``FashionMNIST/raw`` with the files it extracted)."""
    raw = Path(root).expanduser() / "FashionMNIST" / "raw"
    return _fashion_folder(root) or all((raw / f.removesuffix(".gz")).is_file()
                                        for pair in FASHION_MNIST_FILES.values() for f in pair)


def _folder(name: str) -> Callable[[Path], bool]:
    return lambda root: (Path(root).expanduser() / name).is_dir()


BUILTIN_DATASETS: list[DatasetSpec] = [
    DatasetSpec("digits", _digits, (1, 8, 8), 10, description="scikit-learn's bundled 8x8 digits (no download)",
                sizes=(1438, 359)),
    DatasetSpec("cifar10", _cifar("cifar10"), (3, 32, 32), 10, _folder("cifar-10-batches-py"), "CIFAR-10 (torchvision)",
                sizes=(50_000, 10_000)),
    DatasetSpec("cifar100", _cifar("cifar100"), (3, 32, 32), 100, _folder("cifar-100-python"),
                "CIFAR-100 (torchvision)", sizes=(50_000, 10_000)),
    DatasetSpec("fashion_mnist", _fashion_mnist, (1, 28, 28), 10, _fashion_present,
                "Fashion-MNIST (Debian's dataset-fashion-mnist files, or torchvision)", sizes=(60_000, 10_000)),
]


def builtin_datasets() -> DatasetRegistry:
    """The core's datasets alone (the run's registry adds every plugin's)."""
    return DatasetRegistry(("benchbed", spec) for spec in BUILTIN_DATASETS)
