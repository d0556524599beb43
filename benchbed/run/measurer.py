"""The measuring process: where every published number of a run is made. Each measurement is a child
of a server process started fresh (multiprocessing's ``forkserver``) that imported only this module
and the core: no plugin's code ran in it or in any process it descends from, so nothing a method
did in its own process (patching the core's counter, evaluation or meter, holding on to data) can
reach what it measures.

It loads the suite's dataset itself — the test split exists only here; the run's own processes get
the training and validation splits (``training_data``) — reads a saved checkpoint from disk, refuses
it unless its bytes hash to what the run recorded when it was saved, rebuilds the model with the
core's architecture and kernels from the spec alone, and counts, evaluates and prices it
(``measure``). The only plugins it loads are the providers of the suite's dataset, model, metrics
and protocol profiles (``providers``): they define what is measured, and only an installed package
can provide them. A parent that holds nothing but its own pure data sends each job, so a plugin's
classes are never unpickled here."""
from __future__ import annotations

import copy
import multiprocessing
import time
from dataclasses import dataclass, replace
from importlib import metadata
from pathlib import Path
from typing import Any, Callable

import torch
import torch.nn.functional as F
from torch import nn

from benchbed.config import Suite
from benchbed.data.bundle import DataBundle
from benchbed.data.stand_in import dry_cut, stand_in
from benchbed.errors import BenchbedError
from benchbed.model.checkpoint import read_checkpoint
from benchbed.model.dual_bn import has_dual_bn
from benchbed.model.sites import relu_count
from benchbed.plugin import defaults, hookspecs
from benchbed.plugin.manager import DEFAULTS_NAME, PluginManager, Plugins
from benchbed.run import rebuild, scoring
from benchbed.run.phases import PhaseLog
from benchbed.run.progress import Relay
from benchbed.secure.export_check import exported
from benchbed.train.devices import resolve_device, set_precision
from benchbed.train.loop import accuracy

Send = Callable[..., None]
# Images and steps of the training step that prices a training image in CPU seconds on this machine.
CALIBRATION_BATCH, CALIBRATION_STEPS = 32, 3


def start_method() -> str:
    """``forkserver`` where the platform has it (its server preloads only this module), ``spawn`` elsewhere."""
    if "forkserver" in multiprocessing.get_all_start_methods():
        multiprocessing.set_forkserver_preload([__name__])
        return "forkserver"
    return "spawn"


@dataclass(frozen=True)
class Setting:
    """What every measurement of a run shares: the validated suite (the core's own types only), the
    plugins to load (``providers``), and whether it is a dry run (its stand-in, cut data)."""

    suite: Suite
    providers: tuple[str, ...]
    dry: bool = False


def providers(suite: Suite, plugins: Plugins) -> tuple[str, ...]:
    """The plugins (by name) that provide the suite's dataset, model, metrics and protocol profiles.
    Each must be the core's defaults or an installed package's entry point: the measuring process
    loads them, and nothing else, from the installation."""
    wanted = [(plugins.datasets, suite.dataset.name), (plugins.models, suite.model.name)]
    wanted += [(plugins.metrics, name) for name in plugins.metrics.chosen(suite.evaluation.metrics)]
    if suite.secure_cost.enabled:
        wanted += [(plugins.cost_profiles, name) for name in suite.secure_cost.profiles]
    dists = getattr(plugins.pm, "distributions", {})
    found: set[str] = set()
    for registry, name in wanted:
        package = registry.package(name)
        names = [DEFAULTS_NAME] if package == DEFAULTS_NAME else \
            [plugin for plugin, dist in dists.items() if dist.metadata["Name"] == package]
        if not names:
            raise BenchbedError(f"{registry.kind} {name!r} comes from {package}, which is not installed: results are "
                                "measured in a process that loads only installed providers; install it as a package "
                                "with a `benchbed` entry point")
        found.update(names)
    return tuple(sorted(found))


def clean_plugins(names: tuple[str, ...]) -> Plugins:
    """A plugin manager holding only the named providers, loaded afresh from the installation."""
    pm = PluginManager()
    pm.add_hookspecs(hookspecs)
    points = {ep.name: (ep, dist) for dist in metadata.distributions()
              for ep in dist.entry_points.select(group=hookspecs.PROJECT)} if set(names) - {DEFAULTS_NAME} else {}
    for name in names:
        if name == DEFAULTS_NAME:
            pm.register(defaults, name=DEFAULTS_NAME)
            continue
        if name not in points:
            raise BenchbedError(f"the provider {name!r} is no longer installed; reinstall it, or run the suite again")
        ep, dist = points[name]
        pm.register(ep.load(), name=name)
        pm.distributions[name] = dist
    return Plugins(pm)


def _data(setting: Setting, plugins: Plugins, log: Callable[[str], None]) -> DataBundle:
    """The suite's dataset with its test split, as the suite evaluates on it."""
    spec = setting.suite.dataset
    if setting.dry:
        return dry_cut(stand_in(spec, plugins.datasets, log))
    data = plugins.datasets.load(spec.name, spec.root, spec.download, spec.val_fraction, spec.split_seed)
    quick = setting.suite.evaluation.quick_test_images
    if quick:  # a development run's evaluation: the first images of the test split
        data = replace(data, test_x=data.test_x[:quick], test_y=data.test_y[:quick])
    return data


def training_cost(model: nn.Module, input_shape: tuple[int, ...], classes: int) -> float:
    """CPU seconds one training image of ``model`` costs on this machine, on one thread as an entry
    trains: what the metered compute of an entry needs, against which its process's CPU time is read."""
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    try:
        model = copy.deepcopy(model).train()
        for p in model.parameters():
            p.requires_grad_(True)
        generator = torch.Generator().manual_seed(0)
        x = torch.rand((CALIBRATION_BATCH, *input_shape), generator=generator).contiguous(
            memory_format=torch.channels_last)
        y = torch.randint(0, classes, (CALIBRATION_BATCH,), generator=generator)
        optimizer = torch.optim.SGD(model.parameters(), lr=1e-3)
        started = 0.0
        for step in range(CALIBRATION_STEPS + 1):  # the first step warms the allocator and oneDNN's caches
            if step == 1:
                started = time.process_time()
            F.cross_entropy(model(x), y).backward()
            optimizer.step()
            optimizer.zero_grad(set_to_none=True)
        return (time.process_time() - started) / (CALIBRATION_STEPS * CALIBRATION_BATCH)
    finally:
        torch.set_num_threads(threads)


def training_data(setting: Setting, send: Send) -> tuple[dict, dict]:
    """The run's data without its test split (its size kept), and what a training image costs here."""
    plugins = clean_plugins(setting.providers)
    data = _data(setting, plugins, Relay(send).log)
    model = rebuild.new_model(setting.suite, data, plugins.models)
    found = {"training_cost": training_cost(model, data.input_shape, data.num_classes)}
    return found, data.withheld().as_payload()


def _model(setting: Setting, plugins: Plugins, data: DataBundle, checkpoint: str, sha256: str,
           source: str) -> tuple[nn.Module, dict]:
    """The model the checkpoint at ``checkpoint`` describes, rebuilt by the core, and its payload;
    refused unless the file's bytes hash to ``sha256``."""
    file = read_checkpoint(checkpoint)
    if file.sha256 != sha256:
        raise BenchbedError(f"{source}: the checkpoint at {checkpoint} changed after it was saved (sha256 "
                            f"{file.sha256[:12]}…, saved as {sha256[:12]}…); it is not measured")
    device = resolve_device(setting.suite.device)
    return rebuild.rebuilt(file.payload, setting.suite, data, plugins.models, device, source), file.payload


def measure(setting: Setting, checkpoint: str, sha256: str, source: str, seed: int, send: Send,
            export_to: str | None = None) -> tuple[dict, None]:
    """An entry's published figures from its saved checkpoint: counts, the suite's evaluation, prices,
    the phases' time and memory, and whether it has dual BNs; with ``export_to`` (a dry run) its
    export to the plain format and JAX, checked against the model."""
    set_precision(setting.suite.precision)
    plugins = clean_plugins(setting.providers)
    reporter = Relay(send)
    data = _data(setting, plugins, reporter.log)
    model, payload = _model(setting, plugins, data, checkpoint, sha256, source)
    data = data.to(next(model.parameters()).device)
    phases = PhaseLog(next(model.parameters()).device)
    found: dict[str, Any] = scoring.score(model, setting.suite, data, plugins, seed, progress=reporter.progress,
                                          phase=phases)
    found["dual_bn"] = has_dual_bn(model)
    if export_to is not None:  # JAX (imported on first use) only where a dry run asks for the export
        exporting = PhaseLog(torch.device("cpu"))
        with exporting("export"):
            found.update(exported(model, payload, data, Path(export_to)))
        found["phases_export"] = exporting.phases["export"]
    found["phases"] = phases.phases
    return found, None


def measure_teacher(setting: Setting, checkpoint: str, sha256: str, source: str, send: Send) -> tuple[dict, None]:
    """A teacher's test and validation accuracy and its ReLUs, from its checkpoint."""
    set_precision(setting.suite.precision)
    plugins = clean_plugins(setting.providers)
    data = _data(setting, plugins, Relay(send).log)
    model, _ = _model(setting, plugins, data, checkpoint, sha256, source)
    data = data.to(next(model.parameters()).device)
    return {"val_accuracy": accuracy(model, data.val_x, data.val_y),
            "clean_accuracy": accuracy(model, data.test_x, data.test_y),
            "relus": relu_count(model), "relus_all_sites": relu_count(model, False)}, None
