"""Datasets: digits offline, CIFAR through torchvision's real loader on tiny files in its on-disk format."""
from __future__ import annotations

import hashlib
import pickle

import numpy as np
import pytest
import torch
from torchvision import datasets

from benchbed.data.bundle import augment, train_batches
from conftest import load_dataset


def _write_cifar(root, which: str, n_train: int, n_test: int, classes: int, monkeypatch):
    """Write CIFAR pickles exactly as the official archives unpack, and point torchvision's checksums at them."""
    cls = datasets.CIFAR10 if which == "cifar10" else datasets.CIFAR100
    folder = root / cls.base_folder
    folder.mkdir(parents=True)
    rng = np.random.default_rng(0)
    label_key = "labels" if which == "cifar10" else "fine_labels"

    def batch(n):
        return {"data": rng.integers(0, 256, (n, 3072), dtype=np.uint8),
                label_key: list(rng.integers(0, classes, n).tolist()), "filenames": [f"{i}.png" for i in range(n)]}

    def dump(name, obj):
        with open(folder / name, "wb") as f:
            pickle.dump(obj, f)
        return [name, hashlib.md5((folder / name).read_bytes()).hexdigest()]

    if which == "cifar10":
        train_list = [dump(f"data_batch_{i}", batch(n_train // 5)) for i in range(1, 6)]
        test_list = [dump("test_batch", batch(n_test))]
        meta = dump("batches.meta", {"label_names": [f"c{i}" for i in range(classes)]})
    else:
        train_list = [dump("train", batch(n_train))]
        test_list = [dump("test", batch(n_test))]
        meta = dump("meta", {"fine_label_names": [f"c{i}" for i in range(classes)]})
    monkeypatch.setattr(cls, "train_list", train_list)
    monkeypatch.setattr(cls, "test_list", test_list)
    monkeypatch.setattr(cls, "meta", {"filename": meta[0], "key": cls.meta["key"], "md5": meta[1]})


@pytest.mark.parametrize("which,classes", [("cifar10", 10), ("cifar100", 100)])
def test_cifar_loads_through_torchvision(tmp_path, monkeypatch, which, classes):
    _write_cifar(tmp_path, which, n_train=500, n_test=60, classes=classes, monkeypatch=monkeypatch)
    data = load_dataset(which, tmp_path, download=False, val_fraction=0.2, split_seed=3)
    assert data.input_shape == (3, 32, 32) and data.num_classes == classes
    assert data.train_x.dtype == torch.uint8
    assert len(data.test_y) == 60
    assert len(data.train_y) + len(data.val_y) == 500
    assert data.crop_padding == 4 and data.flip
    # torchvision stores HWC rows of R, G, B planes; our NCHW must keep the planes apart.
    raw = datasets.CIFAR10(str(tmp_path), train=False) if which == "cifar10" else datasets.CIFAR100(str(tmp_path), train=False)
    assert torch.equal(data.test_x[0], torch.from_numpy(raw.data[0]).permute(2, 0, 1))


def test_cifar_with_download_true_and_files_present_does_not_fetch(tmp_path, monkeypatch):
    _write_cifar(tmp_path, "cifar100", n_train=200, n_test=20, classes=100, monkeypatch=monkeypatch)
    monkeypatch.setattr(datasets.utils, "download_url", lambda *a, **k: pytest.fail("must not download"))
    assert len(load_dataset("cifar100", tmp_path, download=True).test_y) == 20


def test_digits_splits_are_disjoint_fixed_and_stratified():
    a = load_dataset("digits", val_fraction=0.1, split_seed=0)
    b = load_dataset("digits", val_fraction=0.1, split_seed=0)
    c = load_dataset("digits", val_fraction=0.1, split_seed=1)
    assert torch.equal(a.val_x, b.val_x) and not torch.equal(a.val_x, c.val_x)
    assert torch.equal(a.test_x, c.test_x), "the test split never depends on the suite"
    assert len(a.train_y) + len(a.val_y) + len(a.test_y) == 1797
    per_class = torch.bincount(a.val_y, minlength=10)
    assert per_class.max() - per_class.min() <= 1, "validation is stratified"
    assert len(a.val_y) == pytest.approx(0.1 * (len(a.train_y) + len(a.val_y)), abs=10)


def test_augmentation_is_a_batched_shift_and_flip():
    gen = torch.Generator().manual_seed(0)
    x = torch.rand(64, 3, 8, 8)
    out = augment(x, padding=2, flip=True, generator=gen)
    assert out.shape == x.shape and out.dtype == x.dtype
    # every output image is its input shifted by at most 2 pixels (and maybe flipped)
    for i in range(8):
        candidates = []
        for img in (x[i], x[i].flip(2)):
            padded = torch.nn.functional.pad(img, (2, 2, 2, 2))
            candidates += [padded[:, dy:dy + 8, dx:dx + 8] for dy in range(5) for dx in range(5)]
        assert any(torch.equal(out[i], c) for c in candidates)


def test_train_batches_cover_the_epoch_once():
    data = load_dataset("digits")
    seen = torch.cat([y for _, y in train_batches(data, 100, torch.Generator().manual_seed(0), augmented=False)])
    assert len(seen) == (len(data.train_y) // 100) * 100
