"""Dataset registry. Images are held as uint8 (N, C, H, W) tensors, resident on the training device;
batches are converted, augmented and shuffled on that device. The validation split is carved out of
train with a fixed seed, so every method of a suite selects on the same images and never on test."""
from __future__ import annotations

import math
from dataclasses import dataclass, fields, replace
from pathlib import Path
from typing import Callable, Iterator

import numpy as np
import torch
import torch.nn.functional as F

from benchbed.errors import BenchbedError


@dataclass(frozen=True)
class TrainingData:
    """What a method may see: the training split and the validation split carved out of it."""

    name: str
    train_x: torch.Tensor
    train_y: torch.Tensor
    val_x: torch.Tensor
    val_y: torch.Tensor
    num_classes: int
    mean: tuple[float, ...]
    std: tuple[float, ...]
    crop_padding: int
    flip: bool
    root: str = "data"

    @property
    def input_shape(self) -> tuple[int, int, int]:
        return tuple(self.train_x.shape[1:])

    def to(self, device: torch.device | str):
        move = {f.name: getattr(self, f.name).to(device) for f in fields(self) if isinstance(getattr(self, f.name), torch.Tensor)}
        return replace(self, **move)

    def describe(self) -> dict:
        return {"name": self.name, "train": len(self.train_y), "val": len(self.val_y),
                "classes": self.num_classes, "input_shape": list(self.input_shape),
                "augment": {"crop_padding": self.crop_padding, "flip": self.flip}}


@dataclass(frozen=True, kw_only=True)
class DataBundle(TrainingData):
    """A dataset with its test split, which only the core's evaluation reads."""

    test_x: torch.Tensor
    test_y: torch.Tensor

    def for_methods(self) -> TrainingData:
        """The same data without the test split: what ``build_mask`` and ``finetune`` get."""
        return TrainingData(**{f.name: getattr(self, f.name) for f in fields(TrainingData)})

    def describe(self) -> dict:
        return {**super().describe(), "test": len(self.test_y)}


def to_float(x_u8: torch.Tensor) -> torch.Tensor:
    x = x_u8.float().div_(255)
    return x.contiguous(memory_format=torch.channels_last) if x.is_cuda else x


def augment(x: torch.Tensor, padding: int, flip: bool, generator: torch.Generator) -> torch.Tensor:
    """Random crop with zero padding and horizontal flip, for a whole batch at once on its device."""
    n, _, h, w = x.shape
    if padding:
        padded = F.pad(x, (padding,) * 4)
        dy = torch.randint(0, 2 * padding + 1, (n, 1, 1), device=x.device, generator=generator)
        dx = torch.randint(0, 2 * padding + 1, (n, 1, 1), device=x.device, generator=generator)
        rows = dy + torch.arange(h, device=x.device).view(1, h, 1)
        cols = dx + torch.arange(w, device=x.device).view(1, 1, w)
        x = padded.permute(0, 2, 3, 1)[torch.arange(n, device=x.device).view(n, 1, 1), rows, cols].permute(0, 3, 1, 2)
    if flip:
        flips = torch.rand(n, 1, 1, 1, device=x.device, generator=generator) < 0.5
        x = torch.where(flips, x.flip(3), x)
    return x


def train_batches(data: DataBundle, batch_size: int, generator: torch.Generator, *,
                  augmented: bool = True) -> Iterator[tuple[torch.Tensor, torch.Tensor]]:
    """One shuffled epoch of float batches in [0, 1]; the last partial batch is dropped."""
    n = len(data.train_y)
    order = torch.randperm(n, device=data.train_x.device, generator=generator)
    for start in range(0, n - batch_size + 1 if n >= batch_size else 0, batch_size):
        idx = order[start:start + batch_size]
        x = to_float(data.train_x[idx])
        if augmented:
            x = augment(x, data.crop_padding, data.flip, generator)
        yield x, data.train_y[idx]
    if n < batch_size:  # a tiny training set still trains, as one full-size batch
        yield to_float(data.train_x[order]), data.train_y[order]


def eval_batches(x_u8: torch.Tensor, y: torch.Tensor, batch_size: int) -> Iterator[tuple[torch.Tensor, torch.Tensor]]:
    for start in range(0, len(y), batch_size):
        yield to_float(x_u8[start:start + batch_size]), y[start:start + batch_size]


# -- registry ---------------------------------------------------------------------------------

def _split(x: np.ndarray, y: np.ndarray, fraction: float, seed: int) -> tuple[np.ndarray, np.ndarray]:
    """Stratified: ``fraction`` of every class goes to the second part."""
    rng = np.random.default_rng(seed)
    second = []
    for c in np.unique(y):
        idx = np.flatnonzero(y == c)
        rng.shuffle(idx)
        second.extend(idx[: int(round(fraction * len(idx)))])
    mask = np.zeros(len(y), bool)
    mask[second] = True
    return np.flatnonzero(~mask), np.flatnonzero(mask)


def _bundle(name: str, train_x: np.ndarray, train_y: np.ndarray, test_x: np.ndarray, test_y: np.ndarray,
            num_classes: int, val_fraction: float, split_seed: int, crop_padding: int, flip: bool) -> DataBundle:
    keep, val = _split(train_x, train_y, val_fraction, split_seed)
    floats = train_x[keep].astype(np.float64) / 255
    mean = tuple(float(v) for v in floats.mean(axis=(0, 2, 3)))
    std = tuple(float(v) for v in floats.std(axis=(0, 2, 3)))
    t = lambda a, dt: torch.from_numpy(np.ascontiguousarray(a)).to(dt)  # noqa: E731
    return DataBundle(name=name, train_x=t(train_x[keep], torch.uint8), train_y=t(train_y[keep], torch.long),
                      val_x=t(train_x[val], torch.uint8), val_y=t(train_y[val], torch.long),
                      test_x=t(test_x, torch.uint8), test_y=t(test_y, torch.long),
                      num_classes=num_classes, mean=mean, std=std, crop_padding=crop_padding, flip=flip)


def _digits(root: Path, download: bool, val_fraction: float, split_seed: int) -> DataBundle:
    from sklearn.datasets import load_digits

    digits = load_digits()
    x = np.round(digits.images * (255 / 16)).astype(np.uint8)[:, None]
    y = digits.target.astype(np.int64)
    # scikit-learn ships no test split: a fixed stratified 20% (seed 0) is ours, whatever the suite.
    train, test = _split(x, y, 0.2, seed=0)
    return _bundle("digits", x[train], y[train], x[test], y[test], 10, val_fraction, split_seed,
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
        return _bundle(which, nchw(train.data), np.asarray(train.targets), nchw(test.data), np.asarray(test.targets),
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
    return _bundle("fashion_mnist", train_x[:, None], train_y.astype(np.int64), test_x[:, None],
                   test_y.astype(np.int64), 10, val_fraction, split_seed, crop_padding=2, flip=True)


def _fashion_present(root: Path) -> bool:
    """The Debian layout, or torchvision's (``FashionMNIST/raw`` with the files it extracted)."""
    raw = Path(root).expanduser() / "FashionMNIST" / "raw"
    return _fashion_folder(root) or all((raw / f.removesuffix(".gz")).is_file()
                                        for pair in FASHION_MNIST_FILES.values() for f in pair)


@dataclass(frozen=True)
class DatasetSpec:
    load: Callable[[Path, bool, float, int], DataBundle]
    input_shape: tuple[int, int, int]
    num_classes: int
    present: Callable[[Path], bool] = lambda root: True  # whether ``root`` holds it, without loading it


def _folder(name: str) -> Callable[[Path], bool]:
    return lambda root: (Path(root).expanduser() / name).is_dir()


DATASETS: dict[str, DatasetSpec] = {
    "digits": DatasetSpec(_digits, (1, 8, 8), 10),
    "cifar10": DatasetSpec(_cifar("cifar10"), (3, 32, 32), 10, _folder("cifar-10-batches-py")),
    "cifar100": DatasetSpec(_cifar("cifar100"), (3, 32, 32), 100, _folder("cifar-100-python")),
    "fashion_mnist": DatasetSpec(_fashion_mnist, (1, 28, 28), 10, _fashion_present),
}


def load_dataset(name: str, root: str | Path = "data", download: bool = False, val_fraction: float = 0.1,
                 split_seed: int = 0) -> DataBundle:
    if name not in DATASETS:
        raise BenchbedError(f"unknown dataset {name!r}; choose one of {', '.join(DATASETS)}")
    root = Path(root).expanduser()
    return replace(DATASETS[name].load(root, download, val_fraction, split_seed), root=str(root))
