"""Fashion-MNIST: the idx loader on tiny files written in the real format (the Debian layout and torchvision's),
the real set where Debian's dataset-fashion-mnist is installed, the suite, and a torchvision model nobody wrote
for benchbed running SNL on it."""
from __future__ import annotations

import copy
import gzip
import json
import struct
from pathlib import Path

import numpy as np
import pytest
import torch
import yaml
from torch import nn
from torchvision.datasets.mnist import read_image_file, read_label_file

from benchbed.data.datasets import builtin_datasets, read_idx
from benchbed.errors import BenchbedError
from benchbed.model.sites import convert_relus, counted_sites, drelu_count, relu_count
from benchbed.plugin.types import EntryContext
from conftest import build_model, load_dataset

DEBIAN = Path("/usr/share/datasets/fashion-mnist")
SUITE = Path(__file__).resolve().parents[1] / "suites" / "fmnist.yaml"
NAMES = {"train": ("train-images-idx3-ubyte", "train-labels-idx1-ubyte"),
         "test": ("t10k-images-idx3-ubyte", "t10k-labels-idx1-ubyte")}


def idx_bytes(array: np.ndarray) -> bytes:
    """LeCun's idx format, written from its definition: two zero bytes, the type code 0x08 (unsigned byte), the
    number of dimensions, each size as a big-endian int32, then the data."""
    return bytes([0, 0, 0x08, array.ndim]) + b"".join(struct.pack(">i", n) for n in array.shape) + array.tobytes()


def fake_fashion(n_train: int = 200, n_test: int = 50, seed: int = 0) -> dict[str, tuple[np.ndarray, np.ndarray]]:
    rng = np.random.default_rng(seed)
    return {split: (rng.integers(0, 256, (n, 28, 28), dtype=np.uint8), np.arange(n, dtype=np.uint8) % 10)
            for split, n in (("train", n_train), ("test", n_test))}


def write_debian(root: Path, arrays: dict, *, gz: bool = True) -> Path:
    root.mkdir(parents=True, exist_ok=True)
    for split, (images_name, labels_name) in NAMES.items():
        for name, array in zip((images_name, labels_name), arrays[split]):
            data = idx_bytes(array)
            (root / (name + ".gz")).write_bytes(gzip.compress(data)) if gz else (root / name).write_bytes(data)
    return root


def test_idx_writer_matches_the_format_torchvision_reads(tmp_path):
    """The test's own writer agrees with an independent reader, and the magic numbers are 2051 and 2049."""
    arrays = fake_fashion()
    write_debian(tmp_path, arrays, gz=False)
    images, labels = (tmp_path / n for n in NAMES["train"])
    assert struct.unpack(">i", images.read_bytes()[:4])[0] == 2051
    assert struct.unpack(">i", labels.read_bytes()[:4])[0] == 2049
    assert np.array_equal(read_image_file(str(images)).numpy(), arrays["train"][0])
    assert np.array_equal(read_label_file(str(labels)).numpy(), arrays["train"][1])


def test_loads_the_debian_layout_of_four_gz_files(tmp_path):
    arrays = fake_fashion()
    root = write_debian(tmp_path / "fashion-mnist", arrays)
    assert builtin_datasets()["fashion_mnist"].present(root) and not builtin_datasets()["fashion_mnist"].present(tmp_path)
    data = load_dataset("fashion_mnist", root, val_fraction=0.2, split_seed=1)
    assert data.input_shape == (1, 28, 28) and data.num_classes == 10 and data.train_x.dtype == torch.uint8
    assert torch.equal(data.test_x[:, 0], torch.from_numpy(arrays["test"][0]))
    assert torch.equal(data.test_y, torch.from_numpy(arrays["test"][1]).long())
    assert len(data.train_y) == 160 and len(data.val_y) == 40
    assert torch.bincount(data.val_y, minlength=10).tolist() == [4] * 10, "validation is stratified"
    seen = torch.cat([data.train_x, data.val_x]).flatten(1)
    assert sorted(map(bytes, seen.numpy())) == sorted(map(bytes, arrays["train"][0].reshape(200, -1)))
    assert data.crop_padding == 2 and data.flip


def test_loads_torchvisions_layout_through_its_fashionmnist(tmp_path, monkeypatch):
    arrays = fake_fashion(n_train=100, n_test=30)
    write_debian(tmp_path / "FashionMNIST" / "raw", arrays, gz=False)
    from torchvision import datasets

    monkeypatch.setattr(datasets.utils, "download_url", lambda *a, **k: pytest.fail("must not download"))
    assert builtin_datasets()["fashion_mnist"].present(tmp_path)
    data = load_dataset("fashion_mnist", tmp_path, download=True, val_fraction=0.1)
    assert torch.equal(data.test_x[:, 0], torch.from_numpy(arrays["test"][0]))
    assert len(data.train_y) + len(data.val_y) == 100


def test_a_missing_set_says_where_to_get_it(tmp_path):
    with pytest.raises(BenchbedError, match="dataset-fashion-mnist"):
        load_dataset("fashion_mnist", tmp_path / "nothing", download=False)


def test_a_wrong_magic_number_or_a_truncated_file_is_refused(tmp_path):
    labels = np.arange(10, dtype=np.uint8)
    (tmp_path / "swapped.gz").write_bytes(gzip.compress(idx_bytes(labels)))
    with pytest.raises(BenchbedError, match="magic 2049, expected 2051"):
        read_idx(tmp_path / "swapped.gz", 3)
    (tmp_path / "short.gz").write_bytes(gzip.compress(idx_bytes(labels)[:-3]))
    with pytest.raises(BenchbedError, match="truncated"):
        read_idx(tmp_path / "short.gz", 1)


@pytest.mark.skipif(not builtin_datasets()["fashion_mnist"].present(DEBIAN), reason="Debian's dataset-fashion-mnist not installed")
def test_the_real_set_from_debians_package():
    train_labels = read_idx(DEBIAN / "train-labels-idx1-ubyte.gz", 1)
    assert np.bincount(train_labels).tolist() == [6000] * 10
    data = load_dataset("fashion_mnist", DEBIAN, val_fraction=0.1)
    assert len(data.train_y) + len(data.val_y) == 60_000 and len(data.test_y) == 10_000
    assert data.input_shape == (1, 28, 28)
    assert (torch.bincount(data.train_y, minlength=10) + torch.bincount(data.val_y, minlength=10)).tolist() == [6000] * 10
    assert torch.bincount(data.test_y).tolist() == [1000] * 10
    assert 0.2 < data.mean[0] < 0.4, "mostly dark backgrounds"


def test_the_suite_spans_two_and_eight_percent_of_the_models_relus_at_two_compute_levels():
    raw = yaml.safe_load(SUITE.read_text())
    model = build_model(raw["model"]["name"], num_classes=10, input_shape=(1, 28, 28),
                        stem_relu=raw["model"]["stem_relu"])
    shares = [b / relu_count(model) for b in raw["budgets"]]
    assert shares == pytest.approx([0.02, 0.08], rel=0.1)
    assert len(raw["compute"]["epochs"]) == 2
    assert {m["name"] for m in raw["methods"]} == {"all_relu", "random_mask", "snl", "autorep", "knapsack", "rlnet",
                                                  "deepreduce"}
    assert len(raw["seeds"]) == 3 and raw["evaluation"]["pgd"] and raw["evaluation"]["corruptions"]


@pytest.mark.skipif(not builtin_datasets()["fashion_mnist"].present(DEBIAN), reason="Debian's dataset-fashion-mnist not installed")
def test_the_suite_validates():
    from benchbed.cli import main

    assert main(["validate", str(SUITE)]) == 0


def test_a_tiny_run_on_idx_files_states_grey_corruptions(write_suite, tmp_path):
    from benchbed.report.board import render
    from benchbed.run.runner import SuiteRun

    root = write_debian(tmp_path / "fm", fake_fashion(n_train=120, n_test=40))
    suite = write_suite(dataset={"name": "fashion_mnist", "root": str(root), "val_fraction": 0.25},
                        model={"name": "resnet_tiny"}, budgets=[500], teacher={"recipe": {"epochs": 1}},
                        methods=[{"name": "random_mask", "options": {"finetune": {"batch_size": 32}}}],
                        evaluation={"pgd": {"images": 8, "steps": 2, "check_steps": 1},
                                    "corruptions": {"names": ["gaussian_noise", "fog"], "severities": [1, 5],
                                                    "images": 8}})
    SuiteRun.from_file(suite, out=tmp_path / "run", quiet=True).run()
    md = render([tmp_path / "run"], tmp_path / "board").read_text()
    assert "generated, applied per channel to grayscale" in md
    assert "## The papers' claims" in md
    assert (root / "benchbed-corruptions" / "fashion_mnist-v1" / "fog-s5-n8.pt").exists()
    twin = json.loads((tmp_path / "board" / "tiny.json").read_text())
    # claims travel with the methods that make them: only the sanity check without SNL in the run
    assert {c["key"] for c in twin["claims"]} == {"accuracy_monotone_in_budget"}


def test_a_torchvision_resnet_nobody_wrote_for_benchbed_runs_snl_on_fashion_mnist(tmp_path):
    """torchvision's ResNet-18 (its blocks reuse one ReLU module), given a 1-channel stem, converted to sites and
    masked by SNL for a few steps on Fashion-MNIST-format data read by the loader."""
    from torchvision.models import resnet18

    from benchbed_plugins import snl

    data = load_dataset("fashion_mnist", write_debian(tmp_path / "fm", fake_fashion(n_train=96, n_test=16)),
                        val_fraction=0.25)
    torch.manual_seed(0)
    net = resnet18(num_classes=10)
    net.conv1 = nn.Conv2d(1, 64, 7, stride=2, padding=3, bias=False)
    teacher = convert_relus(net, data.input_shape).eval()
    assert relu_count(teacher) == 64 * 14 * 14 + 2 * (2 * 64 * 7 * 7) + 2 * (2 * 128 * 4 * 4) + 2 * (2 * 256 * 2 * 2) \
        + 2 * (2 * 512 * 1 * 1), "every call of a reused ReLU is a site of its own"
    for p in teacher.parameters():
        p.requires_grad_(False)
    student = copy.deepcopy(teacher).train()
    for p in student.parameters():
        p.requires_grad_(True)
    budget = 2000
    options = snl.Options(lambda_init=1e-3, alpha_lr=0.05, search={"epochs": 2, "batch_size": 24},
                          finetune={"epochs": 0.5, "batch_size": 24})
    ctx = EntryContext.create(method="snl", budget=budget, seed=0, data=data.for_methods(), teacher=teacher,
                              options=options, device=torch.device("cpu"), epochs=2.5, workdir=tmp_path,
                              log=lambda m: None)
    masked = snl.build_mask(ctx=ctx, model=student)
    tuned = snl.finetune(ctx=ctx, model=masked.model)
    assert 0 < drelu_count(tuned.model) <= budget < relu_count(teacher)
    assert sum(s.drelus for s in counted_sites(tuned.model).values()) == drelu_count(tuned.model)
    with torch.no_grad():
        logits = tuned.model.eval()(data.test_x.float() / 255)
    assert logits.shape == (16, 10) and torch.isfinite(logits).all()
