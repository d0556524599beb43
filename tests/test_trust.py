"""The core holds the rules, whatever a method plugin does. Each test runs a plugin written to break
one rule and checks that its entry is not recorded "ok" with a wrong number, and that the other
entries are untouched."""
from __future__ import annotations

import sys
import time

import pytest
import torch
import torch.nn.functional as F

from benchbed.api import FinetuneResult, MaskResult, counted_sites
from benchbed.cli import main
from benchbed.files import read_json
from benchbed.model.sites import MaskedKernel
from benchbed.run.runner import SuiteRun
from conftest import entry_records, keep_first_pixels, method_plugin


def _records(run_dir):
    return {r["entry"]: r for r in entry_records(run_dir)}


def _run(write_suite, methods_with, tmp_path, contributed, names=None, **changes):
    plugins = methods_with(*contributed)
    names = names or [name for name, _ in contributed]
    suite = write_suite(methods=[{"name": n} for n in names], budgets=[64], **changes)
    run = SuiteRun.from_file(suite, out=tmp_path / "run", quiet=True, plugins=plugins)
    return run, run.run()


def test_training_on_an_own_loop_is_charged_and_flagged(write_suite, methods_with, tmp_path):
    def own_loop(ctx, model):
        optimizer = torch.optim.SGD(model.parameters(), lr=0.01)
        x_all = ctx.data.train_x.float() / 255
        for _ in range(6):  # six epochs against a budget of two, never through ctx.train_batches
            for start in range(0, len(x_all), 128):
                loss = F.cross_entropy(model(x_all[start:start + 128]), ctx.data.train_y[start:start + 128])
                optimizer.zero_grad()
                loss.backward()
                optimizer.step()
        return FinetuneResult(model)

    _, counts = _run(write_suite, methods_with, tmp_path, [("own_loop", method_plugin(keep_first_pixels, own_loop))],
                     names=["own_loop", "random_mask"], compute={"epochs": 2})
    records = _records(tmp_path / "run")
    cheat = records["own_loop__64__s0"]
    # the meter sees the loop's passes and stops it where it stands, past the budget
    assert cheat["status"] == "over_budget" and "budget of 2" in cheat["error"]
    assert 2.0 < cheat["compute"]["used"]["epochs"] < 3.0
    honest = records["random_mask__64__s0"]
    assert honest["status"] == "ok" and honest["compute"]["used"]["epochs"] <= 2.0 + 1e-6


def test_a_swallowed_budget_stop_still_counts(write_suite, methods_with, tmp_path):
    """``except Exception`` cannot catch the stop; ``except BaseException`` can, and the check after the
    entry flags it anyway. Time is the run's own clock, driven by hand: no dependence on machine speed."""
    caught = []

    def ordinary_handler(ctx, model):
        try:
            run.timer.advance(100.0)
            ctx.clock.allows(1)  # the budget is now spent ...
            raise_budget_stop()
        except Exception as exc:  # ... and an ordinary handler does not see the stop
            caught.append(exc)
        return MaskResult(model)

    def greedy_handler(ctx, model):
        try:
            raise_budget_stop()
        except BaseException:  # noqa: B036 — swallows everything, as a careless plugin might
            pass
        run.timer.advance(100.0)
        return keep_first_pixels(ctx, model)

    plugins = methods_with(("ordinary", method_plugin(ordinary_handler)), ("greedy", method_plugin(greedy_handler)))
    suite = write_suite(methods=[{"name": "ordinary"}, {"name": "greedy"}, {"name": "all_relu"}], budgets=[64],
                        compute={"epochs": None, "seconds": 10})
    run = SuiteRun.from_file(suite, out=tmp_path / "run", quiet=True, plugins=plugins)
    run.timer = FakeTimer()
    counts = run.run()
    assert caught == []
    records = _records(tmp_path / "run")
    assert records["ordinary__64__s0"]["status"] == "over_budget"
    greedy = records["greedy__64__s0"]
    assert greedy["status"] == "over_budget" and "100.0 s against a compute budget of 10 s" in greedy["error"]
    assert records["all_relu__all__s0"]["status"] == "ok"
    assert counts == {"ok": 1, "over_budget": 2, "error": 0, "skipped": 0}


class FakeTimer:
    def __init__(self):
        self.now = 0.0

    def __call__(self) -> float:
        return self.now

    def advance(self, seconds: float) -> None:
        self.now += seconds


def raise_budget_stop():
    from benchbed.errors import BudgetExceeded

    raise BudgetExceeded("stopped")


@pytest.mark.parametrize("tamper", ["train_mode", "weights", "hook", "forward", "class"])
def test_the_shared_teacher_is_sealed(write_suite, methods_with, tmp_path, tamper):
    def vandal(ctx, model):
        first = next(m for m in ctx.teacher.modules() if isinstance(m, torch.nn.Conv2d))
        if tamper == "train_mode":
            ctx.teacher.train()
        elif tamper == "hook":  # a hook that zeroes a layer's output, left on the teacher
            first.register_forward_hook(lambda module, inputs, output: output * 0)
        elif tamper == "forward":  # the instance's own forward in place of its class's
            first.forward = lambda x: torch.zeros_like(x)
        elif tamper == "class":  # the same weights under another class that computes something else
            first.__class__ = type("Silent", (torch.nn.Conv2d,), {"forward": lambda self, x: x * 0})
        else:
            with torch.no_grad():
                for p in ctx.teacher.parameters():
                    p.zero_()
        return MaskResult(model)

    _, counts = _run(write_suite, methods_with, tmp_path, [("vandal", method_plugin(vandal, budgeted=False))],
                     names=["vandal", "all_relu"])
    records = _records(tmp_path / "run")
    assert records["vandal__all__s0"]["status"] == "error" and "changed its teacher" in records["vandal__all__s0"]["error"]
    reference = records["all_relu__all__s0"]
    teacher = read_json(tmp_path / "run" / "teacher.json")
    assert reference["metrics"]["clean_accuracy"] == teacher["clean_accuracy"], "the reference row sees the real teacher"


def test_drelus_are_counted_by_the_core_not_by_the_kernel(write_suite, methods_with, tmp_path):
    class Modest(MaskedKernel):
        def drelus(self, shape):
            return 0

        relus = drelus

    def liar(ctx, model):
        for site in counted_sites(model).values():
            site.set_kernel(Modest(torch.ones(site.shape)))
        return MaskResult(model)

    def liar_under_budget(ctx, model):
        keep_first_pixels(ctx, model)
        for site in counted_sites(model).values():
            site.set_kernel(Modest(site.kernel.mask.clone()))
        return MaskResult(model)

    _run(write_suite, methods_with, tmp_path, [("liar", method_plugin(liar)), ("fair", method_plugin(liar_under_budget))])
    records = _records(tmp_path / "run")
    assert records["liar__64__s0"]["status"] == "error"
    assert "4,608 DReLUs, over the budget of 64" in records["liar__64__s0"]["error"]
    fair = records["fair__64__s0"]
    assert fair["status"] == "ok" and fair["drelus"] == 64 and len(fair["rebuilt_from_spec"]) > 0


def test_methods_cannot_read_the_test_split(write_suite, methods_with, tmp_path):
    def peek_mask(ctx, model):
        ctx.data.test_x  # noqa: B018
        return MaskResult(model)

    def peek_finetune(ctx, model):
        ctx.data.test_y  # noqa: B018
        return FinetuneResult(model)

    def changes_at_evaluation(ctx, model, settings):
        with torch.no_grad():
            next(model.parameters()).zero_()
        return {"clean_accuracy": 1.0, "val_accuracy": 1.0}

    plugins = [("peek_mask", method_plugin(peek_mask, budgeted=False)),
               ("peek_finetune", method_plugin(lambda ctx, model: MaskResult(model), peek_finetune, budgeted=False)),
               ("sneaky_eval", method_plugin(lambda ctx, model: MaskResult(model), budgeted=False, evaluate=changes_at_evaluation))]
    _run(write_suite, methods_with, tmp_path, plugins, names=["peek_mask", "peek_finetune", "sneaky_eval", "all_relu"])
    records = _records(tmp_path / "run")
    for name in ("peek_mask", "peek_finetune"):
        assert records[f"{name}__all__s0"]["status"] == "error"
        assert "AttributeError" in records[f"{name}__all__s0"]["error"]
    # an evaluate that zeroes weights touches its own copy: the core's numbers and the checkpoint stand
    sneaky, reference = records["sneaky_eval__all__s0"], records["all_relu__all__s0"]
    assert sneaky["status"] == "ok" and sneaky["metrics"]["clean_accuracy"] == reference["metrics"]["clean_accuracy"]
    assert any("clean_accuracy" in d for d in sneaky["disagreements"]), "its own 100% is flagged, not recorded as ours"
    from conftest import load_checkpoint

    saved = load_checkpoint(tmp_path / "run" / "entries" / "sneaky_eval__all__s0.pt")
    assert all(p.abs().sum() > 0 for p in saved.parameters() if p.dim() > 1), "the saved weights are not zeroed"


def test_an_exiting_plugin_does_not_end_the_run(write_suite, methods_with, tmp_path, capsys, monkeypatch):
    def quitter(ctx, model):
        sys.exit(0)

    plugins = methods_with(("quitter", method_plugin(quitter, budgeted=False)))
    monkeypatch.setattr("benchbed.run.runner.Plugins", lambda pm: plugins)
    suite = write_suite(methods=[{"name": "quitter"}, {"name": "all_relu"}], budgets=[64])
    code = main(["run", str(suite), "--out", str(tmp_path / "run"), "--quiet"])
    assert code == 1, "a failed entry makes the run exit non-zero"
    records = _records(tmp_path / "run")
    assert records["quitter__all__s0"]["status"] == "error" and "SystemExit" in records["quitter__all__s0"]["error"]
    assert records["all_relu__all__s0"]["status"] == "ok"


@pytest.mark.parametrize("answer, message", [("nonsense", "must return a dict of metrics"),
                                             ({"clean_accuracy": 93.0}, "outside [0, 1]")])
def test_a_bad_evaluate_answer_fails_its_entry_only(write_suite, methods_with, tmp_path, answer, message):
    plugins = [("bad_eval", method_plugin(lambda ctx, model: MaskResult(model), budgeted=False,
                                          evaluate=lambda ctx, model, settings: answer))]
    _, counts = _run(write_suite, methods_with, tmp_path, plugins, names=["bad_eval", "all_relu"])
    records = _records(tmp_path / "run")
    assert records["bad_eval__all__s0"]["status"] == "error" and message in records["bad_eval__all__s0"]["error"]
    assert records["all_relu__all__s0"]["status"] == "ok"


def test_a_method_cannot_replace_the_cores_measurement(write_suite, methods_with, tmp_path):
    """A method's ``evaluate`` that claims 99.9% is recorded beside the core's measurement and flagged."""
    plugins = [("boaster", method_plugin(lambda ctx, model: MaskResult(model), budgeted=False,
                                         evaluate=lambda ctx, model, settings: {"clean_accuracy": 0.999}))]
    _run(write_suite, methods_with, tmp_path, plugins, names=["boaster", "all_relu"])
    records = _records(tmp_path / "run")
    boaster, reference = records["boaster__all__s0"], records["all_relu__all__s0"]
    assert boaster["status"] == "ok" and boaster["method_metrics"]["clean_accuracy"] == 0.999
    assert boaster["metrics"]["clean_accuracy"] == reference["metrics"]["clean_accuracy"] < 0.999
    assert boaster["disagreements"] and "clean_accuracy" in boaster["disagreements"][0]


def test_a_method_ignoring_the_clock_is_stopped_by_the_alarm(write_suite, methods_with, tmp_path, monkeypatch):
    """The one real-time test: a method that never returns is interrupted. It asserts that it was
    stopped and flagged, not how fast."""
    from benchbed.train import compute

    monkeypatch.setattr(compute, "GRACE_SECONDS", 0.2)

    def spin(ctx, model):
        while True:  # never looks at ctx.clock, and hides ordinary exceptions
            try:
                time.sleep(0.01)
            except Exception:
                pass

    _, counts = _run(write_suite, methods_with, tmp_path,
                     [("spinner", method_plugin(spin)), ("idle", method_plugin(keep_first_pixels))],
                     compute={"epochs": None, "seconds": 0.5})
    records = _records(tmp_path / "run")
    spinner = records["spinner__64__s0"]
    assert spinner["status"] == "over_budget" and "compute budget" in spinner["error"]
    assert spinner["compute"]["used"]["seconds"] > 0.5
    assert records["idle__64__s0"]["status"] == "ok"
