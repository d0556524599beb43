"""Running a suite: one shared teacher, then every (method × budget × seed) entry under the same
compute budget, each written to the run directory as soon as it finishes."""
from __future__ import annotations

import copy
import hashlib
import random
import traceback
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch
from pydantic import BaseModel
from torch import nn

from benchbed import provenance
from benchbed.checkpoint import checkpoint_payload, load_checkpoint, write_checkpoint
from benchbed.compute import ComputeClock
from benchbed.config import Suite, load_suite
from benchbed.context import EntryContext
from benchbed.data import DataBundle, load_dataset
from benchbed.dual_bn import convert_dual_bn
from benchbed.errors import BenchbedError, BudgetExceeded
from benchbed.models import build_model
from benchbed.plugins import Methods, plugin_manager
from benchbed.progress import Reporter
from benchbed.records import entry_id, is_finished, read_json, write_json
from benchbed.robust_training import robust_teacher_loss
from benchbed.sites import capacity, drelu_count, relu_count, set_stem_counted, sites
from benchbed.training import accuracy, fit


@dataclass(frozen=True)
class Entry:
    method: str
    budget: int | None
    seed: int

    @property
    def id(self) -> str:
        return entry_id(self.method, self.budget, self.seed)


def plan(suite: Suite, methods: Methods) -> list[Entry]:
    entries = []
    for seed in suite.seeds:
        for m in suite.methods:
            budgets = suite.budgets if methods.get(m.name).info.budgeted else [None]
            entries += [Entry(m.name, b, seed) for b in budgets]
    return entries


def seed_everything(seed: int, device: torch.device) -> torch.Generator:
    random.seed(seed)
    np.random.seed(seed % 2**32)
    torch.manual_seed(seed)
    return torch.Generator(device=device).manual_seed(seed)


def resolve_device(choice: str) -> torch.device:
    if choice == "cuda" and not torch.cuda.is_available():
        raise BenchbedError("the suite asks for `device: cuda` but no CUDA device is visible; use `device: auto`")
    if choice == "auto":
        choice = "cuda" if torch.cuda.is_available() else "cpu"
    return torch.device(choice)


class SuiteRun:
    def __init__(self, suite_path: str | Path, out: str | Path | None = None, quiet: bool = False,
                 methods: Methods | None = None):
        methods = methods or Methods(plugin_manager())
        suite, options = load_suite(suite_path, methods)
        self._setup(suite, options, str(suite_path), out, quiet, methods)

    @classmethod
    def validated(cls, suite: Suite, options: dict[str, BaseModel], suite_path: str, out: str | Path | None,
                  quiet: bool = True) -> "SuiteRun":
        """A run of a suite validated elsewhere (by the driver of a distributed run)."""
        run = cls.__new__(cls)
        run._setup(suite, options, suite_path, out, quiet, Methods(plugin_manager()))
        return run

    def _setup(self, suite: Suite, options: dict[str, BaseModel], suite_path: str, out: str | Path | None,
               quiet: bool, methods: Methods) -> None:
        self.methods, self.suite, self.options, self.suite_path = methods, suite, options, suite_path
        self.run_dir = Path(out) if out else Path("runs") / suite.name
        self.reporter = Reporter(quiet)
        self.device = resolve_device(suite.device)

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

    # -- teacher ----------------------------------------------------------------------------------
    def _new_model(self, data: DataBundle) -> nn.Module:
        model = build_model(self.suite.model.name, num_classes=data.num_classes, input_shape=data.input_shape,
                            mean=data.mean, std=data.std)
        set_stem_counted(model, self.suite.model.count_stem)
        return model

    def _payload(self, model: nn.Module, data: DataBundle) -> dict:
        return checkpoint_payload(model, model_name=self.suite.model.name, num_classes=data.num_classes,
                                  input_shape=data.input_shape, mean=data.mean, std=data.std)

    def shared_teacher(self, model: nn.Module) -> nn.Module:
        """The teacher as every entry sees it: on the device, in eval mode, frozen."""
        set_stem_counted(model, self.suite.model.count_stem)
        model = model.to(self.device).eval()
        for p in model.parameters():
            p.requires_grad_(False)
        return model

    def load_data(self) -> DataBundle:
        spec = self.suite.dataset
        return load_dataset(spec.name, spec.root, spec.download, spec.val_fraction, spec.split_seed).to(self.device)

    def teacher(self, data: DataBundle) -> nn.Module:
        """Train the all-ReLU teacher once per suite (or load it), and share it with every entry."""
        path, record_path = self.run_dir / "teacher.pt", self.run_dir / "teacher.json"
        cfg = self.suite.teacher
        if cfg.checkpoint:
            model = load_checkpoint(cfg.checkpoint, expect_model=self.suite.model.name, expect_classes=data.num_classes)
            source = {"checkpoint": cfg.checkpoint,
                      "sha256": hashlib.sha256(Path(cfg.checkpoint).expanduser().read_bytes()).hexdigest()}
        elif path.exists() and record_path.exists():
            model = load_checkpoint(path, expect_model=self.suite.model.name, expect_classes=data.num_classes)
            self.reporter.log(f"teacher: reusing {path}")
            source = None
        else:
            clock = ComputeClock(None, None, len(data.train_y))
            ctx = self._context("teacher", None, cfg.seed, data, None, clock, cfg.recipe)  # seeds the init too
            model = self._new_model(data)
            loss_fn = None
            if cfg.robust is not None:
                convert_dual_bn(model)
                loss_fn = robust_teacher_loss(model, cfg.robust)
            model = model.to(self.device)
            kind = "robust dual-BN " if cfg.robust else ""
            self.reporter.log(f"teacher: training a {kind}{self.suite.model.name} for {cfg.recipe.epochs:g} epochs")
            with clock.running():
                result = fit(model, ctx, cfg.recipe, loss_fn=loss_fn, label="teacher")
            source = {"trained": result.summary(), "robust": cfg.robust is not None, "compute": clock.record()}
        model = self.shared_teacher(model)
        if source is not None:
            if not cfg.checkpoint:
                write_checkpoint(self._payload(model, data), path)
            write_json(record_path, {"source": source, "seed": cfg.seed,
                                     "val_accuracy": accuracy(model, data.val_x, data.val_y),
                                     "clean_accuracy": accuracy(model, data.test_x, data.test_y),
                                     "relus": relu_count(model), "relus_all_sites": relu_count(model, False),
                                     "versions": provenance.versions(), "source_commit": provenance.source_commit(),
                                     "hardware": provenance.hardware(self.device), "finished": provenance.now()})
        acc = read_json(record_path)["clean_accuracy"]
        self.reporter.log(f"teacher: test accuracy {acc:.4f}, {relu_count(model):,} counted ReLUs")
        return model

    # -- entries ----------------------------------------------------------------------------------
    def _context(self, method: str, budget: int | None, seed: int, data: DataBundle, teacher: nn.Module | None,
                 clock: ComputeClock, options: BaseModel) -> EntryContext:
        workdir = self.run_dir / "work" / entry_id(method, budget, seed)
        return EntryContext(method=method, budget=budget, seed=seed, data=data, teacher=teacher, clock=clock,
                            device=self.device, options=options, generator=seed_everything(seed, self.device),
                            workdir=workdir, log=self.reporter.log, progress=self.reporter.progress)

    def run_entry(self, entry: Entry, data: DataBundle, teacher: nn.Module) -> tuple[dict[str, Any], dict | None]:
        """Run one entry; return its record and, when it finished, its checkpoint payload."""
        method = self.methods.get(entry.method)
        compute = self.suite.compute
        clock = ComputeClock(compute.epochs, compute.seconds, len(data.train_y))
        ctx = self._context(entry.method, entry.budget, entry.seed, data, teacher, clock, self.options[entry.method])
        record: dict[str, Any] = {
            "entry": entry.id, "suite": self.suite.name, "method": entry.method, "budget": entry.budget,
            "seed": entry.seed, "method_package": method.package, "method_version": method.version,
            "options": ctx.options.model_dump(mode="json"), "count_stem": self.suite.model.count_stem,
            "started": provenance.now()}
        payload = None
        student = copy.deepcopy(teacher).train()
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
            payload = self._payload(model, data)
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
        teacher = self.teacher(data)
        entries = plan(self.suite, self.methods)
        self.reporter.log(f"{len(entries)} entries; ReLU convention: "
                          f"{'stem counted' if self.suite.model.count_stem else 'stem ReLU kept and not counted'}, "
                          f"{capacity(teacher):,} counted ReLUs; compute per entry: "
                          f"{self.suite.compute.model_dump(exclude_none=True)}")
        todo = [e for e in entries if not is_finished(self._record_path(e))]
        counts = {"ok": 0, "over_budget": 0, "error": 0, "skipped": len(entries) - len(todo)}
        with self.reporter.entries(len(entries)) as advance:
            for entry in entries:
                if entry not in todo:
                    advance(f"{entry.id}: finished earlier, skipped")
            if executor == "ray":
                from benchbed.ray_executor import run_on_ray

                results = run_on_ray(self, todo, self._payload(teacher, data), address)
            else:
                results = ((entry, *self.run_entry(entry, data, teacher)) for entry in todo)
            for entry, record, payload in results:
                if payload is not None:  # the checkpoint first: a record always has its checkpoint
                    write_checkpoint(payload, self.run_dir / "entries" / record["checkpoint"])
                write_json(self._record_path(entry), record)
                counts[record["status"]] += 1
                advance(_summary_line(record))
        return counts

    def _record_path(self, entry: Entry) -> Path:
        return self.run_dir / "entries" / f"{entry.id}.json"


def _summary_line(record: dict) -> str:
    if record["status"] != "ok":
        return f"{record['entry']}: {record['status'].upper()} — {record.get('error', '')}"
    metrics = record["metrics"]
    return (f"{record['entry']}: acc {metrics['clean_accuracy']:.4f}, {record['drelus']:,} DReLUs, "
            f"{record['compute']['used']['epochs']:.2f} epochs / {record['compute']['used']['seconds']:.1f} s")
