"""Shared helpers: tiny suites on scikit-learn's digits that run in seconds on a CPU."""
from __future__ import annotations

import copy
import os
import tempfile
from pathlib import Path
from types import ModuleType

import pytest
import yaml

from benchbed.data.datasets import builtin_datasets
from benchbed.model import checkpoint
from benchbed.model.architectures import builtin_models
from benchbed.plugin.manager import Plugins, plugin_manager
from benchbed.run.rundir import RunDir

# The built-in registries, as a run without third-party plugins has them.
build_model = builtin_models().build
load_dataset = builtin_datasets().load


def load_checkpoint(path, **expect):
    return checkpoint.load_checkpoint(path, builtin_models(), **expect)


def entry_records(run_dir, warn=None) -> list[dict]:
    return RunDir(run_dir).records(warn)


# No test reads or fills the user's teacher cache: the tests share one of this session's own. Its key covers
# everything a teacher's weights depend on (recipe, model, seed, data, the training code), so the tiny suite's
# teacher is trained once, not once per test. A test that must see a teacher trained, or tests the cache,
# asks for ``fresh_teacher_cache``; one that changes how teachers train in its process (a monkeypatch the key
# cannot see) must too.
os.environ["BENCHBED_CACHE"] = tempfile.mkdtemp(prefix="benchbed-test-cache-")


@pytest.fixture
def fresh_teacher_cache(tmp_path: Path, monkeypatch) -> Path:
    """An empty teacher cache of this test's own."""
    monkeypatch.setenv("BENCHBED_CACHE", str(tmp_path / "cache"))
    return tmp_path / "cache"


TINY_SUITE = {
    "name": "tiny",
    "dataset": {"name": "digits", "val_fraction": 0.15},
    "model": {"name": "resnet_narrow"},
    "teacher": {"recipe": {"epochs": 2, "lr": 0.05, "batch_size": 64}},
    "budgets": [64, 512],
    "compute": {"epochs": 1},
    "methods": [{"name": "all_relu"}, {"name": "random_mask", "options": {"finetune": {"batch_size": 64}}}],
    "secure_cost": {"enabled": True},
    "seeds": [0],
    "device": "cpu",
}


def _merge(base: dict, changes: dict) -> dict:
    out = copy.deepcopy(base)
    for key, value in changes.items():
        if isinstance(value, dict) and isinstance(out.get(key), dict):
            out[key] = _merge(out[key], value)
        else:
            out[key] = value
    return out


@pytest.fixture
def write_suite(tmp_path: Path):
    """``write_suite(**changes)`` writes the tiny suite with ``changes`` merged in and returns its path."""

    def write(file: str = "suite.yaml", /, **changes) -> Path:
        path = tmp_path / file
        path.write_text(yaml.safe_dump(_merge(TINY_SUITE, changes), sort_keys=False))
        return path

    return write


@pytest.fixture
def methods_with():
    """``methods_with(plugin, ...)``: the installed methods plus test plugins registered by name."""

    def make(*plugins: tuple[str, object]) -> Plugins:
        pm = plugin_manager()
        for name, plugin in plugins:
            pm.register(plugin, name=name)
        pm.check_pending()
        return Plugins(pm)

    return make


def method_plugin(build_mask, finetune=None, *, budgeted: bool = True, evaluate=None,
                  description: str = "test method") -> ModuleType:
    """A method plugin from plain functions; ``finetune`` defaults to returning the model as it is."""
    from benchbed.api import FinetuneResult, MethodInfo, Strict, hookimpl

    class Options(Strict):
        pass

    hooks = dict(method_info=hookimpl(lambda: MethodInfo(description=description, options=Options, budgeted=budgeted)),
                 build_mask=hookimpl(build_mask),
                 finetune=hookimpl(finetune or (lambda ctx, model: FinetuneResult(model))))
    if evaluate is not None:
        hooks["evaluate"] = hookimpl(evaluate)
    return plugin(**hooks)


def plugin(**hooks) -> ModuleType:
    """A plugin module made of hook functions (each already decorated with ``hookimpl``)."""
    module = ModuleType("test_plugin")
    for name, fn in hooks.items():
        setattr(module, name, fn)
    return module


@pytest.fixture(scope="session")
def digits():
    from conftest import load_dataset

    return load_dataset("digits", val_fraction=0.15)


@pytest.fixture
def make_ctx(digits, tmp_path):
    """``make_ctx(options, budget=…, epochs=…)``: an entry context on digits with an (untrained) narrow
    ResNet teacher, and a fresh student copy of it, for exercising one method's hooks directly."""
    import torch

    from benchbed.plugin.types import EntryContext
    from benchbed.train.meter import meter_entry

    def make(options, budget: int | None = 256, epochs: float = 2.0, seed: int = 0, method: str = "m"):
        torch.manual_seed(seed)
        teacher = build_model("resnet_narrow", num_classes=10, input_shape=digits.input_shape,
                              mean=digits.mean, std=digits.std).eval()
        for p in teacher.parameters():
            p.requires_grad_(False)
        student = copy.deepcopy(teacher).train()
        for p in student.parameters():
            p.requires_grad_(True)
        ctx = EntryContext.create(method=method, budget=budget, seed=seed, data=digits, teacher=teacher,
                                  options=options, device=torch.device("cpu"), epochs=epochs, workdir=tmp_path,
                                  log=lambda m: None)
        meter_entry(ctx.clock, student, [teacher], digits.input_shape)  # the core meters every entry
        return ctx, student

    return make


def install_plugin(site_dir: Path, distribution: str, version: str, method: str, module: str, source: str) -> Path:
    """'Install' a distribution into ``site_dir`` that registers ``module`` (with ``source``) as the method
    ``method`` through the ``benchbed`` entry-point group, as pip would; put ``site_dir`` on the path to use it."""
    dist = site_dir / f"{module}-{version}.dist-info"
    dist.mkdir(parents=True)
    (dist / "METADATA").write_text(f"Metadata-Version: 2.1\nName: {distribution}\nVersion: {version}\n")
    (dist / "entry_points.txt").write_text(f"[benchbed]\n{method} = {module}\n")
    (site_dir / f"{module}.py").write_text(source)
    return site_dir


def keep_first_pixels(ctx, model):
    """A ``build_mask`` that keeps the first ``budget`` pixels of the counted sites, in model order."""
    import torch

    from benchbed.api import MaskResult, counted_sites

    left = ctx.budget
    for site in counted_sites(model).values():
        flat = torch.zeros(site.numel)
        flat[:min(left, site.numel)] = 1
        left -= int(flat.sum())
        site.set_mask(flat.view(site.shape))
    return MaskResult(model)
