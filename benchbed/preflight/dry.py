"""``benchbed run SUITE --dry-run``: every entry's code path for a few steps at the suite's real shapes,
before a day of GPU time is spent on it. Each method at each budget (first compute level, first
seed) runs its mask search, probes (sampled: ``EntryContext.dry_run``), finetune, the evaluation on a
slice of the test split (every robustness metric on ``images`` images; validation and test cut
to ``VAL_IMAGES``), the price of the real model and its export to JAX (compared with the torch model)
and to the plain format, all three in the measuring process as a real run measures; per phase the
time and the peak memory. The teacher is trained for the same few steps. When the dataset
is absent, synthetic images of its real size stand in; nothing is downloaded and nothing is recorded
as a result (everything is written to a temporary folder and removed)."""
from __future__ import annotations

import tempfile
from dataclasses import replace
from pathlib import Path
from typing import Callable

from pydantic import BaseModel

from benchbed.data.stand_in import VAL_IMAGES
from benchbed.errors import first_line
from benchbed.plugin.manager import Plugins
from benchbed.preflight.forecast import largest_batch
from benchbed.run import teacher
from benchbed.run.phases import PhaseLog
from benchbed.run.runner import EntryTask, SuiteRun
from benchbed.run.suite import LoadedSuite, suite_entries

STEPS = 2      # batches of the suite's largest batch size, per part of an entry (search, finetune)
IMAGES = 8     # test images per robustness metric


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
    rows = []
    with tempfile.TemporaryDirectory(prefix="benchbed-dry-") as tmp:
        probe = SuiteRun(loaded, out=Path(tmp) / "data", quiet=True, plugins=plugins)
        probe.dry_run = True
        probe.reporter.log = log
        data = probe.load_data()  # the stand-in where the dataset is absent, validation and test cut
        cut = dry_suite(loaded, plugins, len(data.train_y), steps, images)
        run = SuiteRun(cut, out=Path(tmp) / "run", quiet=True, plugins=plugins)
        run.rundir.entries.mkdir(parents=True)
        run.dry_run = True
        run.training_cost, run.train_size = probe.training_cost, probe.train_size
        entries = [e for e in suite_entries(cut.suite, plugins) if e.level is None or e.level.index == 0]
        phases = PhaseLog(run.device)
        with phases("teacher"):
            teachers = run.teachers(data, entries, None)
        log(f"dry run: {len(entries)} entries of {cut.suite.name}, {steps} steps of each part, {images} test images "
            f"per robustness metric; teachers {phases.phases['teacher']['seconds']:.1f} s")
        shared = {v: teacher.payload(t, cut.suite, data) for v, t in teachers.items()}
        task = EntryTask(cut, str(run.rundir.path), dry_run=True)
        # one entry at a time, each in a process of its own as in a real run: its peak memory is its own, and
        # a crash (out of memory, a kernel's abort) is that entry's one-line error; the measuring process
        # exports it (JAX starts threads: never in a process that forks entries)
        for entry, made in run._isolated(entries, data, teachers, task, shared, 1, export_to=Path(tmp) / "export"):
            row = _row(made)
            spent = ", ".join(f"{name} {phase_figures(p)}"
                              for name, p in {**row["phases"], "export": row.get("phases_export")}.items() if p)
            log(f"dry run: {entry.id}: {row['status']}" + (f" — {row['error']}" if row["error"] else "")
                + (f" ({row['seconds']:.1f} s: {spent})" if row["phases"] else ""))
            rows.append(row)
    order = [e.id for e in entries]  # a failed entry ends before the measured ones: rows in the suite's order
    return sorted(rows, key=lambda r: order.index(r["entry"]))


def _row(made: dict) -> dict:
    """A dry run's row of an entry's record: status, error, phases, counts, cuts, compute and export."""
    error = made.get("error")
    phases = dict(made.get("phases") or {})
    row = {"entry": made["entry"], "status": made["status"], "error": first_line(error) if error else "",
           "phases": phases, "relus": made.get("relus"), "drelus": made.get("drelus"), "cuts": made.get("cuts", {}),
           "compute_used": (made.get("compute") or {}).get("used"),
           "seconds": round(sum(p["seconds"] for p in phases.values()), 2)}
    row.update({k: made[k] for k in ("export_max_logit_error", "export_agrees", "export_error", "phases_export")
                if k in made})
    return row
