"""``benchbed run SUITE --dry-run``: every entry's code path for a few steps at the suite's real shapes,
before a day of GPU time is spent on it. Each method at each budget (first compute level, first
seed) runs its mask search, probes (sampled: ``EntryContext.dry_run``), finetune, the evaluation on a
slice of the test split (every robustness metric on ``images`` images; validation and test cut
to ``VAL_IMAGES``), the price of the real model
and its export to JAX (run once, in the parent process: JAX does not survive a fork, and compared
with the torch model) and to the plain format; per
phase the time and the peak memory. The teacher is trained for the same few steps. When the dataset
is absent, synthetic images of its real size stand in; nothing is downloaded and nothing is recorded
as a result (everything is written to a temporary folder and removed)."""
from __future__ import annotations

import math
import tempfile
import time
from dataclasses import replace
from functools import partial
from pathlib import Path
from typing import Callable

import numpy as np
import torch
from pydantic import BaseModel

from benchbed.data.bundle import DataBundle, bundle_from_arrays, to_float
from benchbed.errors import BenchbedError, first_line
from benchbed.model.plain import write_plain
from benchbed.plugin.manager import Plugins
from benchbed.preflight.forecast import largest_batch
from benchbed.run.phases import PhaseLog
from benchbed.run.isolation import run_isolated
from benchbed.run.progress import Relay
from benchbed.run.rebuild import rebuilt
from benchbed.run.runner import SuiteRun
from benchbed.run.suite import Entry, LoadedSuite, suite_entries
from benchbed.secure.export import export

STEPS = 2      # batches of the suite's largest batch size, per part of an entry (search, finetune)
IMAGES = 8     # test images per robustness metric
VAL_IMAGES = 256  # validation and test, cut: model selection's passes are charged to the few steps, and clean
                  # accuracy on all of test would outlast them


def stand_in(loaded: LoadedSuite, plugins: Plugins, log: Callable[[str], None]) -> DataBundle:
    """The suite's dataset, or where it is absent random images of its real size and shape."""
    spec_cfg = loaded.suite.dataset
    spec = plugins.datasets[spec_cfg.name]
    if spec.present(Path(spec_cfg.root).expanduser()):
        return plugins.datasets.load(spec_cfg.name, spec_cfg.root, False, spec_cfg.val_fraction, spec_cfg.split_seed)
    if spec.sizes is None:
        raise BenchbedError(f"dataset {spec.name!r} is absent and states no sizes for a stand-in; put it under "
                            f"{spec_cfg.root} or give its plugin `sizes`")
    n_train, n_test = spec.sizes
    log(f"dry run: {spec.name} is not under {spec_cfg.root}; {n_train:,} + {n_test:,} random images of its shape "
        f"{list(spec.input_shape)} stand in")
    rng = np.random.default_rng(0)
    x = lambda n: rng.integers(0, 256, (n, *spec.input_shape), dtype=np.uint8)  # noqa: E731
    y = lambda n: rng.integers(0, spec.num_classes, n).astype(np.int64)  # noqa: E731
    big = spec.input_shape[1] >= 32
    return bundle_from_arrays(f"{spec.name} (synthetic)", x(n_train), y(n_train), x(n_test), y(n_test),
                              spec.num_classes, spec_cfg.val_fraction, spec_cfg.split_seed,
                              crop_padding=4 if big else 2, flip=True)


def _sliced(settings: BaseModel, images: int) -> BaseModel:
    return settings.model_copy(update={"images": min(settings.images, images)}) if "images" in type(settings).model_fields \
        else settings


def dry_suite(loaded: LoadedSuite, plugins: Plugins, n_train: int, steps: int, images: int) -> LoadedSuite:
    """The suite cut to a few steps: one level of ``steps`` batches per part, the teacher likewise, the
    first seed, every robustness metric on ``images`` test images. Options, budgets and shapes stay."""
    suite = loaded.suite
    epochs = (2 * steps * largest_batch(loaded) + VAL_IMAGES) / n_train  # both parts' steps, and model selection
    # A search may take all a few steps' budget (SNL's under its paper options, DeepReDuce's stage networks):
    # the cut level is split in halves unless the suite splits it, so that the finetune's code path runs too.
    share = suite.compute.finetune_share or 0.5
    compute = suite.compute.model_copy(update={"epochs": epochs, "seconds": None, "paper": False, "finetune_share": share})
    teacher = suite.teacher
    if teacher.recipe is not None:
        teacher = teacher.model_copy(update={"recipe": teacher.recipe.model_copy(
            update={"epochs": steps * teacher.recipe.batch_size / n_train})})
    metrics = {name: _sliced(plugins.metrics.settings(name, given), images)
               for name, given in suite.evaluation.metrics.items()}
    evaluation = type(suite.evaluation).model_validate({"batch_size": suite.evaluation.batch_size, **metrics})
    cut = suite.model_copy(update={"compute": compute, "teacher": teacher, "evaluation": evaluation,
                                   "seeds": suite.seeds[:1]})
    return replace(loaded, suite=cut)


def phase_figures(phase: dict) -> str:
    """A phase's seconds, resident peak and, where read, the peak of the process's own memory."""
    own = f" (own {phase['own_mb']:,.0f})" if phase.get("own_mb") is not None else ""
    return f"{phase['seconds']:.1f} s / {phase['peak_mb']:,.0f} MB{own}"


def dry_run(loaded: LoadedSuite, plugins: Plugins, *, steps: int = STEPS, images: int = IMAGES,
            log: Callable[[str], None] = print) -> list[dict]:
    """One row per entry: its status, one-line error, and per phase its seconds and peak memory."""
    full = stand_in(loaded, plugins, log)
    data = replace(full, val_x=full.val_x[:VAL_IMAGES], val_y=full.val_y[:VAL_IMAGES],
                   test_x=full.test_x[:VAL_IMAGES], test_y=full.test_y[:VAL_IMAGES])
    cut = dry_suite(loaded, plugins, len(data.train_y), steps, images)
    rows = []
    with tempfile.TemporaryDirectory(prefix="benchbed-dry-") as tmp:
        run = SuiteRun(cut, out=Path(tmp) / "run", quiet=True, plugins=plugins)
        run.rundir.entries.mkdir(parents=True)
        run.dry_run = True
        data = data.to(run.device)
        entries = [e for e in suite_entries(cut.suite, plugins) if e.level is None or e.level.index == 0]
        phases = PhaseLog(run.device)
        with phases("teacher"):
            teachers = run.teachers(data, entries, None)
        log(f"dry run: {len(entries)} entries of {cut.suite.name}, {steps} steps of each part, {images} test images "
            f"per robustness metric; teachers {phases.phases['teacher']['seconds']:.1f} s")
        jobs = ((entry, partial(_dry_entry, run, entry, data, teachers),
                 run.rundir.work_dir(entry.id) / "result.pt") for entry in entries)
        relay = lambda kind, args: getattr(run.reporter, kind)(*args)  # noqa: E731
        # one entry at a time, each in a process of its own as in a real run: its peak memory is its own, and
        # a crash (out of memory, a kernel's abort) is that entry's one-line error
        for entry, result, why in run_isolated(jobs, workers=1, relay=relay):
            row, payload = result if result is not None else ({"entry": entry.id, "status": "error", "error": why,
                                                                "phases": {}}, None)
            if payload is not None:  # here, not in the entry's forked process: JAX does not survive a fork
                row.update(_exported(run, entry, payload, data, Path(tmp) / entry.id))
            spent = ", ".join(f"{name} {phase_figures(p)}"
                              for name, p in {**row["phases"], "export": row.get("phases_export")}.items() if p)
            log(f"dry run: {entry.id}: {row['status']}" + (f" — {row['error']}" if row["error"] else "")
                + (f" ({row['seconds']:.1f} s: {spent})" if "seconds" in row else ""))
            rows.append(row)
    return rows


def _dry_entry(run: SuiteRun, entry: Entry, data: DataBundle, teachers: dict,
               send: Callable[..., None]) -> tuple[dict, dict | None]:
    """One entry's dry run, in its own process: the entry as a run runs it; its checkpoint payload goes
    back for the exports."""
    run.reporter = Relay(send)
    started = time.perf_counter()
    record, payload = run.run_entry(entry, data, teachers)
    error = record.get("error")
    row = {"entry": entry.id, "status": record["status"], "error": first_line(error) if error else "",
           "phases": dict(record.get("phases", {})), "relus": record.get("relus"), "drelus": record.get("drelus"),
           "cuts": record.get("cuts", {}), "compute_used": record.get("compute", {}).get("used"),
           "seconds": round(time.perf_counter() - started, 2)}
    return row, payload


def _exported(run: SuiteRun, entry: Entry, payload: dict, data: DataBundle, folder: Path) -> dict:
    """The real model exported to the plain format and to JAX (run on one image against torch)."""
    phases = PhaseLog(run.device)
    out: dict = {}
    try:
        with phases("export"):
            write_plain(payload, folder)
            model = rebuilt(payload, run.suite, data, run.plugins.models, torch.device("cpu"), entry.id)
            fn, weights = export(model, data.input_shape)
            x = to_float(data.test_x[:1].cpu())
            ours = np.asarray(fn(fn.preprocess(x.numpy()), *weights))
            with torch.no_grad():
                theirs = model(x).numpy()
        out["export_max_logit_error"] = float(np.abs(ours - theirs).max())
        out["export_agrees"] = bool(ours.argmax(1) == theirs.argmax(1)) and math.isfinite(out["export_max_logit_error"])
    except Exception as exc:  # an export failure is this entry's finding, not the dry run's end
        out["export_error"] = f"{type(exc).__name__}: {first_line(exc)}"
    out["phases_export"] = phases.phases.get("export")
    return out
