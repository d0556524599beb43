"""The plugin contract: documented hookspecs, entry-point discovery, disabling, dispatch, overrides."""
from __future__ import annotations

import inspect
import os
import subprocess
import sys
import textwrap
import typing

import pytest

from benchbed.api import FinetuneResult, MaskResult, MethodInfo, hookimpl
from benchbed.errors import BenchbedError
from benchbed.plugin import hookspecs
from benchbed.plugin.manager import DISABLE_ENV, Plugins, plugin_manager
from benchbed.run.runner import SuiteRun
from conftest import entry_records, install_plugin, method_plugin, plugin

SPECS = {name: fn for name, fn in inspect.getmembers(hookspecs, inspect.isfunction)
         if hasattr(fn, f"{hookspecs.PROJECT}_spec")}


def test_the_four_hooks_of_the_design_exist():
    assert {"build_mask", "finetune", "evaluate", "secure_cost"} <= set(SPECS)


@pytest.mark.parametrize("name", sorted(SPECS))
def test_every_hookspec_is_documented_and_typed(name):
    fn = SPECS[name]
    assert fn.__doc__ and len(fn.__doc__.split()) >= 15, f"{name} needs a docstring that explains the contract"
    hints = typing.get_type_hints(fn)
    params = inspect.signature(fn).parameters
    assert all(p in hints for p in params), f"{name}: every argument needs a type"
    assert "return" in hints, f"{name}: the return type must be declared"


class Journal:
    """What hooks record about their calls, in a file: entries run in processes of their own."""

    def __init__(self, path):
        self.path = path
        path.touch()

    def append(self, item) -> None:
        with open(self.path, "a") as f:
            f.write(repr(item) + "\n")

    def items(self) -> list:
        import ast

        return [ast.literal_eval(line) for line in self.path.read_text().splitlines()]


def test_every_hook_is_exercised_by_a_run(write_suite, tmp_path):
    called = Journal(tmp_path / "called")
    pm = plugin_manager()
    pm.add_hookcall_monitoring(lambda name, impls, kwargs: called.append(name), lambda *a: None)
    SuiteRun.from_file(write_suite(), out=tmp_path / "run", quiet=True, plugins=Plugins(pm)).run()
    assert set(called.items()) == set(SPECS)


def test_builtins_come_through_the_entry_point_group():
    plugins = Plugins(plugin_manager()).all
    assert {"all_relu", "random_mask"} <= set(plugins)
    assert plugins["random_mask"].package == "benchbed"
    assert plugins["random_mask"].hooks == ("build_mask", "finetune", "method_info")


FAKE_PLUGIN = '''
from benchbed.api import FinetuneResult, MaskResult, MethodInfo, Strict, counted_sites, hookimpl
import torch

class Options(Strict):
    keep_first: bool = True

@hookimpl
def method_info():
    return MethodInfo(description="keeps the first budget pixels", paper="none", options=Options)

@hookimpl
def build_mask(ctx, model):
    left = ctx.budget
    for site in counted_sites(model).values():
        flat = torch.zeros(site.numel)
        flat[: min(left, site.numel)] = 1
        left -= int(flat.sum())
        site.set_mask(flat.view(site.shape))
    return MaskResult(model, {"left": left})

@hookimpl
def finetune(ctx, model):
    return FinetuneResult(model, {})
'''


@pytest.fixture
def third_party(tmp_path, monkeypatch):
    """A separately 'installed' distribution that registers a method through the entry-point group."""
    site_dir = install_plugin(tmp_path / "site", "fake-bb-plugin", "0.3.0", "first_pixels", "fake_bb_plugin",
                              textwrap.dedent(FAKE_PLUGIN))
    monkeypatch.syspath_prepend(str(site_dir))
    return site_dir


def test_third_party_plugin_registers_through_an_entry_point(third_party, write_suite, tmp_path):
    method = Plugins(plugin_manager()).get("first_pixels")
    assert (method.package, method.version) == ("fake-bb-plugin", "0.3.0")
    suite = write_suite(methods=[{"name": "first_pixels", "options": {"keep_first": True}}])
    counts = SuiteRun.from_file(suite, out=tmp_path / "run", quiet=True).run()
    assert counts["ok"] == 2
    records = {r["budget"]: r for r in entry_records(tmp_path / "run")}
    assert records[64]["drelus"] == 64 and records[512]["drelus"] == 512
    assert records[64]["method_version"] == "0.3.0"


def test_plugins_command_lists_the_third_party_method(third_party):
    env = {**os.environ, "PYTHONPATH": str(third_party)}
    out = subprocess.run([sys.executable, "-m", "benchbed", "plugins"], env=env, capture_output=True, text=True, check=True)
    line = next(l for l in out.stdout.splitlines() if l.startswith("first_pixels"))
    assert "fake-bb-plugin" in line and "0.3.0" in line and "build_mask" in line


def test_disable_env_blocks_a_plugin(monkeypatch):
    monkeypatch.setenv(DISABLE_ENV, "random_mask, nonexistent")
    assert "random_mask" not in Plugins(plugin_manager()).all
    with pytest.raises(BenchbedError, match="unknown method 'random_mask'"):
        Plugins(plugin_manager()).get("random_mask")


def test_unknown_hook_is_caught_by_check_pending():
    class Typo:
        @hookimpl
        def build_masks(self, ctx, model):  # misspelt hook name
            return None

    pm = plugin_manager()
    pm.register(Typo(), name="typo")
    with pytest.raises(Exception, match="build_masks"):
        pm.check_pending()


def test_method_missing_required_hooks_is_reported(methods_with, capsys):
    plugins = methods_with(("half", plugin(method_info=hookimpl(lambda: MethodInfo(description="x")))))
    assert "half" not in plugins.all and "random_mask" in plugins.all, "the others still work"
    assert "half" in capsys.readouterr().err
    with pytest.raises(BenchbedError, match="half.*does not implement build_mask, finetune"):
        plugins.get("half")


def _method(tag: str, calls: list, evaluate=None):
    def build_mask(ctx, model):
        calls.append((tag, "build_mask"))
        return MaskResult(model)

    def finetune(ctx, model):
        calls.append((tag, "finetune"))
        return FinetuneResult(model)

    return method_plugin(build_mask, finetune, budgeted=False, evaluate=evaluate, description=tag)


def test_dispatch_reaches_only_the_entrys_method_and_its_own_metrics_stand_beside_the_cores(methods_with, write_suite,
                                                                                             tmp_path):
    calls = Journal(tmp_path / "calls")
    own_metrics = lambda ctx, model, settings: {"clean_accuracy": 0.5, "val_accuracy": 0.5, "own": 1.0}  # noqa: E731
    plugins = methods_with(("alpha", _method("alpha", calls)), ("beta", _method("beta", calls, evaluate=own_metrics)))
    suite = write_suite(methods=[{"name": "alpha"}, {"name": "beta"}])
    SuiteRun.from_file(suite, out=tmp_path / "run", quiet=True, plugins=plugins).run()
    assert sorted(calls.items()) == [("alpha", "build_mask"), ("alpha", "finetune"), ("beta", "build_mask"),
                                     ("beta", "finetune")]
    records = {r["method"]: r for r in entry_records(tmp_path / "run")}
    assert records["beta"]["method_metrics"]["own"] == 1.0, "a method's evaluate is recorded beside the core's"
    assert records["beta"]["metrics"]["clean_accuracy"] == records["alpha"]["metrics"]["clean_accuracy"], \
        "the core's measurement stands"
    assert any("clean_accuracy" in d for d in records["beta"]["disagreements"]), "and a disagreement is flagged"
    assert "method_metrics" not in records["alpha"], "and only for that method"


def test_one_registry_refuses_a_second_package_and_suggests_a_name():
    """Datasets, models, metrics and cost profiles share one registry: a name two packages register
    is refused with both named; an unknown name lists the installed ones and the nearest."""
    import pytest

    from benchbed.data.datasets import BUILTIN_DATASETS
    from benchbed.data.registry import DatasetRegistry
    from benchbed.errors import BenchbedError

    spec = BUILTIN_DATASETS[0]
    with pytest.raises(BenchbedError, match=f"two packages register a dataset named '{spec.name}': benchbed and "
                                            "my-lab-data; disable one"):
        DatasetRegistry([("benchbed", spec), ("my-lab-data", spec)])
    found = Plugins(plugin_manager())
    with pytest.raises(BenchbedError, match="unknown cost profile 'aby33'; installed: .*did you mean 'aby3'"):
        found.cost_profiles["aby33"]
    with pytest.raises(BenchbedError, match="unknown model 'resnet_narow'.*did you mean 'resnet_narrow'"):
        found.models.build("resnet_narow", num_classes=10, input_shape=(1, 8, 8))
    assert "aby3" in found.cost_profiles and found.cost_profiles.package("aby3") == "benchbed.plugin.defaults"
    assert set(found.datasets.names()) >= {"digits", "fashion_mnist"} and "digits" in found.datasets
