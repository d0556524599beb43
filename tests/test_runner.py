"""The runner: identical compute budgets enforced, failures isolated, records complete, resume after a kill."""
from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time

import pytest
import torch

from benchbed.api import FinetuneResult, MaskResult, SiteKernel, TrainRecipe, fit
from benchbed.errors import BenchbedError
from benchbed.model.sites import sites
from benchbed.run.runner import SuiteRun
from conftest import entry_records, keep_first_pixels, method_plugin


def _records(run_dir):
    return {r["entry"]: r for r in entry_records(run_dir)}


def test_greedy_method_is_held_to_the_epoch_budget(write_suite, methods_with, tmp_path):
    def greedy_finetune(ctx, model):
        result = fit(model, ctx, TrainRecipe(epochs=1000, lr=0.01, batch_size=64))
        for _ in range(10):  # keeps asking for more data after the budget ran out
            assert list(ctx.train_batches(64)) == []
        return FinetuneResult(model, result.summary())

    plugins = methods_with(("greedy", method_plugin(keep_first_pixels, greedy_finetune)))
    suite = write_suite(methods=[{"name": "greedy"}], compute={"epochs": 1.5})
    SuiteRun.from_file(suite, out=tmp_path / "run", quiet=True, plugins=plugins).run()
    for record in _records(tmp_path / "run").values():
        assert record["status"] == "ok"
        assert record["compute"]["limit"]["epochs"] == 1.5
        assert 1.4 < record["compute"]["used"]["epochs"] <= 1.5
        assert record["compute"]["exhausted"] == "epochs"
        assert record["finetune"]["stopped_by_budget"] is True


def test_failures_are_recorded_and_the_others_go_on(write_suite, methods_with, tmp_path):
    def boom(ctx, model):
        raise RuntimeError("mask search diverged")

    def too_many(ctx, model):
        return MaskResult(model)  # leaves every ReLU in place

    class Soft(SiteKernel):
        def forward(self, x):
            return x

    def unfrozen(ctx, model):
        next(iter(sites(model).values())).set_kernel(Soft())
        return MaskResult(model)

    plugins = methods_with(("boom", method_plugin(boom)), ("too_many", method_plugin(too_many)), ("unfrozen", method_plugin(unfrozen)))
    suite = write_suite(methods=[{"name": "boom"}, {"name": "too_many"}, {"name": "unfrozen"}, {"name": "all_relu"}],
                        budgets=[64])
    run = SuiteRun.from_file(suite, out=tmp_path / "run", quiet=True, plugins=plugins)
    lines: list[str] = []
    run.reporter.log = lines.append
    counts = run.run()
    assert counts["error"] == 3 and counts["ok"] == 1
    records = _records(tmp_path / "run")
    assert records["boom__64__s0"]["error"] == "RuntimeError: mask search diverged"
    # the console line names the plugin's file and line, and where the rest of the traceback is
    (line,) = [line for line in lines if line.startswith("boom__64__s0: ERROR")]
    assert f"raised at {__file__}:" in line and "in boom" in line and "the record's `traceback`" in line
    assert "over the budget of 64" in records["too_many__64__s0"]["error"]
    assert "unfrozen" in records["unfrozen__64__s0"]["error"]
    assert records["all_relu__all__s0"]["status"] == "ok"


def test_record_holds_everything_the_result_depends_on(write_suite, tmp_path):
    SuiteRun.from_file(write_suite(), out=tmp_path / "run", quiet=True).run()
    record = _records(tmp_path / "run")["random_mask__64__s0"]
    assert record["status"] == "ok" and record["drelus"] == 64 and record["relus"] == 64
    assert record["relus_all_sites"] == 64
    for key in ("options", "seed", "versions", "source_commit", "hardware", "started", "finished", "compute",
                "metrics", "secure_cost", "checkpoint", "method_version"):
        assert key in record, key
    assert record["options"]["kd_temperature"] == 4.0
    assert record["versions"]["torch"].startswith("2.")
    assert 0 <= record["metrics"]["clean_accuracy"] <= 1
    assert (tmp_path / "run" / "entries" / record["checkpoint"]).exists()
    suite = json.loads((tmp_path / "run" / "suite.json").read_text())
    assert suite["suite"]["budgets"] == [64, 512]


def test_stem_convention_is_applied(write_suite, tmp_path):
    SuiteRun.from_file(write_suite(model={"stem_relu": False}, budgets=[64]), out=tmp_path / "run", quiet=True).run()
    records = _records(tmp_path / "run")
    assert records["random_mask__64__s0"]["drelus"] == records["random_mask__64__s0"]["drelus_all_sites"] == 64
    assert records["all_relu__all__s0"]["relus"] == 4608 - 1024, "no stem ReLU at all: nothing uncounted to price"


def test_a_run_directory_belongs_to_one_suite(write_suite, tmp_path):
    SuiteRun.from_file(write_suite(budgets=[64], methods=[{"name": "all_relu"}]), out=tmp_path / "run", quiet=True).run()
    with pytest.raises(BenchbedError, match="different suite configuration"):
        SuiteRun.from_file(write_suite(budgets=[65], methods=[{"name": "all_relu"}]), out=tmp_path / "run", quiet=True).run()


def test_resume_after_a_killed_run(write_suite, tmp_path):
    suite = write_suite(budgets=[16, 64, 256, 1024], compute={"epochs": 3},
                        methods=[{"name": "random_mask", "options": {"finetune": {"batch_size": 64}}}])
    run_dir = tmp_path / "run"
    proc = subprocess.Popen([sys.executable, "-m", "benchbed", "run", str(suite), "--out", str(run_dir), "--quiet"],
                            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    deadline = time.time() + 180
    while time.time() < deadline and len(list((run_dir / "entries").glob("*.json"))) < 1:
        time.sleep(0.05)
    os.kill(proc.pid, signal.SIGKILL)
    proc.wait()
    done_before = {p.name: p.read_text() for p in (run_dir / "entries").glob("*.json")}
    assert 1 <= len(done_before) < 4, "the kill must land mid-run"

    counts = SuiteRun.from_file(suite, out=run_dir, quiet=True).run()
    assert counts["skipped"] == len(done_before)
    assert counts["ok"] == 4 - len(done_before)
    for name, text in done_before.items():
        assert (run_dir / "entries" / name).read_text() == text, "finished records are never redone"
    assert {r["status"] for r in entry_records(run_dir)} == {"ok"}
    assert len(entry_records(run_dir)) == 4


def test_compiled_training_path_trains(make_ctx):
    ctx, model = make_ctx(None, budget=None, epochs=1.0)
    before = [p.detach().clone() for p in model.parameters()]
    result = fit(model, ctx, TrainRecipe(epochs=1, lr=0.05, batch_size=256, compile=True))
    assert result.epochs == pytest.approx(1.0, abs=0.3)
    assert any(not torch.equal(a, b) for a, b in zip(before, model.parameters())), "the compiled step updates the model"
