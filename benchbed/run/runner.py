"""Running a suite: one shared teacher, then every (method × budget × seed) entry under the same
compute budget, each written to the run directory as soon as it finishes."""
from __future__ import annotations

import copy
import re
import time
import traceback
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
from benchbed.model.dual_bn import has_dual_bn
from benchbed.model.polynomials import dapa_bypass
from benchbed.model.sites import capacity, drelu_count, foreign_kernels, relu_count, sites
from benchbed.plugin.manager import Methods, plugin_manager
from benchbed.plugin.types import EntryContext
from benchbed.robustness.evaluate import evaluate_model
from benchbed.run import provenance, teacher
from benchbed.run.isolation import run_isolated, start_method
from benchbed.run.phases import PhaseLog
from benchbed.run.progress import Relay, Reporter
from benchbed.run.rundir import STANDARD_TEACHER, RunDir
from benchbed.run.scheduling import run_on_ray
from benchbed.run.suite import Entry, LoadedSuite, load_suite, plan
from benchbed.secure.cost import price
from benchbed.train.allocator import keep_freed_pages
from benchbed.train.devices import resolve_device, set_precision
from benchbed.train.meter import meter_entry
from benchbed.train.reproducibility import determinism, seed_everything

# Training images whose teacher pre-activations the DaPa bypass is fitted to.
DAPA_IMAGES = 512


class SuiteRun:
    """One validated suite bound to a run directory."""

    def __init__(self, loaded: LoadedSuite, *, out: str | Path | None = None, quiet: bool = False,
                 methods: Methods | None = None):
        self.loaded = loaded
        self.suite, self.suite_path = loaded.suite, loaded.path
        # by entry key: the options of the method that builds the entry's mask (and, alone, finetunes),
        # and those of a composed entry's finetune method
        self.options, self.finetune_options = loaded.options, loaded.finetune_options
        self.methods = methods or Methods(plugin_manager())
        self.run_dir = Path(out) if out else Path("runs") / self.suite.name
        self.rundir = RunDir(self.run_dir)
        self.reporter = Reporter(quiet)
        self.device = resolve_device(self.suite.device)
        self.timer = time.perf_counter  # the seconds budget's clock; tests drive it by hand
        self.dry_run = False  # ``benchbed run --dry-run`` (``benchbed.run.dry``) sets it
        self._seals: dict[int, str] = {}

    @classmethod
    def from_file(cls, suite_path: str | Path, out: str | Path | None = None, quiet: bool = False,
                  methods: Methods | None = None) -> "SuiteRun":
        methods = methods or Methods(plugin_manager())
        return cls(load_suite(suite_path, methods), out=out, quiet=quiet, methods=methods)

    def load_data(self) -> DataBundle:
        spec = self.suite.dataset
        data = self.methods.datasets.load(spec.name, spec.root, spec.download, spec.val_fraction, spec.split_seed)
        quick = self.suite.evaluation.quick_test_images
        if quick:  # a development run's evaluation: the first images of the test split
            data = replace(data, test_x=data.test_x[:quick], test_y=data.test_y[:quick])
        return data.to(self.device)

    def parts(self, entry: Entry) -> list[tuple[str, str, BaseModel]]:
        """(hook stage, method, its options) for the entry's mask and its finetune."""
        finetune_options = self.finetune_options.get(entry.method, self.options[entry.method])
        return [("build_mask", entry.mask_method, self.options[entry.method]),
                ("finetune", entry.finetune_method, finetune_options)]

    def teacher_variant(self, method: str, options: BaseModel) -> str:
        return self.methods.get(method).info.teacher(options)

    def teachers(self, data: DataBundle, entries: Iterable[Entry], loaded: nn.Module | None) -> dict[str, nn.Module]:
        """Every teacher variant the entries ask for, each prepared once; ``loaded`` is the suite's own
        teacher checkpoint, built when the run started."""
        variants = sorted({STANDARD_TEACHER} | {self.teacher_variant(m, o) for e in entries for _, m, o in self.parts(e)})
        # a dry run's teachers train a few steps: nothing a real run should ever reuse from the cache
        return {v: teacher.prepare(self.suite, data, self.rundir, self.device, self.reporter, self.methods.models, v,
                                   self.loaded.teacher_checkpoint, loaded, cache=not self.dry_run) for v in variants}

    # -- entries ----------------------------------------------------------------------------------
    def run_entry(self, entry: Entry, data: DataBundle, teachers: dict[str, nn.Module]) -> tuple[dict[str, Any], dict | None]:
        """Run one entry under the core's rules; return its record and, when it finished, its checkpoint
        payload. Whatever the method does — trains on a loop of its own, swallows the budget stop,
        exits, alters its teacher, hands back kernels of its own — the record says so."""
        set_precision(self.suite.precision)  # in the process that runs the entry (a forked or Ray worker)
        keep_freed_pages()
        mask_method, finetune_method = self.methods.get(entry.mask_method), self.methods.get(entry.finetune_method)
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
        clock = ctx.clock
        clock.finetune_epochs = entry.finetune_epochs
        phases = PhaseLog(self.device)
        # The finetune's view: its own options and teacher; the same clock, data, notes and cuts.
        finetune_ctx = replace(ctx, options=finetune_options, teacher=own_teachers["finetune"])
        record: dict[str, Any] = {
            "schema_version": schemas.ENTRY_VERSION, "entry": entry.id, "suite": self.suite.name, "fingerprint": self.suite.fingerprint(),
            "method": entry.method, "label": entry.label or entry.method, "budget": entry.budget, "seed": entry.seed,
            "mask_method": entry.mask_method, "finetune_method": entry.finetune_method,
            "method_package": mask_method.package, "method_version": mask_method.version,
            "options": mask_options.model_dump(mode="json"), "stem_relu": self.suite.model.stem_relu,
            "protocol": self.suite.protocol, "started": provenance.now(),
            "compute_level": None if level is None else {"index": level.index, "label": level.label,
                                                         "epochs": level.epochs, "seconds": level.seconds,
                                                         "finetune_epochs": entry.finetune_epochs}}
        record["teachers"] = {stage: {"variant": self.teacher_variant(m, o), "fingerprint": sealed[stage]}
                              for stage, m, o in self.parts(entry)}
        # A teacher only some methods use (the robust one) is that method's one-time asset: its cost is
        # shown on the method's rows, beside the per-entry compute that every method gets alike
        assets = {v: self.teacher_compute(v) for v in {t["variant"] for t in record["teachers"].values()}
                  if v != STANDARD_TEACHER}
        if assets:
            record["method_assets"] = {f"{v} teacher": {"epochs": epochs, "once": True} for v, epochs in assets.items()}
        if entry.composed:
            record["composition"] = {
                "mask_method": entry.mask_method, "finetune_method": entry.finetune_method, "bypass": entry.bypass,
                "finetune_package": finetune_method.package, "finetune_version": finetune_method.version,
                "finetune_options": finetune_options.model_dump(mode="json")}
        # the papers' claims this entry can speak to travel with it, so a board is made from records alone
        record["claims"] = [asdict(c) for m in {mask_method.name: mask_method, finetune_method.name: finetune_method}.values()
                            for c in m.info.claims]
        # the setup the method's paper states its figures for; a composed entry runs no method as its paper does
        record["stated_setup"] = [] if entry.composed else [asdict(c) for c in mask_method.info.setup]
        published = [asdict(p) for p in mask_method.info.published
                     if not entry.composed and p.matches(self.suite.dataset.name, self.suite.model.name,
                                                         self.suite.model.stem_relu, entry.budget)]
        if published:
            record["published"] = published[0]
        payload = None
        # What a claim's conditions read: facts the core saw itself, beside those the method reports
        observed: dict[str, Any] = {"teacher": record["teachers"]["build_mask"]["variant"],
                                    "finetune_teacher": record["teachers"]["finetune"]["variant"]}
        student = copy.deepcopy(shared["build_mask"]).train()
        for p in student.parameters():
            p.requires_grad_(True)
        # Everything the student and the entry's teachers compute is counted, however it is called.
        meter = meter_entry(clock, student, list(own_teachers.values()), data.input_shape)
        mask_call = lambda hook: self.methods.caller(hook, entry.mask_method)  # noqa: E731
        # The model's final form is the finetune's: its own extra metrics and price are recorded.
        call = lambda hook: self.methods.caller(hook, entry.finetune_method)  # noqa: E731
        try:
            try:
                with clock.running():
                    with phases("build_mask"):
                        masked = mask_call("build_mask")(ctx=ctx, model=student)
                        model = self._frozen_model(masked, entry, "build_mask")
                        record["build_mask"] = masked.info
                        if entry.bypass == "dapa":
                            record["bypass"] = self._dapa_bypass(ctx, model)
                    clock.begin_finetune(meter.total())
                    with phases("finetune"):
                        tuned = call("finetune")(ctx=finetune_ctx, model=model)
                        model = self._frozen_model(tuned, entry, "finetune")
                    record["finetune"] = tuned.info
            finally:
                intact = meter.intact()
                meter.stop()
            if not intact:
                raise BenchbedError(f"method {entry.method!r} removed the core's compute meter from the model's layers")
            overrun = clock.overrun(meter.total())
            if overrun:
                raise BudgetExceeded(overrun)
            if any(fingerprint(own_teachers[stage]) != sealed[stage] for stage in own_teachers):
                raise BenchbedError(f"method {entry.method!r} changed its teacher (weights, buffers or train/eval "
                                    "mode); the suite's teacher is read-only")
            foreign = foreign_kernels(model)
            if foreign:
                record["rebuilt_from_spec"] = foreign
            # What is saved, copied off the method's model; what the core counts, measures and prices is the
            # model rebuilt from it by the core's own architecture and kernels — never the method's object.
            payload = teacher.payload(model, self.suite, data)
            final = self._rebuilt(payload, entry, data)
            self._check_budget(final, entry)
            observed["dual_bn"] = has_dual_bn(final)
            record["relus"], record["drelus"] = relu_count(final), drelu_count(final)
            record["relus_all_sites"], record["drelus_all_sites"] = relu_count(final, False), drelu_count(final, False)
            with phases("evaluate"):
                record["metrics"] = evaluate_model(final, data, self.suite.evaluation, entry.seed,
                                                   self.methods.metrics, progress=ctx.progress)
                # A method's own measurements see a copy of their own: they may add, never change, the core's.
                eval_ctx = replace(ctx, data=data, teacher=None)
                own = call("evaluate")(ctx=eval_ctx, model=self._rebuilt(payload, entry, data),
                                       settings=self.suite.evaluation)
            if own is not None:
                record["method_metrics"] = _checked_metrics(own, entry)
            if self.suite.secure_cost.enabled:
                settings, profiles = self.suite.secure_cost, self.methods.cost_profiles
                with phases("price"):
                    record["secure_cost"] = {name: price(final, data.input_shape, settings, profiles[name])
                                             for name in settings.profiles}
                own_prices = {name: call("secure_cost")(model=self._rebuilt(payload, entry, data),
                                                        input_shape=data.input_shape, settings=settings,
                                                        profile=profiles[name]) for name in settings.profiles}
                if any(p is not None for p in own_prices.values()):
                    record["method_secure_cost"] = own_prices
            disagreements = disagreements_of(record)
            if disagreements:
                record["disagreements"] = disagreements
            record["checkpoint"] = f"{entry.id}.pt"
            record["status"] = "ok"
        except BudgetExceeded as exc:
            payload = None
            record.update(status="over_budget", error=str(exc))
        except KeyboardInterrupt:
            raise
        except BaseException as exc:  # one entry's failure, or its sys.exit, must not take the suite down
            payload = None
            record.update(status="error", error=f"{type(exc).__name__}: {exc}",
                          traceback=traceback.format_exc(limit=8).splitlines()[-12:])
        record["notes"] = ctx.notes
        record["cuts"] = ctx.cuts
        record["setup"] = {"observed": observed, "reported": {k: v for k, v in ctx.setup.items() if isinstance(k, str)
                                                              and (v is None or isinstance(v, (bool, int, float, str)))}}
        record["phases"] = phases.phases
        record["compute"] = clock.record(meter.total(), meter.breakdown())
        record.update(finished=provenance.now(), versions=provenance.versions(),
                      source_commit=provenance.source_commit(), hardware=provenance.hardware(self.device),
                      determinism=determinism(self.device, timed=level is not None and level.seconds is not None))
        return record, payload

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

    def _rebuilt(self, payload: dict, entry: Entry, data: DataBundle) -> nn.Module:
        """The entry's model as the core rebuilds it from the saved payload, in eval mode on the device."""
        model = model_from_payload(payload, f"{entry.method}'s model", models=self.methods.models,
                                   **teacher.expectations(self.suite, data))
        return model.to(self.device).eval()

    def _check_budget(self, model: nn.Module, entry: Entry) -> None:
        if entry.budget is not None and drelu_count(model) > entry.budget:
            raise BenchbedError(f"{entry.method} returned {drelu_count(model):,} DReLUs, over the budget of {entry.budget:,}")

    # -- the whole suite --------------------------------------------------------------------------
    def run(self, executor: str = "local", address: str | None = None, workers: int | None = None) -> dict[str, int]:
        """Run every unfinished entry, locally or as Ray tasks; records land in the run directory
        as each entry finishes, whichever executor ran it. Nothing is written before the data and
        the teacher checkpoint are known to load."""
        data = self.load_data()
        checkpoint = self.loaded.teacher_checkpoint
        loaded = teacher.from_checkpoint(checkpoint, self.suite, data, self.methods.models) if checkpoint else None
        with self.rundir.locked():
            self.rundir.claim(self.suite, self.suite_path, {
                **{k: v.model_dump(mode="json") for k, v in self.options.items()},
                **{f"{k} (finetune)": v.model_dump(mode="json") for k, v in self.finetune_options.items()}})
            self.rundir.write_data(data.describe())
            entries = plan(self.suite, self.methods)
            self.rundir.write_plan([e.id for e in entries])
            teachers = self.teachers(data, entries, loaded)
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
            task = EntryTask(self.loaded, str(self.run_dir))
            if executor == "ray":
                results = run_on_ray(task, todo, shared, address=address, device=self.suite.device)
            else:
                results = self._isolated(todo, data, teachers, task, shared, workers)
            for entry, (record, payload) in results:
                record = self._save(entry, record, payload)
                counts[record["status"]] += 1
                advance(_summary_line(record))
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
            raise BenchbedError(f"{len(other_teacher)} entries in {self.run_dir} ({', '.join(other_teacher[:2])}, …) "
                                "were made with another teacher than the run's now (its checkpoint changed); pass "
                                "--out with a new directory, or delete those entries to redo them")
        return todo

    def _stale_versions(self, record: dict, entry: Entry) -> str:
        """Which of the entry's plugins made its record at another version than the installed one."""
        made = {entry.mask_method: record.get("method_version"),
                entry.finetune_method: (record.get("composition") or {}).get("finetune_version",
                                                                             record.get("method_version"))}
        return ", ".join(f"{name} {version} (installed: {self.methods.get(name).version})"
                         for name, version in made.items() if version != self.methods.get(name).version)

    def _isolated(self, todo: list[Entry], data: DataBundle, teachers: dict[str, nn.Module], task: "EntryTask",
                  shared: dict[str, dict], workers: int | None) -> Iterator[tuple[Entry, tuple[dict, dict | None]]]:
        """Every entry's ``run_entry`` in a process of its own: forked with this run in memory where it can
        be, else spawned to rebuild it (``task``); whatever a process does, its entry gets a record."""
        method = start_method()
        jobs = ((entry, partial(self._in_child, entry, data, teachers) if method == "fork" else partial(task, entry, shared),
                 self.rundir.work_dir(entry.id) / "result.pt") for entry in todo)
        relay = lambda kind, args: getattr(self.reporter, kind)(*args)  # noqa: E731
        for entry, result, why in run_isolated(jobs, method, workers, relay):
            yield entry, (result if result is not None else (self._failed(entry, why), None))

    def _in_child(self, entry: Entry, data: DataBundle, teachers: dict[str, nn.Module],
                  send: Callable[..., None]) -> tuple[dict, dict | None]:
        """``run_entry`` in an entry's own (forked) process, reporting through the parent."""
        self.reporter = Relay(send)
        return self.run_entry(entry, data, teachers)

    def _failed(self, entry: Entry, why: str) -> dict:
        """The record of an entry whose process gave no result."""
        return {"schema_version": schemas.ENTRY_VERSION, "entry": entry.id, "suite": self.suite.name,
                "fingerprint": self.suite.fingerprint(), "method": entry.method, "label": entry.label or entry.method, "budget": entry.budget,
                "seed": entry.seed, "status": "error", "error": why, "started": provenance.now(),
                "finished": provenance.now(), "compute": {"used": {"epochs": 0.0, "seconds": 0.0}}}

    def _save(self, entry: Entry, record: dict, payload: dict | None) -> dict:
        """Write the entry's checkpoint, then its record; a failed write fails this entry only. A record
        the result format does not accept (a plugin's odd figure) is written as this entry's error."""
        hashed = {**record, "checkpoint_sha256": "0" * 64} if payload is not None else record  # the hash comes below
        found = schemas.problems(hashed, "entry")
        if found:
            record = {**record, "status": "error", "error": f"the record breaks the result format: {found[0]}"}
            payload = None
            self.reporter.log(f"{entry.id}: {record['error']}")
        try:
            if payload is not None:  # the checkpoint first: a finished record always has its checkpoint
                record["checkpoint_sha256"] = write_checkpoint(payload, self.rundir.checkpoint_path(entry.id))
            write_json(self.rundir.record_path(entry.id), record)
        except (OSError, RuntimeError) as exc:  # torch.save reports a full disk as a RuntimeError
            why = exc.strerror if isinstance(exc, OSError) and exc.strerror else first_line(exc)
            self.reporter.log(f"{entry.id}: could not be saved ({why}); nothing else was lost, `benchbed run` redoes it")
            failed = {**record, "status": "error", "error": f"not saved: {why}"}
            failed.pop("checkpoint_sha256", None)
            try:  # a small error record may still fit; an error entry is redone on resume either way
                write_json(self.rundir.record_path(entry.id), failed)
            except (OSError, RuntimeError):
                pass
            return failed
        return record


@dataclass(frozen=True)
class EntryTask:
    """One entry as a picklable task for a remote worker: it rebuilds the run from the validated suite,
    loads the data and the shared teachers' payloads, and returns the record and checkpoint payload."""

    loaded: LoadedSuite
    run_dir: str

    def __call__(self, entry: Entry, teacher_payloads: dict[str, dict],
                 send: Callable[..., None] | None = None) -> tuple[dict, dict | None]:
        run = SuiteRun(self.loaded, out=self.run_dir, quiet=True)
        if send is not None:  # in an entry's own (spawned) process: report through the parent
            run.reporter = Relay(send)
        data = run.load_data()
        teachers = {v: teacher.frozen(model_from_payload(p, f"the shared {v} teacher", models=run.methods.models),
                                      run.device) for v, p in teacher_payloads.items()}
        return run.run_entry(entry, data, teachers)


def _checked_metrics(metrics: Any, entry: Entry) -> dict:
    """A method's own ``evaluate`` answer the record can hold: a dict whose accuracies are fractions."""
    if not isinstance(metrics, dict):
        raise BenchbedError(f"evaluate of {entry.method!r} returned a {type(metrics).__name__}; it must return a dict "
                            "of metrics")
    bad = [k for k, v in metrics.items() if k.endswith("accuracy")
           and not (isinstance(v, (int, float)) and not isinstance(v, bool) and 0 <= v <= 1)]
    if bad:
        raise BenchbedError(f"evaluate of {entry.method!r} returned accuracies outside [0, 1]: {', '.join(bad)}")
    return metrics


# How far a method's own figure may sit from the core's before the record flags it.
AGREEMENT_TOLERANCE = 1e-6


def disagreements_of(record: dict) -> list[str]:
    """Where a method's own metrics or prices differ from the core's measurement of the same thing."""
    found = []
    core, own = record.get("metrics") or {}, record.get("method_metrics") or {}
    for key, value in own.items():
        if isinstance(value, (int, float)) and isinstance(core.get(key), (int, float)) \
                and abs(value - core[key]) > AGREEMENT_TOLERANCE:
            found.append(f"{key}: the method says {value:.6g}, the core measured {core[key]:.6g}")
    for profile, price_ in (record.get("method_secure_cost") or {}).items():
        mine = (record.get("secure_cost") or {}).get(profile, {})
        for key in ("drelus", "comm_mb", "rounds"):
            if isinstance(price_, dict) and key in price_ and key in mine \
                    and abs(float(price_[key]) - float(mine[key])) > AGREEMENT_TOLERANCE * max(1.0, abs(mine[key])):
                found.append(f"{profile} {key}: the method prices {price_[key]:.6g}, the core {mine[key]:.6g}")
    return found


def _raised_at(record: dict) -> str:
    """Where the error of a failed entry was raised (the traceback's last frame), for its console line."""
    frames = [line.strip() for line in record.get("traceback") or [] if line.strip().startswith('File "')]
    if not frames:
        return ""
    match = re.match(r'File "(.+)", line (\d+), in (.+)', frames[-1])
    where = f"{match.group(1)}:{match.group(2)} in {match.group(3)}" if match else frames[-1]
    return f" (raised at {where}; the record's `traceback` has the rest)"


def _summary_line(record: dict) -> str:
    if record["status"] != "ok":
        return f"{record['entry']}: {record['status'].upper()} — {record.get('error', '')}{_raised_at(record)}"
    metrics = record["metrics"]
    return (f"{record['entry']}: acc {metrics['clean_accuracy']:.4f}, {record['drelus']:,} DReLUs, "
            f"{record['compute']['used']['epochs']:.2f} epochs / {record['compute']['used']['seconds']:.1f} s")
