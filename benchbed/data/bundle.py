"""What a method and the evaluation see of a dataset: uint8 (N, C, H, W) tensors resident on the
training device, converted, augmented and shuffled there in whole batches. The validation split is
carved out of train with a fixed seed (``benchbed.data.datasets``), so every method of a suite selects
on the same images and never on test."""
from __future__ import annotations

from dataclasses import dataclass, fields, replace
from typing import Iterator

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
    # where the training and validation images sit in the dataset's own training set (None when a loader
    # split it otherwise): what an outside lab needs to train on the same images and never on test
    train_index: torch.Tensor | None = None
    val_index: torch.Tensor | None = None

    # the size of a test split left out (``withheld``): the data of a process that runs plugin code
    test_images: int | None = None

    def for_methods(self) -> TrainingData:
        """The same data without the test split: what ``build_mask`` and ``finetune`` get."""
        return TrainingData(**{f.name: getattr(self, f.name) for f in fields(TrainingData)})

    def withheld(self) -> "DataBundle":
        """The same data with its test split left out (empty, of the images' shape), its size kept:
        what the run's own processes hold; only the measuring process has the test images."""
        return replace(self, test_x=self.test_x[:0].clone(), test_y=self.test_y[:0].clone(),
                       test_images=len(self.test_y) if self.test_images is None else self.test_images)

    def describe(self) -> dict:
        return {**super().describe(), "test": len(self.test_y) if self.test_images is None else self.test_images}

    def as_payload(self) -> dict:
        """Plain data and tensors (what ``torch.load(weights_only=True)`` reads back): ``from_payload``'s input."""
        return {f.name: getattr(self, f.name) for f in fields(self)}

    @classmethod
    def from_payload(cls, payload: dict) -> "DataBundle":
        return cls(**{**payload, "mean": tuple(payload["mean"]), "std": tuple(payload["std"])})


def to_float(x_u8: torch.Tensor) -> torch.Tensor:
    """Images in [0, 1], channels_last: the layout oneDNN's and cuDNN's convolutions run fastest in (on
    this project's CPU, resnet_tiny with masked sites trains 1.2-1.6x and infers 1.2x faster so)."""
    x = x_u8.float().div_(255)
    return x.contiguous(memory_format=torch.channels_last) if x.dim() == 4 else x


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


def split_stratified(x: np.ndarray, y: np.ndarray, fraction: float, seed: int) -> tuple[np.ndarray, np.ndarray]:
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


def bundle_from_arrays(name: str, train_x: np.ndarray, train_y: np.ndarray, test_x: np.ndarray, test_y: np.ndarray,
            num_classes: int, val_fraction: float, split_seed: int, crop_padding: int, flip: bool) -> DataBundle:
    """A ``DataBundle`` from uint8 (N, C, H, W) arrays and integer labels: ``val_fraction`` of every
    class of train (stratified, seed ``split_seed``) becomes the validation split, and the
    normalisation is the remaining training images' per-channel mean and std. What a dataset loader,
    built in or a plugin's, returns."""
    keep, val = split_stratified(train_x, train_y, val_fraction, split_seed)
    if not len(val) or not len(keep):
        raise BenchbedError(f"{name}: a validation share of {val_fraction:g} leaves {len(keep)} training and {len(val)} "
                            "validation images; choose a share that leaves images in both (dataset.val_fraction)")
    floats = train_x[keep].astype(np.float64) / 255
    mean = tuple(float(v) for v in floats.mean(axis=(0, 2, 3)))
    std = tuple(float(v) for v in floats.std(axis=(0, 2, 3)))
    t = lambda a, dt: torch.from_numpy(np.ascontiguousarray(a)).to(dt)  # noqa: E731
    return DataBundle(name=name, train_x=t(train_x[keep], torch.uint8), train_y=t(train_y[keep], torch.long),
                      val_x=t(train_x[val], torch.uint8), val_y=t(train_y[val], torch.long),
                      test_x=t(test_x, torch.uint8), test_y=t(test_y, torch.long),
                      num_classes=num_classes, mean=mean, std=std, crop_padding=crop_padding, flip=flip,
                      train_index=t(keep, torch.long), val_index=t(val, torch.long))
