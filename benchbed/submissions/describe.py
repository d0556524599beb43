"""What an outside lab needs to train a model a suite can measure, without reading the source: the
suite's model built by name (every ReLU a named site), its sites (name, shape, ReLUs, counted), and
its splits — the training and validation images by their index in the dataset's own training set,
and the test split, which is never to be trained on (only the core's evaluation reads it)."""
from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Sequence

import numpy as np
from torch import nn

from benchbed.errors import BenchbedError
from benchbed.model.sites import capacity, relu_count, sites
from benchbed.plugin.manager import Plugins, plugin_manager
from benchbed.run.suite import load_suite


def build_model(name: str, *, num_classes: int, input_shape: Sequence[int], mean: Sequence[float] | None = None,
                std: Sequence[float] | None = None, stem_relu: bool = True) -> nn.Module:
    """Any registered model (the built-ins and every installed plugin's), its sites' shapes traced for
    ``input_shape`` = (C, H, W); the same architecture a suite's teacher and entries are."""
    return Plugins(plugin_manager()).models.build(name, num_classes=num_classes, input_shape=input_shape, mean=mean,
                                                  std=std, stem_relu=stem_relu)


@dataclass(frozen=True)
class Splits:
    """A suite's splits of its dataset. ``train`` and ``val`` index the dataset's own training set (as its
    loader reads it); ``test`` is the whole of its test set: never train or select on it."""

    dataset: str
    rule: str
    train: np.ndarray
    val: np.ndarray
    test_images: int
    mean: tuple[float, ...]  # the training split's per-channel statistics: the normalisation a model carries
    std: tuple[float, ...]
    never_train_on: str = "test"


def suite_splits(suite: str | Path) -> Splits:
    """The splits a suite's run makes of its dataset (the dataset must be present, or downloadable)."""
    plugins = Plugins(plugin_manager())
    spec = load_suite(suite, plugins).suite.dataset
    data = plugins.datasets.load(spec.name, spec.root, spec.download, spec.val_fraction, spec.split_seed)
    if data.train_index is None or data.val_index is None:
        raise BenchbedError(f"the {spec.name} loader does not say which of its training images it held out; "
                            "build its bundle with benchbed.api.bundle_from_arrays")
    return Splits(spec.name, split_rule(spec.val_fraction, spec.split_seed), data.train_index.numpy(),
                  data.val_index.numpy(), len(data.test_y), data.mean, data.std)


def split_rule(val_fraction: float, split_seed: int) -> str:
    return (f"validation = {val_fraction:g} of every class of the dataset's training set, stratified, drawn with "
            f"numpy's default_rng({split_seed}) class by class; training = the rest; test = the dataset's test set, "
            "which only the core's evaluation reads: never train or select on it")


def describe(suite: str | Path) -> list[str]:
    """The lines ``benchbed describe SUITE`` prints: the model to train, its sites, and the splits' rule."""
    plugins = Plugins(plugin_manager())
    loaded = load_suite(suite, plugins, need_data=False)
    cfg, spec = loaded.suite, plugins.datasets[loaded.suite.dataset.name]
    model = plugins.models.build(cfg.model.name, num_classes=spec.num_classes, input_shape=spec.input_shape,
                                 stem_relu=cfg.model.stem_relu)
    lines = [f"{cfg.name}: {cfg.model.name} (stem_relu={cfg.model.stem_relu}) on {cfg.dataset.name}, input "
             f"{'x'.join(map(str, spec.input_shape))}, {spec.num_classes} classes",
             f"build it: benchbed.api.build_model({cfg.model.name!r}, num_classes={spec.num_classes}, "
             f"input_shape={tuple(spec.input_shape)}, stem_relu={cfg.model.stem_relu})",
             f"sites: {len(sites(model))}, {relu_count(model, False):,} ReLUs, {capacity(model):,} counted "
             f"(the budgets cover the counted ones: {', '.join(f'{b:,}' for b in cfg.budgets)})",
             f"{'site':<28} {'shape (C,H,W)':<16} {'ReLUs':>9}  counted"]
    for name, site in sites(model).items():
        lines.append(f"{name:<28} {str(tuple(site.shape)):<16} {site.numel:>9,}  {'yes' if site.counted else 'no'}")
    lines.append("splits: " + split_rule(cfg.dataset.val_fraction, cfg.dataset.split_seed)
                 + "; the indices: benchbed.api.suite_splits(SUITE)")
    lines.append("normalisation: the model's first layer carries the training split's per-channel mean and std "
                 "(benchbed.api.suite_splits(SUITE).mean and .std; a submission with others is refused)")
    return lines
