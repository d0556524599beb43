"""Running a suite: one shared teacher, then every (method × budget × seed) entry under the same
compute budget, each written to the run directory as soon as it finishes."""
from __future__ import annotations

import copy
import hashlib
import os
import tempfile
import threading
import time
from dataclasses import asdict, dataclass, replace
from functools import partial
from pathlib import Path
from typing import Any, Callable, Iterable, Iterator

import torch
from pydantic import BaseModel
from torch import nn

from benchbed import schemas
from benchbed.data.bundle import DataBundle
from benchbed.errors import BenchbedError, BudgetExceeded, first_line
from benchbed.files import read_json, write_json
from benchbed.model.checkpoint import fingerprint, model_from_payload, write_checkpoint
from benchbed.model.polynomials import dapa_bypass
from benchbed.model.sites import capacity, foreign_kernels, sites
from benchbed.plugin.manager import Plugins, plugin_manager
from benchbed.plugin.types import EntryContext
from benchbed.run import cpu_check, measurer, rebuild, record, teacher
from benchbed.run.isolation import Finished, Job, Pool, default_workers, run_isolated, start_method
from benchbed.run.phases import PhaseLog
from benchbed.run.progress import Relay, Reporter
from benchbed.run.rundir import STANDARD_TEACHER, RunDir
from benchbed.run.scheduling import run_on_ray
from benchbed.run.suite import Entry, LoadedSuite, load_suite, suite_entries
from benchbed.train.allocator import keep_freed_pages
from benchbed.train.devices import resolve_device, set_precision
from benchbed.train.meter import Meter, meter_entry
from benchbed.train.reproducibility import seed_everything

# Training images whose teacher pre-activations the DaPa bypass is fitted to.
DAPA_IMAGES = 512
# What the measuring process finds of an entry: never taken from the entry's own process.
MEASURED = ("relus", "drelus", "relus_all_sites", "drelus_all_sites", "metrics", "secure_cost", "checkpoint",
            "checkpoint_sha256", "disagreements")


class SuiteRun:
    """One validated suite bound to a run directory."""

    def __init__(self, loaded: LoadedSuite, *, out: str | Path | None = None, quiet: bool = False,
                 plugins: Plugins | None = None):
        self.loaded = loaded
        self.suite, self.suite_path = loaded.suite, loaded.path
        # by entry key: the options of the method that builds the entry's mask (and, alone, finetunes),
        # and those of a composed entry's finetune method
        self.options, self.finetune_options = loaded.options, loaded.finetune_options
        self.plugins = plugins or Plugins(plugin_manager())
        self.rundir = RunDir(Path(out) if out else Path("runs") / self.suite.name)
        self.reporter = Reporter(quiet)
        self.device = resolve_device(self.suite.device)
        self.timer = time.perf_counter  # the seconds budget's clock; tests drive it by hand
        self.dry_run = False  # ``benchbed run --dry-run`` (``benchbed.preflight.dry``) sets it
        self._seals: dict[int, str] = {}
        # what one training image costs on this machine in CPU seconds, and the training split's size
        # (``load_data``): what an entry's metered compute needs, against which its CPU time is read
        self.training_cost: float | None = None
        self.train_size = 0

    @classmethod
    def from_file(cls, suite_path: str | Path, out: str | Path | None = None, quiet: bool = False,
                  plugins: Plugins | None = None) -> "SuiteRun":
        plugins = plugins or Plugins(plugin_manager())
        return cls(load_suite(suite_path, plugins), out=out, quiet=quiet, plugins=plugins)

    @property
    def measuring(self) -> measurer.Setting:
        """What the measuring process needs of this run: the suite and the plugins that provide its parts."""
        return measurer.Setting(self.suite, measurer.providers(self.suite, self.plugins), dry=self.dry_run)

    def measured(self, work: Callable[[Callable[..., None]], tuple[dict, dict | None]], what: str) -> tuple[dict, dict | None]:
        """``work`` (a function of ``benchbed.run.measurer``) run now in a measuring process of its own."""
        relay = lambda kind, args: getattr(self.reporter, kind)(*args)  # noqa: E731
        with tempfile.TemporaryDirectory(prefix="benchbed-measure-") as folder:  # the run directory may not exist yet
            job = Job(what, work, Path(folder) / f"{what}.pt", measurer.start_method(), os.cpu_count())
            (done,) = run_isolated([job], workers=1, relay=relay)
        if done.result is None:
            raise BenchbedError(done.error or f"measuring {what}: {done.why}")
        return done.result

    def load_data(self) -> DataBundle:
        """The suite's training and validation splits on the device, loaded by the measuring process: the
        test split never enters a process that runs plugin code (its size comes along). What a training
        image costs on this machine comes with them (``training_cost``)."""
        found, payload = self.measured(partial(measurer.training_data, self.measuring), "data")
        self.training_cost = float(found["training_cost"])
        data = DataBundle.from_payload(payload)
        self.train_size = len(data.train_y)
        return data.to(self.device)

    def teacher_figures(self, file: str, source: str) -> dict:
        """The accuracies and ReLUs of the teacher saved in ``file``, from the measuring process."""
        sha = hashlib.sha256(Path(file).read_bytes()).hexdigest()
        found, _ = self.measured(partial(measurer.measure_teacher, self.measuring, file, sha, source), "teacher")
        return found

    def parts(self, entry: Entry) -> list[tuple[str, str, BaseModel]]:
        """(hook stage, method, its options) for the entry's mask and its finetune."""
        finetune_options = self.finetune_options.get(entry.method, self.options[entry.method])
        return [("build_mask", entry.mask_method, self.options[entry.method]),
                ("finetune", entry.finetune_method, finetune_options)]

    def teacher_variant(self, method: str, options: BaseModel) -> str:
        return self.plugins.get(method).info.teacher(options)

    def teachers(self, data: DataBundle, entries: Iterable[Entry], given_teacher: nn.Module | None) -> dict[str, nn.Module]:
        """Every teacher variant the entries ask for, each prepared once; ``given_teacher`` is the suite's own
        teacher checkpoint, built when the run started."""
        variants = sorted({STANDARD_TEACHER} | {self.teacher_variant(m, o) for e in entries for _, m, o in self.parts(e)})
        # a dry run's teachers train a few steps: nothing a real run should ever reuse from the cache
        return {v: teacher.prepare(self.suite, data, self.rundir, self.device, self.reporter, self.plugins.models,
                                   self.teacher_figures, v, self.loaded.teacher_checkpoint, given_teacher,
                                   cache=not self.dry_run) for v in variants}

    # -- entries ----------------------------------------------------------------------------------
    def run_entry(self, entry: Entry, data: DataBundle, teachers: dict[str, nn.Module]) -> tuple[dict[str, Any], dict | None]:
        """Train one entry under the core's rules; return its record and, when it trained, its checkpoint
        payload (status ``trained``: the measuring process counts, evaluates and prices the saved
        checkpoint, ``finish``). Whatever the method does — trains on a loop of its own, swallows the
        budget stop, exits, alters its teacher, hands back kernels of its own — the record says so."""
        set_precision(self.suite.precision)  # in the process that runs the entry (a forked or Ray worker)
        keep_freed_pages()
        life = self._begin(entry, data, teachers)
        payload = None
        try:
            model = self._train(entry, life)
            # What is saved, copied off the method's model; what is measured is the model the measuring
            # process rebuilds from it by the core's own architecture and kernels — never the method's object.
            payload = rebuild.payload(model, self.suite, data)
            final = rebuild.rebuilt(payload, self.suite, data, self.plugins.models, self.device,
                                    f"{entry.method}'s model")
            life.record.update(self._own_measurements(entry, final, life.ctx))
            life.record["status"] = "trained"
        except BudgetExceeded as exc:
            payload = None
            life.record.update(status="over_budget", error=str(exc))
        except KeyboardInterrupt:
            raise
        except BaseException as exc:  # one entry's failure, or its sys.exit, must not take the suite down
            payload = None
            life.record.update(record.error_fields(exc))
        return self._closed(entry, life), payload

    def _begin(self, entry: Entry, data: DataBundle, teachers: dict[str, nn.Module]) -> "EntryLife":
        """An entry's contexts, its own copies of its teachers, its meter and the record's opening fields."""
        level = entry.level
        limits = {} if level is None else {"epochs": level.epochs, "seconds": level.seconds}
        (_, _, mask_options), (_, _, finetune_options) = self.parts(entry)
        shared = {stage: teachers[self.teacher_variant(m, o)] for stage, m, o in self.parts(entry)}
        sealed = {stage: self._seal(t) for stage, t in shared.items()}
        # A copy per entry and part: no entry can alter the others' teacher. Laid out channels_last as the
        # batches and the student are: a teacher rebuilt from its payload is contiguous, and on a 1-channel
        # input a convolution follows its weights' layout.
        own_teachers = {stage: copy.deepcopy(t).to(memory_format=torch.channels_last) for stage, t in shared.items()}
        ctx = EntryContext.create(method=entry.method, budget=entry.budget, seed=entry.seed, data=data.for_methods(),
                                  teacher=own_teachers["build_mask"], options=mask_options, device=self.device,
                                  generator=seed_everything(entry.seed, self.device), timer=self.timer,
                                  workdir=self.rundir.work_dir(entry.id), log=self.reporter.log,
                                  progress=self.reporter.progress, protocol=self.suite.protocol,
                                  dry_run=self.dry_run, **limits)
        ctx.clock.finetune_epochs = entry.finetune_epochs
        student = copy.deepcopy(shared["build_mask"]).train()
        for p in student.parameters():
            p.requires_grad_(True)
        opened = {**record.header(entry, self.suite), **self._described(entry, mask_options, finetune_options, sealed)}
        return EntryLife(
            record=opened, ctx=ctx,
            # The finetune's view: its own options and teacher; the same clock, data, notes and cuts.
            finetune_ctx=replace(ctx, options=finetune_options, teacher=own_teachers["finetune"]),
            student=student, own_teachers=own_teachers, sealed=sealed,
            # Everything the student and the entry's teachers compute is counted, however it is called.
            meter=meter_entry(ctx.clock, student, list(own_teachers.values()), data.input_shape),
            phases=PhaseLog(self.device),
            # What a claim's conditions read: facts the core saw itself, beside those the method reports
            observed={"teacher": opened["teachers"]["build_mask"]["variant"],
                      "finetune_teacher": opened["teachers"]["finetune"]["variant"]})

    def _described(self, entry: Entry, mask_options: BaseModel, finetune_options: BaseModel,
                   sealed: dict[str, str]) -> dict[str, Any]:
        """What the entry is: its plugins and options, its compute level, teachers, one-time assets,
        composition, and the claims, stated setup and published figure it can speak to."""
        mask_method, finetune_method = self.plugins.get(entry.mask_method), self.plugins.get(entry.finetune_method)
        level = entry.level
        found: dict[str, Any] = {
            "method_package": mask_method.package, "method_version": mask_method.version,
            "options": mask_options.model_dump(mode="json"), "stem_relu": self.suite.model.stem_relu,
            "protocol": self.suite.protocol,
            "compute_level": None if level is None else {"index": level.index, "label": level.label,
                                                         "epochs": level.epochs, "seconds": level.seconds,
                                                         "finetune_epochs": entry.finetune_epochs},
            "teachers": {stage: {"variant": self.teacher_variant(m, o), "fingerprint": sealed[stage]}
                         for stage, m, o in self.parts(entry)}}
        # A teacher only some methods use (the robust one) is that method's one-time asset: its cost is
        # shown on the method's rows, beside the per-entry compute that every method gets alike
        assets = {v: self.teacher_compute(v) for v in {t["variant"] for t in found["teachers"].values()}
                  if v != STANDARD_TEACHER}
        if assets:
            found["method_assets"] = {f"{v} teacher": {"epochs": epochs, "once": True} for v, epochs in assets.items()}
        if entry.composed:
            found["composition"] = {
                "mask_method": entry.mask_method, "finetune_method": entry.finetune_method, "bypass": entry.bypass,
                "finetune_package": finetune_method.package, "finetune_version": finetune_method.version,
                "finetune_options": finetune_options.model_dump(mode="json")}
        # the papers' claims this entry can speak to travel with it, so a board is made from records alone
        found["claims"] = [asdict(c) for m in {mask_method.name: mask_method, finetune_method.name: finetune_method}.values()
                           for c in m.info.claims]
        # the setup the method's paper states its figures for; a composed entry runs no method as its paper does
        found["stated_setup"] = [] if entry.composed else [asdict(c) for c in mask_method.info.setup]
        published = [asdict(p) for p in mask_method.info.published
                     if not entry.composed and p.matches(self.suite.dataset.name, self.suite.model.name,
                                                         self.suite.model.stem_relu, entry.budget)]
        if published:
            found["published"] = published[0]
        return found

    def _train(self, entry: Entry, life: "EntryLife") -> nn.Module:
        """The mask search (and the DaPa bypass) and the finetune, under the clock and the meter; the
        finetuned model once the core's rules hold: its meter intact, its compute within the budget, its
        teachers untouched."""
        clock, meter, phases, ctx = life.ctx.clock, life.meter, life.phases, life.ctx
        threads_before = set(threading.enumerate())
        try:
            with clock.running():
                with phases("build_mask"):
                    masked = self.plugins.caller("build_mask", entry.mask_method)(ctx=ctx, model=life.student)
                    model = self._frozen_model(masked, entry, "build_mask")
                    life.record["build_mask"] = masked.info
                    if entry.bypass == "dapa":
                        life.record["bypass"] = self._dapa_bypass(ctx, model)
                clock.begin_finetune(meter.total())
                with phases("finetune"):
                    # The model's final form is the finetune's: its own extra metrics and price are recorded.
                    tuned = self.plugins.caller("finetune", entry.finetune_method)(ctx=life.finetune_ctx, model=model)
                    model = self._frozen_model(tuned, entry, "finetune")
                life.record["finetune"] = tuned.info
        finally:
            intact = meter.intact()
            # a thread the method left running could go on training the model after the meter stops
            running = [t.name for t in threading.enumerate() if t not in threads_before and t.is_alive()]
            meter.stop()
        if running:
            raise BenchbedError(f"method {entry.method!r} left {len(running)} thread(s) running ({', '.join(running[:3])}); "
                                "join every thread it starts before its hook returns")
        if not intact:
            raise BenchbedError(f"method {entry.method!r} removed the core's compute meter from the model's layers")
        total, kinds = meter.total(), meter.breakdown()
        by_kind = sum(kinds.values())
        # the kinds are rounded to a thousandth of an image each; a total that is not their sum was rewritten
        if abs(total - by_kind) > 1e-3 * (1 + len(kinds)) + 1e-6 * by_kind:
            raise BenchbedError(f"method {entry.method!r}: the compute meter's total ({total:,.1f} images) is not the "
                                f"sum of what it counted by kind ({by_kind:,.1f}); the core's meter is read-only")
        overrun = clock.overrun(meter.total())
        if overrun:
            raise BudgetExceeded(overrun)
        if any(fingerprint(life.own_teachers[stage]) != life.sealed[stage] for stage in life.own_teachers):
            raise BenchbedError(f"method {entry.method!r} changed its teacher (weights, buffers or train/eval "
                                "mode); the suite's teacher is read-only")
        foreign = foreign_kernels(model)
        if foreign:
            life.record["rebuilt_from_spec"] = foreign
        return model

    def _own_measurements(self, entry: Entry, final: nn.Module, ctx: EntryContext) -> dict[str, Any]:
        """The finetune method's own ``evaluate`` (on the training and validation splits: its process
        never holds the test split) and ``secure_cost`` answers, on a copy of the final model: they may
        add to the core's figures, never change them."""
        call = lambda hook: self.plugins.caller(hook, entry.finetune_method)  # noqa: E731
        data = ctx.data
        own_model = copy.deepcopy(final)
        found: dict[str, Any] = {}
        own = call("evaluate")(ctx=replace(ctx, teacher=None), model=own_model, settings=self.suite.evaluation)
        if own is not None:
            found["method_metrics"] = record.checked_metrics(own, entry)
        if self.suite.secure_cost.enabled:
            settings, profiles = self.suite.secure_cost, self.plugins.cost_profiles
            own_prices = {name: call("secure_cost")(model=own_model, input_shape=data.input_shape, settings=settings,
                                                    profile=profiles[name]) for name in settings.profiles}
            if any(p is not None for p in own_prices.values()):
                found["method_secure_cost"] = own_prices
        return found

    def _closed(self, entry: Entry, life: "EntryLife") -> dict[str, Any]:
        """The record with what closes it, finished or not: the method's notes, cuts and setup, the
        phases, the compute used and provenance."""
        ctx, level = life.ctx, entry.level
        life.record.update(
            notes=ctx.notes, cuts=ctx.cuts, phases=life.phases.phases,
            setup={"observed": life.observed,
                   "reported": {k: v for k, v in ctx.setup.items() if isinstance(k, str)
                                and (v is None or isinstance(v, (bool, int, float, str)))}},
            compute=ctx.clock.record(life.meter.total(), life.meter.breakdown()),
            **record.closing(self.device, timed=level is not None and level.seconds is not None))
        return life.record

    def teacher_compute(self, variant: str) -> float | None:
        """The epochs (of this suite's training split) the teacher ``variant`` cost where it was trained."""
        try:
            compute = read_json(self.rundir.teacher_files(variant)[1]).get("compute") or {}
        except (OSError, ValueError):
            return None
        epochs = (compute.get("used") or {}).get("epochs")
        return round(float(epochs), 4) if isinstance(epochs, (int, float)) else None

    def _seal(self, shared_teacher: nn.Module) -> str:
        """The fingerprint of a shared teacher, taken once: no method ever holds the shared one itself."""
        key = id(shared_teacher)
        if key not in self._seals:
            self._seals[key] = fingerprint(shared_teacher)
        return self._seals[key]

    def _dapa_bypass(self, ctx: EntryContext, model: nn.Module) -> dict:
        """Fit DaPa quadratics to the teacher's pre-activations for the linearized pixels; the teacher's
        forward passes over the images are metered like every other."""
        n = min(DAPA_IMAGES, len(ctx.data.train_y))
        if not ctx.clock.fits(n):
            raise BudgetExceeded("no compute budget left to fit the DaPa bypass")
        changed = dapa_bypass(model, ctx.teacher, ctx.sample_train_images(n))
        return {"kind": "dapa", "images": n, "sites": changed}

    def _frozen_model(self, result: Any, entry: Entry, stage: str) -> nn.Module:
        if result is None or not isinstance(getattr(result, "model", None), nn.Module):
            raise BenchbedError(f"method {entry.method!r} returned no model from {stage}")
        custom = [n for n, s in sites(result.model).items() if not s.kernel.standard]
        if custom:
            raise BenchbedError(f"{entry.method}.{stage} left sites unfrozen ({', '.join(custom[:3])}…); "
                                "freeze them to relu/masked/patch kernels")
        return result.model

    # -- the whole suite --------------------------------------------------------------------------
    def run(self, executor: str = "local", address: str | None = None, workers: int | None = None) -> dict[str, int]:
        """Run every unfinished entry, locally or as Ray tasks; records land in the run directory
        as each entry finishes, whichever executor ran it. Nothing is written before the data and
        the teacher checkpoint are known to load."""
        data = self.load_data()
        checkpoint = self.loaded.teacher_checkpoint
        given_teacher = teacher.from_checkpoint(checkpoint, self.suite, data, self.plugins.models) if checkpoint else None
        with self.rundir.locked():
            self.rundir.claim(self.suite, self.suite_path, {
                **{k: v.model_dump(mode="json") for k, v in self.options.items()},
                **{f"{k} (finetune)": v.model_dump(mode="json") for k, v in self.finetune_options.items()}})
            self.rundir.write_data(data.describe())
            entries = suite_entries(self.suite, self.plugins)
            self.rundir.write_plan([e.id for e in entries])
            teachers = self.teachers(data, entries, given_teacher)
            compute = ("each method's paper recipe" if self.suite.protocol == "paper"
                       else self.suite.compute.model_dump(exclude_none=True))
            self.reporter.log(f"{len(entries)} entries; {capacity(teachers['standard']):,} ReLUs "
                              f"({'with' if self.suite.model.stem_relu else 'no'} stem ReLU); compute per entry: {compute}")
            return self._run_entries(entries, data, teachers, executor, address, workers)

    def _run_entries(self, entries: list[Entry], data: DataBundle, teachers: dict[str, nn.Module], executor: str,
                     address: str | None, workers: int | None) -> dict[str, int]:
        todo = self._todo(entries, teachers)
        counts = {"ok": 0, "over_budget": 0, "error": 0, "skipped": len(entries) - len(todo)}
        with self.reporter.entries(len(entries)) as advance:
            for entry in entries:
                if entry not in todo:
                    advance(f"{entry.id}: finished earlier, skipped")
            shared = {v: teacher.payload(t, self.suite, data) for v, t in teachers.items()}
            task = EntryTask(self.loaded, str(self.rundir.path), self.dry_run)
            if executor == "ray":
                results = self._measured_after(((e, result, None) for e, result in
                                                run_on_ray(task, todo, shared, address=address, device=self.suite.device)),
                                               workers, teachers)
            else:
                results = self._isolated(todo, data, teachers, task, shared, workers)
            for entry, made in results:
                saved = self._save(entry, made)
                counts[saved["status"]] += 1
                advance(record.summary_line(saved))
        return counts

    def _todo(self, entries: list[Entry], teachers: dict[str, nn.Module]) -> list[Entry]:
        """The entries to run: those not finished, and those a plugin upgrade made stale. Entries made with
        another teacher than the run's would mix two teachers in one board: that is refused."""
        marks = {v: self._seal(t) for v, t in teachers.items()}
        todo, other_teacher = [], []
        for entry in entries:
            record = self.rundir.finished(entry.id)
            if record is None:
                todo.append(entry)
                continue
            if any(marks.get(t.get("variant")) != t.get("fingerprint") for t in (record.get("teachers") or {}).values()):
                other_teacher.append(entry.id)
                continue
            stale = self._stale_versions(record, entry)
            if stale:
                self.reporter.log(f"{entry.id}: made by {stale}; redone")
                todo.append(entry)
        if other_teacher:
            raise BenchbedError(f"{len(other_teacher)} entries in {self.rundir.path} ({', '.join(other_teacher[:2])}, …) "
                                "were made with another teacher than the run's now (its checkpoint changed); pass "
                                "--out with a new directory, or delete those entries to redo them")
        return todo

    def _stale_versions(self, record: dict, entry: Entry) -> str:
        """Which of the entry's plugins made its record at another version than the installed one."""
        made = {entry.mask_method: record.get("method_version"),
                entry.finetune_method: (record.get("composition") or {}).get("finetune_version",
                                                                             record.get("method_version"))}
        return ", ".join(f"{name} {version} (installed: {self.plugins.get(name).version})"
                         for name, version in made.items() if version != self.plugins.get(name).version)

    def _isolated(self, todo: list[Entry], data: DataBundle, teachers: dict[str, nn.Module], task: "EntryTask",
                  shared: dict[str, dict], workers: int | None, export_to: Path | None = None) -> Iterator[tuple[Entry, dict]]:
        """Every entry's ``run_entry`` in a process of its own — forked with this run in memory where it can
        be, else spawned to rebuild it (``task``) — then its saved checkpoint measured in the measuring
        process (and, with ``export_to``, exported there: a dry run); whatever a process does, its entry
        gets a record."""
        method = start_method()
        relay = lambda kind, args: getattr(self.reporter, kind)(*args)  # noqa: E731
        pool = Pool(workers or default_workers(method), relay)
        for entry in todo:
            work = partial(self._in_child, entry, data, teachers) if method == "fork" else partial(task, entry, shared)
            pool.add(Job(("train", entry), work, self.rundir.work_dir(entry.id) / "result.pt", method))
        trained: dict[str, dict] = {}
        for done in pool.finished():
            stage, entry = done.key
            if stage == "train":
                made, payload = done.result if done.result is not None else (record.failed(entry, self.suite, done.why), None)
                job = self._trained(entry, made, payload, done.cpu_seconds, pool.workers, teachers, export_to)
                if job is None:
                    yield entry, made
                else:
                    trained[entry.id] = made
                    pool.add(job)
            else:
                yield entry, self._finish(entry, trained.pop(entry.id), done)

    def _measured_after(self, results: Iterable[tuple[Entry, tuple[dict, dict | None], float | None]],
                        workers: int | None, teachers: dict[str, nn.Module]) -> Iterator[tuple[Entry, dict]]:
        """Entries trained elsewhere (Ray's workers), each measured here as it comes back."""
        pool = Pool(1)
        for entry, (made, payload), cpu in results:
            job = self._trained(entry, made, payload, cpu, workers or 1, teachers)
            if job is None:
                yield entry, made
                continue
            pool.add(job)
            (done,) = pool.finished()
            yield entry, self._finish(entry, made, done)

    def _trained(self, entry: Entry, made: dict, payload: dict | None, cpu_seconds: float | None, workers: int,
                 teachers: dict[str, nn.Module], export_to: Path | None = None) -> Job | None:
        """A trained entry's record made trustworthy — what the core knows of the entry itself (header,
        description, teachers) replaces what its process said, and the figures it will measure are dropped —
        its CPU time read against its metered compute, its checkpoint saved; and the job that measures the
        checkpoint. None when there is nothing to measure (the entry failed, or its checkpoint could not be saved)."""
        for key in MEASURED:
            made.pop(key, None)
        (_, _, mask_options), (_, _, finetune_options) = self.parts(entry)
        sealed = {stage: self._seal(teachers[self.teacher_variant(m, o)]) for stage, m, o in self.parts(entry)}
        header = record.header(entry, self.suite)
        made.update({**header, "started": made.get("started") or header["started"],
                     **self._described(entry, mask_options, finetune_options, sealed)})
        compute = made.get("compute") or {"used": {"epochs": 0.0, "seconds": 0.0}}
        made["compute"] = compute
        checked = cpu_check.read(compute, cpu_seconds, self.training_cost, self.train_size, self.device)
        if checked is not None:
            compute["cpu"] = checked
        if made.get("status") in ("over_budget", "error"):
            return None
        if made.get("status") != "trained" or payload is None:  # "ok" is the core's word, never a process's
            made.update(status="error", error=f"the entry's process reported {str(made.get('status'))[:40]!r} "
                                              "without a trained model to measure")
            return None
        try:
            made["checkpoint_sha256"] = write_checkpoint(payload, self.rundir.checkpoint_path(entry.id))
        except (OSError, RuntimeError) as exc:  # torch.save reports a full disk as a RuntimeError
            why = exc.strerror if isinstance(exc, OSError) and exc.strerror else first_line(exc)
            made.update(status="error", error=f"not saved: {why}")
            self.reporter.log(f"{entry.id}: could not be saved ({why}); nothing else was lost, `benchbed run` redoes it")
            return None
        work = partial(measurer.measure, self.measuring, str(self.rundir.checkpoint_path(entry.id)),
                       made["checkpoint_sha256"], f"{entry.method}'s model", entry.seed,
                       export_to=None if export_to is None else str(export_to / entry.id))
        threads = max(1, (os.cpu_count() or 1) // max(1, workers))
        return Job(("measure", entry), work, self.rundir.work_dir(entry.id) / "measured.pt", measurer.start_method(),
                   threads)

    def _finish(self, entry: Entry, made: dict, done: Finished) -> dict:
        """A trained entry's record completed with what the measuring process found, under the core's
        rules: within its budget of DReLUs, its method's own figures checked against the core's."""
        if done.result is None:
            self.rundir.checkpoint_path(entry.id).unlink(missing_ok=True)
            made.pop("checkpoint_sha256", None)
            made.update(status="error", error=f"measuring the checkpoint failed: {done.error or done.why}")
            return made
        found, _ = done.result
        phases = {**(made.get("phases") or {}), **found.pop("phases")}
        made.setdefault("setup", {}).setdefault("observed", {})["dual_bn"] = found.pop("dual_bn")
        made.update(found, phases=phases)
        if entry.budget is not None and made["drelus"] > entry.budget:
            self.rundir.checkpoint_path(entry.id).unlink(missing_ok=True)
            made.pop("checkpoint_sha256", None)
            made.update(status="error", error=f"{entry.method} returned {made['drelus']:,} DReLUs, over the budget "
                                              f"of {entry.budget:,}")
            return made
        record.mark_disagreements(made)
        made.update(checkpoint=f"{entry.id}.pt", status="ok")
        return made

    def _in_child(self, entry: Entry, data: DataBundle, teachers: dict[str, nn.Module],
                  send: Callable[..., None]) -> tuple[dict, dict | None]:
        """``run_entry`` in an entry's own (forked) process, reporting through the parent."""
        self.reporter = Relay(send)
        return self.run_entry(entry, data, teachers)

    def _save(self, entry: Entry, made: dict) -> dict:
        """Write the entry's record (its checkpoint is already saved); a failed write fails this entry only.
        A record the result format does not accept (a plugin's odd figure) is written as this entry's error."""
        found = schemas.problems(made, "entry")
        if found:
            made = {**made, "status": "error", "error": f"the record breaks the result format: {found[0]}"}
            self.reporter.log(f"{entry.id}: {made['error']}")
        if made["status"] != "ok":
            made.pop("checkpoint_sha256", None)
            self.rundir.checkpoint_path(entry.id).unlink(missing_ok=True)
        try:
            write_json(self.rundir.record_path(entry.id), made)
        except (OSError, RuntimeError) as exc:
            why = exc.strerror if isinstance(exc, OSError) and exc.strerror else first_line(exc)
            self.reporter.log(f"{entry.id}: could not be saved ({why}); nothing else was lost, `benchbed run` redoes it")
            failed = {**made, "status": "error", "error": f"not saved: {why}"}
            failed.pop("checkpoint_sha256", None)
            try:  # a small error record may still fit; an error entry is redone on resume either way
                write_json(self.rundir.record_path(entry.id), failed)
            except (OSError, RuntimeError):
                pass
            return failed
        return made


@dataclass
class EntryLife:
    """One entry while it runs: its record so far, the method's contexts, the student, the entry's own
    copies of its teachers and their seals, the meter, the phases' log, and what the core observed."""

    record: dict[str, Any]
    ctx: EntryContext
    finetune_ctx: EntryContext
    student: nn.Module
    own_teachers: dict[str, nn.Module]
    sealed: dict[str, str]
    meter: Meter
    phases: PhaseLog
    observed: dict[str, Any]


@dataclass(frozen=True)
class EntryTask:
    """One entry as a picklable task for a remote worker: it rebuilds the run from the validated suite,
    loads the data and the shared teachers' payloads, and returns the record and checkpoint payload."""

    loaded: LoadedSuite
    run_dir: str
    dry_run: bool = False

    def __call__(self, entry: Entry, teacher_payloads: dict[str, dict],
                 send: Callable[..., None] | None = None) -> tuple[dict, dict | None]:
        run = SuiteRun(self.loaded, out=self.run_dir, quiet=True)
        run.dry_run = self.dry_run
        if send is not None:  # in an entry's own (spawned) process: report through the parent
            run.reporter = Relay(send)
        data = run.load_data()
        teachers = {v: teacher.frozen(model_from_payload(p, f"the shared {v} teacher", models=run.plugins.models),
                                      run.device) for v, p in teacher_payloads.items()}
        return run.run_entry(entry, data, teachers)
