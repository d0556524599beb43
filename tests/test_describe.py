"""What an outside lab gets without reading the source: a registered model by name, a suite's sites and
its splits, with the test split marked as never to train on."""
from __future__ import annotations

import numpy as np
import torch

from benchbed import api
from benchbed.cli import main
from benchbed.model.sites import relu_count, sites
from conftest import load_dataset


def test_a_suites_splits_are_the_images_its_run_trains_and_selects_on(write_suite):
    suite = write_suite()
    splits = api.suite_splits(suite)
    data = load_dataset("digits", val_fraction=0.15)
    assert splits.never_train_on == "test" and splits.test_images == len(data.test_y)
    assert len(np.intersect1d(splits.train, splits.val)) == 0
    assert sorted(np.concatenate([splits.train, splits.val]).tolist()) == list(range(len(splits.train) + len(splits.val)))
    from sklearn.datasets import load_digits

    from benchbed.data.bundle import split_stratified

    raw = load_digits()  # scikit-learn ships no test split: the digits loader's training set is its own 80%
    train, _ = split_stratified(raw.images, raw.target, 0.2, seed=0)
    labels = raw.target[train]
    assert torch.equal(torch.as_tensor(labels[splits.val]), data.val_y), "the indices name the validation images"
    assert torch.equal(torch.as_tensor(labels[splits.train]), data.train_y)
    assert "stratified" in splits.rule and "never train" in splits.rule


def test_describe_lists_every_site_and_build_model_builds_it(write_suite, capsys):
    suite = write_suite()
    assert main(["describe", str(suite)]) == 0
    out = capsys.readouterr().out
    model = api.build_model("resnet_narrow", num_classes=10, input_shape=(1, 8, 8))
    for name, site in sites(model).items():
        assert f"{name} " in out and f"{site.numel:>9,}" in out
    assert f"{relu_count(model):,} ReLUs" in out and "benchbed.api.build_model('resnet_narrow'" in out
    assert "never train" in out
