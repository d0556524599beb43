"""Running a suite: one shared teacher, then every (method × budget × seed) entry under the same
compute budget, each written to the run directory as soon as it finishes."""
from __future__ import annotations

import copy
import traceback
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Iterable

from pydantic import BaseModel
from torch import nn

from benchbed import provenance, teacher
from benchbed.checkpoint import model_from_payload, write_checkpoint
from benchbed.compute import ComputeClock
from benchbed.config import Suite
from benchbed.context import EntryContext
from benchbed.data import DataBundle, load_dataset
from benchbed.devices import resolve_device
from benchbed.errors import BenchbedError, BudgetExceeded
from benchbed.plugins import Methods, plugin_manager
from benchbed.progress import Reporter
from benchbed.ray_executor import run_on_ray
from benchbed.records import is_finished, read_json, write_json
from benchbed.reproducibility import seed_everything
from benchbed.sites import capacity, drelu_count, relu_count, sites
from benchbed.suite import Entry, load_suite, plan


class SuiteRun:
    """One validated suite bound to a run directory."""

    def __init__(self, suite: Suite, options: dict[str, BaseModel], *, suite_path: str = "", out: str | Path | None = None,
                 quiet: bool = False, methods: Methods | None = None):
        self.suite, self.options, self.suite_path = suite, options, suite_path
        self.methods = methods or Methods(plugin_manager())
        self.run_dir = Path(out) if out else Path("runs") / suite.name
        self.reporter = Reporter(quiet)
        self.device = resolve_device(suite.device)

    @classmethod
    def from_file(cls, suite_path: str | Path, out: str | Path | None = None, quiet: bool = False,
                  methods: Methods | None = None) -> "SuiteRun":
        methods = methods or Methods(plugin_manager())
        suite, options = load_suite(suite_path, methods)
        return cls(suite, options, suite_path=str(suite_path), out=out, quiet=quiet, methods=methods)

    # -- run directory ----------------------------------------------------------------------------
    def _claim_run_dir(self) -> None:
        (self.run_dir / "entries").mkdir(parents=True, exist_ok=True)
        meta_path = self.run_dir / "suite.json"
        fingerprint = self.suite.fingerprint()
        if meta_path.exists():
            meta = read_json(meta_path)
            if meta.get("fingerprint") != fingerprint or meta.get("seeds") != self.suite.seeds:
                raise BenchbedError(f"{self.run_dir} holds a run of a different suite configuration; "
                                    "pass --out with a new directory to start afresh")
        else:
            write_json(meta_path, {"suite": self.suite.model_dump(mode="json"), "suite_file": self.suite_path,
                                   "fingerprint": fingerprint, "seeds": self.suite.seeds,
                                   "options": {k: v.model_dump(mode="json") for k, v in self.options.items()},
                                   "created": provenance.now()})

    def load_data(self) -> DataBundle:
        spec = self.suite.dataset
        return load_dataset(spec.name, spec.root, spec.download, spec.val_fraction, spec.split_seed).to(self.device)

    def teacher_variant(self, method: str) -> str:
        return self.methods.get(method).info.teacher(self.options[method])

    def teachers(self, data: DataBundle, entries: Iterable[Entry]) -> dict[str, nn.Module]:
        """Every teacher variant the entries ask for, each prepared once."""
        variants = sorted({"standard"} | {self.teacher_variant(e.method) for e in entries})
        return {v: teacher.prepare(self.suite, data, self.run_dir, self.device, self.reporter, v) for v in variants}

    # -- entries ----------------------------------------------------------------------------------
    def run_entry(self, entry: Entry, data: DataBundle, teachers: dict[str, nn.Module]) -> tuple[dict[str, Any], dict | None]:
        """Run one entry; return its record and, when it finished, its checkpoint payload."""
        method = self.methods.get(entry.method)
        compute = self.suite.compute
        clock = ComputeClock(compute.epochs, compute.seconds, len(data.train_y), device=self.device)
        shared_teacher = teachers[self.teacher_variant(entry.method)]
        ctx = EntryContext(method=entry.method, budget=entry.budget, seed=entry.seed, data=data, teacher=shared_teacher,
                           clock=clock, device=self.device, options=self.options[entry.method],
                           generator=seed_everything(entry.seed, self.device),
                           workdir=self.run_dir / "work" / entry.id, log=self.reporter.log,
                           progress=self.reporter.progress)
        record: dict[str, Any] = {
            "entry": entry.id, "suite": self.suite.name, "method": entry.method, "budget": entry.budget,
            "seed": entry.seed, "method_package": method.package, "method_version": method.version,
            "options": ctx.options.model_dump(mode="json"), "count_stem": self.suite.model.count_stem,
            "started": provenance.now()}
        payload = None
        student = copy.deepcopy(shared_teacher).train()
        for p in student.parameters():
            p.requires_grad_(True)
        call = lambda hook: self.methods.caller(hook, entry.method)  # noqa: E731
        try:
            with clock.running():
                masked = call("build_mask")(ctx=ctx, model=student)
                model = self._check_mask(masked, entry)
                record["build_mask"] = masked.info
                tuned = call("finetune")(ctx=ctx, model=model)
                if tuned is None:
                    raise BenchbedError(f"method {entry.method!r} returned nothing from finetune")
                model = tuned.model
                record["finetune"] = tuned.info
            self._check_mask_result(model, entry, stage="finetune")
            record["relus"], record["drelus"] = relu_count(model), drelu_count(model)
            record["relus_all_sites"], record["drelus_all_sites"] = relu_count(model, False), drelu_count(model, False)
            record["metrics"] = call("evaluate")(ctx=ctx, model=model.eval(), settings=self.suite.evaluation)
            if self.suite.secure_cost.enabled:
                settings = self.suite.secure_cost
                record["secure_cost"] = call("secure_cost")(model=model, input_shape=data.input_shape, settings=settings,
                                                            profile=self.methods.cost_profiles[settings.profile])
            payload = teacher.payload(model, self.suite, data)
            record["checkpoint"] = f"{entry.id}.pt"
            record["status"] = "ok"
        except BudgetExceeded as exc:
            record.update(status="over_budget", error=str(exc))
        except Exception as exc:  # one broken entry must not take the suite down
            record.update(status="error", error=f"{type(exc).__name__}: {exc}",
                          traceback=traceback.format_exc(limit=8).splitlines()[-12:])
        record["notes"] = ctx.notes
        record["compute"] = clock.record()
        record.update(finished=provenance.now(), versions=provenance.versions(),
                      source_commit=provenance.source_commit(), hardware=provenance.hardware(self.device))
        return record, payload

    def _check_mask(self, masked: Any, entry: Entry) -> nn.Module:
        if masked is None:
            raise BenchbedError(f"method {entry.method!r} returned nothing from build_mask")
        self._check_mask_result(masked.model, entry, stage="build_mask")
        return masked.model

    def _check_mask_result(self, model: nn.Module, entry: Entry, stage: str) -> None:
        custom = [n for n, s in sites(model).items() if not s.kernel.standard]
        if custom:
            raise BenchbedError(f"{entry.method}.{stage} left sites unfrozen ({', '.join(custom[:3])}…); "
                                "freeze them to relu/masked/patch kernels")
        if entry.budget is not None and drelu_count(model) > entry.budget:
            raise BenchbedError(f"{entry.method}.{stage} returned {drelu_count(model):,} DReLUs, "
                                f"over the budget of {entry.budget:,}")

    # -- the whole suite --------------------------------------------------------------------------
    def run(self, executor: str = "local", address: str | None = None) -> dict[str, int]:
        """Run every unfinished entry, locally or as Ray tasks; records land in the run directory
        as each entry finishes, whichever executor ran it."""
        self._claim_run_dir()
        data = self.load_data()
        write_json(self.run_dir / "data.json", data.describe())
        entries = plan(self.suite, self.methods)
        teachers = self.teachers(data, entries)
        self.reporter.log(f"{len(entries)} entries; ReLU convention: "
                          f"{'stem counted' if self.suite.model.count_stem else 'stem ReLU kept and not counted'}, "
                          f"{capacity(teachers['standard']):,} counted ReLUs; compute per entry: "
                          f"{self.suite.compute.model_dump(exclude_none=True)}")
        todo = [e for e in entries if not is_finished(self._record_path(e))]
        counts = {"ok": 0, "over_budget": 0, "error": 0, "skipped": len(entries) - len(todo)}
        with self.reporter.entries(len(entries)) as advance:
            for entry in entries:
                if entry not in todo:
                    advance(f"{entry.id}: finished earlier, skipped")
            if executor == "ray":
                shared = {v: teacher.payload(t, self.suite, data) for v, t in teachers.items()}
                results = run_on_ray(EntryTask(self.suite, self.options, self.suite_path, str(self.run_dir)), todo, shared, address=address, device=self.suite.device)
            else:
                results = ((entry, self.run_entry(entry, data, teachers)) for entry in todo)
            for entry, (record, payload) in results:
                if payload is not None:  # the checkpoint first: a record always has its checkpoint
                    write_checkpoint(payload, self.run_dir / "entries" / record["checkpoint"])
                write_json(self._record_path(entry), record)
                counts[record["status"]] += 1
                advance(_summary_line(record))
        return counts

    def _record_path(self, entry: Entry) -> Path:
        return self.run_dir / "entries" / f"{entry.id}.json"


@dataclass(frozen=True)
class EntryTask:
    """One entry as a picklable task for a remote worker: it rebuilds the run from the validated suite,
    loads the data and the shared teachers' payloads, and returns the record and checkpoint payload."""

    suite: Suite
    options: dict[str, BaseModel]
    suite_path: str
    run_dir: str

    def __call__(self, entry: Entry, teacher_payloads: dict[str, dict]) -> tuple[dict, dict | None]:
        run = SuiteRun(self.suite, self.options, suite_path=self.suite_path, out=self.run_dir, quiet=True)
        data = run.load_data()
        teachers = {v: teacher.frozen(model_from_payload(p, f"the shared {v} teacher"), self.suite, run.device)
                    for v, p in teacher_payloads.items()}
        return run.run_entry(entry, data, teachers)


def _summary_line(record: dict) -> str:
    if record["status"] != "ok":
        return f"{record['entry']}: {record['status'].upper()} — {record.get('error', '')}"
    metrics = record["metrics"]
    return (f"{record['entry']}: acc {metrics['clean_accuracy']:.4f}, {record['drelus']:,} DReLUs, "
            f"{record['compute']['used']['epochs']:.2f} epochs / {record['compute']['used']['seconds']:.1f} s")
