"""Trust, round two: each case a misbehaving plugin or a hostile file, and the core's answer — an honest
row, an error row for that entry alone, or a one-line refusal — never a wrong "ok" row."""
from __future__ import annotations

import gc
import os
import signal

import pytest
import torch
import torch.nn.functional as F
from torch import nn

from benchbed.api import FinetuneResult, MaskResult, counted_sites, sites
from benchbed.cli import main
from benchbed.errors import BenchbedError, SuiteError
from benchbed.files import read_json, write_json
from benchbed.model.checkpoint import checkpoint_payload, write_checkpoint
from benchbed.plugin.manager import Plugins, plugin_manager
from benchbed.report.board import render
from benchbed.run.runner import SuiteRun
from benchbed.run.suite import load_suite
from conftest import build_model, entry_records, keep_first_pixels, load_checkpoint, method_plugin


def _records(run_dir):
    return {r["entry"]: r for r in entry_records(run_dir)}


def _run(write_suite, methods_with, tmp_path, contributed, names=None, **changes):
    plugins = methods_with(*contributed)
    names = names or [name for name, _ in contributed]
    suite = write_suite(methods=[{"name": n} for n in names], budgets=[64], **changes)
    counts = SuiteRun.from_file(suite, out=tmp_path / "run", quiet=True, plugins=plugins).run()
    return _records(tmp_path / "run"), counts


def _zero_masks(ctx, model):
    for site in counted_sites(model).values():
        site.set_mask(torch.zeros(site.shape))


# -- wrong "ok" rows --------------------------------------------------------------------------

def _teacher_file(tmp_path, digits, tamper):
    model = build_model("resnet_narrow", num_classes=10, input_shape=digits.input_shape, mean=digits.mean, std=digits.std)
    if tamper == "zero masks":
        _zero_masks(None, model)
    payload = checkpoint_payload(model, model_name="resnet_narrow", num_classes=10, input_shape=digits.input_shape,
                                 mean=digits.mean, std=digits.std)
    for spec in payload["sites"].values():
        if tamper == "uncounted":
            spec["counted"] = False
        elif tamper == "tiny":
            spec["shape"] = [1, 1, 1]
    path = tmp_path / f"teacher-{tamper}.pt"
    write_checkpoint(payload, path)
    return path


@pytest.mark.parametrize("tamper, message", [("uncounted", "counted"), ("tiny", "shape"), ("zero masks", "all-ReLU")])
def test_a_teacher_checkpoint_with_false_geometry_or_linearized_sites_is_refused(write_suite, tmp_path, digits, capsys,
                                                                                 tamper, message):
    suite = write_suite(teacher={"recipe": None, "checkpoint": str(_teacher_file(tmp_path, digits, tamper))})
    assert main(["validate", str(suite)]) == 2
    err = capsys.readouterr().err
    assert "teacher.checkpoint" in err and message in err


@pytest.mark.parametrize("tamper", ["shape", "counted"])
def test_a_plugin_cannot_shrink_or_uncount_its_sites(write_suite, methods_with, tmp_path, tamper):
    def cheat(ctx, model):
        for site in counted_sites(model).values():
            if tamper == "shape":
                site.shape = (1, 1, 1)
            else:
                site.counted = False
        return MaskResult(model)

    records, _ = _run(write_suite, methods_with, tmp_path, [("cheat", method_plugin(cheat))])
    row = records["cheat__64__s0"]
    assert row["status"] == "error", row.get("drelus")
    assert "does not fit its model" in row["error"] or "over the budget" in row["error"]


@pytest.mark.parametrize("trick", ["forward hook", "instance forward", "nn.ReLU swap"])
def test_the_numbers_are_those_of_the_saved_model_not_the_plugins_object(write_suite, methods_with, tmp_path, trick):
    """Zero masks (0 DReLUs), then make the live object compute ReLUs anyway: the core measures the model
    rebuilt from the saved payload, so the row has the accuracy of what was saved."""
    def cheat(ctx, model):
        _zero_masks(ctx, model)
        for name, site in list(sites(model).items()):
            if trick == "forward hook":
                site.register_forward_hook(lambda m, i, o: F.relu(i[0]))
            elif trick == "instance forward":
                site.forward = F.relu
            else:
                parent, _, attr = name.rpartition(".")
                setattr(model.get_submodule(parent) if parent else model, attr, nn.ReLU())
        return MaskResult(model)

    records, _ = _run(write_suite, methods_with, tmp_path, [("cheat", method_plugin(cheat))], names=["cheat", "all_relu"])
    row, teacher = records["cheat__64__s0"], records["all_relu__all__s0"]
    if row["status"] == "ok":
        assert row["drelus"] == 0
        saved = load_checkpoint(tmp_path / "run" / "entries" / "cheat__64__s0.pt")
        from benchbed.train.loop import accuracy
        from conftest import load_dataset

        data = load_dataset("digits", val_fraction=0.15)
        assert row["metrics"]["clean_accuracy"] == pytest.approx(accuracy(saved, data.test_x, data.test_y))
        assert row["metrics"]["clean_accuracy"] < teacher["metrics"]["clean_accuracy"] - 0.2
    else:
        assert trick == "nn.ReLU swap", row["error"]  # no sites left to save: an error, never an ok row


@pytest.mark.parametrize("loop", ["model.forward", "submodules"])
def test_an_own_loop_around_the_root_module_is_metered(write_suite, methods_with, tmp_path, loop):
    def own_loop(ctx, model):
        optimizer = torch.optim.SGD(model.parameters(), lr=0.01)
        x_all, y_all = ctx.data.train_x.float() / 255, ctx.data.train_y
        for _ in range(6):
            for start in range(0, len(x_all), 128):
                x = x_all[start:start + 128]
                if loop == "model.forward":
                    out = model.forward(x)
                else:
                    h = model.relu(model.bn1(model.conv1(model.normalize(x))))
                    for layer in model.layers:
                        h = layer(h)
                    out = model.fc(torch.flatten(model.pool(h), 1))
                loss = F.cross_entropy(out, y_all[start:start + 128])
                optimizer.zero_grad()
                loss.backward()
                optimizer.step()
        return FinetuneResult(model)

    records, _ = _run(write_suite, methods_with, tmp_path, [("own", method_plugin(keep_first_pixels, own_loop))],
                      compute={"epochs": 2})
    assert records["own__64__s0"]["status"] == "over_budget"


def test_a_clock_rewritten_by_the_plugin_is_not_the_clock_the_core_reads(write_suite, methods_with, tmp_path):
    def own_loop_then_reset(ctx, model):
        optimizer = torch.optim.SGD(model.parameters(), lr=0.01)
        x_all, y_all = ctx.data.train_x.float() / 255, ctx.data.train_y
        for start in range(0, len(x_all), 64):  # about 1.9 epochs of a 1.5 budget, the last ones unstopped ...
            F.cross_entropy(model(x_all[start:start + 64]), y_all[start:start + 64]).backward()
            optimizer.step()
            ctx.clock.usage = 0.0  # ... because the plugin keeps resetting its clock
        for start in range(0, len(x_all), 64):
            F.cross_entropy(model(x_all[start:start + 64]), y_all[start:start + 64]).backward()
            ctx.clock.usage = 0.0
        return FinetuneResult(model)

    records, _ = _run(write_suite, methods_with, tmp_path, [("resetter", method_plugin(keep_first_pixels,
                                                                                      own_loop_then_reset))],
                      compute={"epochs": 1.5})
    row = records["resetter__64__s0"]
    assert row["status"] == "over_budget" and row["compute"]["used"]["epochs"] > 1.5


def test_a_meter_whose_total_was_rewritten_fails_its_entry(write_suite, methods_with, tmp_path):
    def uncounted(ctx, model):
        from benchbed.train import meter

        meter.Meter.total = lambda self: 0.0  # in its own process: the record would say 0 epochs used
        optimizer = torch.optim.SGD(model.parameters(), lr=0.01)
        x_all, y_all = ctx.data.train_x.float() / 255, ctx.data.train_y
        for start in range(0, len(x_all) // 2, 64):
            F.cross_entropy(model(x_all[start:start + 64]), y_all[start:start + 64]).backward()
            optimizer.step()
        return FinetuneResult(model)

    records, _ = _run(write_suite, methods_with, tmp_path, [("uncounted", method_plugin(keep_first_pixels, uncounted))])
    row = records["uncounted__64__s0"]
    assert row["status"] == "error" and "not the sum of what it counted by kind" in row["error"]


def test_a_thread_left_training_after_the_hook_returns_fails_its_entry(write_suite, methods_with, tmp_path):
    import threading
    import time

    def background(ctx, model):
        def steps():  # changes the weights after the hook returned, while the core takes the checkpoint
            for _ in range(20):
                with torch.no_grad():
                    for p in model.parameters():
                        p.add_(0.001)
                time.sleep(0.05)

        threading.Thread(target=steps, name="sgd-behind-the-meter", daemon=True).start()
        return FinetuneResult(model)

    records, _ = _run(write_suite, methods_with, tmp_path, [("threaded", method_plugin(keep_first_pixels, background))])
    row = records["threaded__64__s0"]
    assert row["status"] == "error" and "left 1 thread(s) running (sgd-behind-the-meter)" in row["error"]


def test_a_seconds_budget_passes_as_ok_only_within_five_percent(write_suite, methods_with, tmp_path):
    from test_trust import FakeTimer

    def slow(ctx, model):
        run.timer.advance(11.0)  # 10% over a budget of 10 s: inside the alarm's grace, outside the ok margin
        return keep_first_pixels(ctx, model)

    plugins = methods_with(("slow", method_plugin(slow)))
    suite = write_suite(methods=[{"name": "slow"}], budgets=[64], compute={"epochs": None, "seconds": 10})
    run = SuiteRun.from_file(suite, out=tmp_path / "run", quiet=True, plugins=plugins)
    run.timer = FakeTimer()
    run.run()
    row = _records(tmp_path / "run")["slow__64__s0"]
    assert row["status"] == "over_budget" and "against a compute budget of 10 s" in row["error"]
    assert row["determinism"]["deterministic"] is False and "seconds budget" in row["determinism"]["why_not"][0]


STASH: dict = {}


def test_what_one_entry_stashes_does_not_reach_the_next(write_suite, methods_with, tmp_path):
    """An evaluate that stashes the test split, a plugin that hooks the shared teacher it found with gc:
    the next entry runs in a fresh process and sees neither."""
    def stash(ctx, model, settings):
        STASH["test"] = ctx.data.test_x
        for obj in gc.get_objects():
            if isinstance(obj, nn.Module) and obj is not model and hasattr(obj, "layers"):
                obj.register_forward_pre_hook(lambda m, args: (args[0] * 0,))
        return {}

    def peek(ctx, model):
        ctx.notes["saw_stash"] = "test" in STASH
        return MaskResult(model)

    plugins = [("stasher", method_plugin(lambda ctx, model: MaskResult(model), budgeted=False, evaluate=stash)),
               ("peeker", method_plugin(peek, budgeted=False))]
    records, _ = _run(write_suite, methods_with, tmp_path, plugins, names=["stasher", "peeker", "all_relu"])
    assert records["peeker__all__s0"]["notes"]["saw_stash"] is False
    assert records["all_relu__all__s0"]["metrics"]["clean_accuracy"] == \
        read_json(tmp_path / "run" / "teacher.json")["clean_accuracy"], "the innocent entry sees the real teacher"


def test_a_secure_cost_that_zeroes_the_weights_touches_its_own_copy(write_suite, methods_with, tmp_path):
    def vandal(model, input_shape, settings, profile):
        with torch.no_grad():
            for p in model.parameters():
                p.zero_()
        return {"drelus": 0, "comm_mb": 0.0, "rounds": 0}

    from benchbed.api import hookimpl

    plugin = method_plugin(keep_first_pixels)
    plugin.secure_cost = hookimpl(vandal)
    records, _ = _run(write_suite, methods_with, tmp_path, [("vandal", plugin)])
    row = records["vandal__64__s0"]
    assert row["status"] == "ok" and row["drelus"] == 64 and row["secure_cost"]["aby3"]["comm_mb"] > 0
    assert any("comm_mb" in d for d in row["disagreements"]), "the method's own price is recorded apart, flagged"
    saved = load_checkpoint(tmp_path / "run" / "entries" / "vandal__64__s0.pt")
    assert all(p.abs().sum() > 0 for p in saved.parameters() if p.dim() > 1)


def test_resume_refuses_entries_of_another_teacher(write_suite, tmp_path, digits, capsys):
    model = build_model("resnet_narrow", num_classes=10, input_shape=digits.input_shape, mean=digits.mean, std=digits.std)
    path = tmp_path / "teacher.pt"
    describe = dict(model_name="resnet_narrow", num_classes=10, input_shape=digits.input_shape, mean=digits.mean,
                    std=digits.std)
    write_checkpoint(checkpoint_payload(model, **describe), path)
    suite = write_suite(teacher={"recipe": None, "checkpoint": str(path)}, budgets=[64], seeds=[0, 1],
                        methods=[{"name": "random_mask", "options": {"finetune": {"batch_size": 64}}}])
    SuiteRun.from_file(suite, out=tmp_path / "run", quiet=True).run()
    with torch.no_grad():
        next(model.parameters()).add_(1.0)
    write_checkpoint(checkpoint_payload(model, **describe), path)  # the same path, another teacher
    (tmp_path / "run" / "entries" / "random_mask__64__s1.json").unlink()  # so that there is something to resume
    capsys.readouterr()
    assert main(["run", str(suite), "--out", str(tmp_path / "run"), "--quiet"]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert "another teacher" in err[-1] and "Traceback" not in "\n".join(err)


def test_a_board_refuses_a_record_of_another_suite(write_suite, tmp_path, capsys):
    for name, budgets in (("a", [64]), ("b", [512])):
        SuiteRun.from_file(write_suite(f"{name}.yaml", budgets=budgets, methods=[{"name": "all_relu"}],
                                       name=f"suite_{name}"), out=tmp_path / name, quiet=True).run()
    stray = read_json(tmp_path / "b" / "entries" / "all_relu__all__s0.json")
    (tmp_path / "a" / "entries" / "stray__all__s0.pt").write_bytes((tmp_path / "b" / "entries" / "all_relu__all__s0.pt")
                                                                   .read_bytes())
    write_json(tmp_path / "a" / "entries" / "stray__all__s0.json", {**stray, "entry": "stray__all__s0",
                                                                    "checkpoint": "stray__all__s0.pt"})
    assert main(["leaderboard", str(tmp_path / "a")]) == 2
    assert "another suite configuration" in capsys.readouterr().err


# -- isolation, faults, data loss ----------------------------------------------------------------

@pytest.mark.parametrize("misdeed, message", [("os._exit", "ended without recording a result"),
                                              ("SIGKILL", "killed by SIGKILL"),
                                              ("grad off", None), ("float64", None)])
def test_what_a_plugin_does_to_its_process_ends_with_that_entry(write_suite, methods_with, tmp_path, misdeed, message):
    def bad(ctx, model):
        if misdeed == "os._exit":
            os._exit(0)
        if misdeed == "SIGKILL":
            os.kill(os.getpid(), signal.SIGKILL)
        if misdeed == "grad off":
            torch.set_grad_enabled(False)
        if misdeed == "float64":
            torch.set_default_dtype(torch.float64)
        return MaskResult(model)

    records, counts = _run(write_suite, methods_with, tmp_path, [("bad", method_plugin(bad, budgeted=False))],
                           names=["bad", "all_relu", "random_mask"])
    if message:
        assert records["bad__all__s0"]["status"] == "error" and message in records["bad__all__s0"]["error"]
    assert records["all_relu__all__s0"]["status"] == "ok", "the run went on"
    assert records["random_mask__64__s0"]["status"] == "ok", "and the next entry, in a fresh process, trained"
    assert torch.is_grad_enabled() and torch.get_default_dtype() == torch.float32, "the run's own state is intact"


def test_an_endless_own_loop_under_an_epochs_budget_is_stopped(write_suite, methods_with, tmp_path):
    def endless(ctx, model):
        x = ctx.data.train_x[:64].float() / 255
        while True:
            model(x).sum().backward()

    records, _ = _run(write_suite, methods_with, tmp_path, [("endless", method_plugin(endless))],
                      compute={"epochs": 1})
    assert records["endless__64__s0"]["status"] == "over_budget"


def test_disk_full_while_saving_a_checkpoint_is_one_entry_error(write_suite, tmp_path, monkeypatch):
    from benchbed.run import runner

    real = runner.write_checkpoint

    def full(payload, path):
        if "random_mask" in path.name:
            raise RuntimeError("[enforce fail at inline_container.cc:595] . PytorchStreamWriter failed writing file")
        return real(payload, path)

    monkeypatch.setattr(runner, "write_checkpoint", full)
    suite = write_suite(budgets=[64])
    counts = SuiteRun.from_file(suite, out=tmp_path / "run", quiet=True).run()
    assert counts["error"] == 1 and counts["ok"] == 1
    row = _records(tmp_path / "run")["random_mask__64__s0"]
    assert row["status"] == "error" and "PytorchStreamWriter failed" in row["error"]


@pytest.mark.parametrize("damage", ["truncate", "overwrite"])
def test_a_damaged_entry_checkpoint_is_redone(write_suite, tmp_path, damage):
    suite = write_suite(budgets=[64])
    SuiteRun.from_file(suite, out=tmp_path / "run", quiet=True).run()
    path = tmp_path / "run" / "entries" / "random_mask__64__s0.pt"
    raw = path.read_bytes()
    path.write_bytes(raw[:len(raw) // 2] if damage == "truncate" else raw[::-1])
    counts = SuiteRun.from_file(suite, out=tmp_path / "run", quiet=True).run()
    assert counts["ok"] == 1 and counts["skipped"] == 1, "the damaged entry was redone, the other one kept"


@pytest.mark.parametrize("torn", ["teacher.json", "suite.json", "data.json", "record"])
def test_torn_run_files_give_no_traceback(write_suite, tmp_path, capsys, torn):
    suite = write_suite(budgets=[64])
    SuiteRun.from_file(suite, out=tmp_path / "run", quiet=True).run()
    run_dir = tmp_path / "run"
    if torn == "record":
        record = read_json(run_dir / "entries" / "random_mask__64__s0.json")
        del record["fingerprint"], record["seed"]
        write_json(run_dir / "entries" / "random_mask__64__s0.json", record)
    else:
        (run_dir / torn).write_text('{"torn": ')
    code = main(["leaderboard", str(run_dir)])
    err = capsys.readouterr().err
    assert "Traceback" not in err
    assert code == (2 if torn == "suite.json" else 0)
    assert main(["run", str(suite), "--out", str(run_dir), "--quiet"]) in (0, 2)
    assert "Traceback" not in capsys.readouterr().err


def test_a_board_of_a_run_in_progress_says_it_is_incomplete(write_suite, tmp_path):
    from benchbed.run.rundir import RunDir

    suite = write_suite(budgets=[64, 512])
    SuiteRun.from_file(suite, out=tmp_path / "run", quiet=True).run()
    (tmp_path / "run" / "entries" / "random_mask__512__s0.json").unlink()
    with RunDir(tmp_path / "run").locked():  # a run writing right now
        text = render([tmp_path / "run"], tmp_path / "board").read_text()
    assert "**Incomplete:** 2 of the 3 entries" in text and "A run was writing" in text


def test_a_plugin_upgraded_mid_suite_has_its_old_entries_redone(write_suite, methods_with, tmp_path, capsys):
    suite = write_suite(budgets=[64], methods=[{"name": "random_mask", "options": {"finetune": {"batch_size": 64}}}])
    SuiteRun.from_file(suite, out=tmp_path / "run", quiet=True).run()
    path = tmp_path / "run" / "entries" / "random_mask__64__s0.json"
    write_json(path, {**read_json(path), "method_version": "0.0.1"})
    counts = SuiteRun.from_file(suite, out=tmp_path / "run", quiet=True).run()
    assert counts["ok"] == 1 and "made by random_mask 0.0.1" in capsys.readouterr().err


# -- bad input ----------------------------------------------------------------------------------

@pytest.mark.parametrize("name", ["/abs/path", "../../x", ".", "..", "a" * 240, "-dash"])
def test_a_suite_name_that_is_no_plain_file_name_is_refused(write_suite, name):
    with pytest.raises(SuiteError, match="name"):
        load_suite(write_suite(name=name), Plugins(plugin_manager()))


def test_publish_never_writes_outside_its_folder(write_suite, tmp_path, capsys):
    SuiteRun.from_file(write_suite(budgets=[64], methods=[{"name": "all_relu"}]), out=tmp_path / "run", quiet=True).run()
    meta = read_json(tmp_path / "run" / "suite.json")
    meta["suite"]["name"] = "../../escaped"
    write_json(tmp_path / "run" / "suite.json", meta)
    assert main(["publish", str(tmp_path / "run"), "--to", str(tmp_path / "boards")]) == 2
    assert "no plain file name" in capsys.readouterr().err
    assert not list(tmp_path.glob("**/escaped*")) and not (tmp_path.parent / "escaped.md").exists()
    (tmp_path / "afile").write_text("x")
    assert main(["publish", str(tmp_path / "run"), "--to", str(tmp_path / "afile")]) == 2


def test_an_entry_point_name_that_could_climb_out_is_left_out(tmp_path, monkeypatch, capsys):
    from conftest import install_plugin

    site = install_plugin(tmp_path / "site", "evil", "1.0", "../evil", "evil_mod", "")
    monkeypatch.syspath_prepend(str(site))
    plugins = Plugins(plugin_manager())
    assert "../evil" not in plugins.all and "is left out" in capsys.readouterr().err


@pytest.mark.parametrize("text, message", [
    ("name: a\nname: b\n", "given twice"),
    ("x: " + "[" * 20000 + "]" * 20000 + "\n", "nested too deeply"),
])
def test_hostile_yaml_is_one_line(tmp_path, capsys, text, message):
    path = tmp_path / "suite.yaml"
    path.write_text(text)
    assert main(["validate", str(path)]) == 2
    err = capsys.readouterr().err
    assert message in err and "Traceback" not in err


def test_a_binary_file_is_one_line(tmp_path, capsys):
    path = tmp_path / "suite.yaml"
    path.write_bytes(bytes(range(256)) * 4)
    assert main(["validate", str(path)]) == 2
    assert "not a text file" in capsys.readouterr().err


@pytest.mark.parametrize("changes, field", [({"seeds": [2 ** 64]}, "seeds.0"), ({"seeds": [True]}, "seeds.0"),
                                            ({"budgets": [True]}, "budgets.0"),
                                            ({"dataset": {"val_fraction": 0.999}}, "dataset.val_fraction"),
                                            ({"dataset": {"val_fraction": 0.001}}, "dataset.val_fraction")])
def test_numbers_that_would_crash_the_run_fail_validation(write_suite, capsys, changes, field):
    assert main(["validate", str(write_suite(**changes))]) == 2
    assert field in capsys.readouterr().err


def test_malformed_checkpoint_fields_are_one_line(tmp_path, digits):
    model = build_model("resnet_narrow", num_classes=10, input_shape=digits.input_shape)
    payload = checkpoint_payload(model, model_name="resnet_narrow", num_classes=10, input_shape=digits.input_shape,
                                 mean=digits.mean, std=digits.std)
    for broken in ({k: v for k, v in payload.items() if k != "model"}, {**payload, "num_classes": "ten"},
                   {**payload, "sites": {n: {"kind": "masked"} for n in payload["sites"]}},
                   {**payload, "state_dict": {k: v * float("nan") for k, v in payload["state_dict"].items()}}):
        path = tmp_path / "broken.pt"
        write_checkpoint(broken, path)
        with pytest.raises(BenchbedError) as info:
            load_checkpoint(path)
        assert "\n" not in str(info.value)


def test_secure_infer_refuses_a_negative_image_count(tmp_path, capsys):
    assert main(["secure-infer", str(tmp_path / "x"), "--images", "-1"]) == 2
    assert "at least 1" in capsys.readouterr().err


@pytest.mark.usefixtures("fresh_teacher_cache")  # a teacher trained here, written to a full disk
def test_a_full_disk_while_writing_the_teacher_is_a_one_line_error(write_suite, tmp_path, monkeypatch, capsys):
    import errno

    from benchbed.run import teacher

    def full(payload, path):
        raise OSError(errno.ENOSPC, "No space left on device", str(path))

    monkeypatch.setattr(teacher, "write_checkpoint", full)
    assert main(["run", str(write_suite(budgets=[64])), "--out", str(tmp_path / "run"), "--quiet"]) == 2
    last = capsys.readouterr().err.strip().splitlines()[-1]
    assert "No space left on device" in last and "teacher" in last and "Traceback" not in last


def test_a_kernel_state_that_disagrees_with_its_spec_is_refused_and_shares_no_memory(digits):
    """A patch site counted from its spec's sizes but computing others (the state dict rewrote them), and
    a rebuilt kernel that would change with the payload it was read from."""
    from benchbed.model.architectures import builtin_models
    from benchbed.model.checkpoint import model_from_payload

    model = build_model("resnet_narrow", num_classes=10, input_shape=digits.input_shape, mean=digits.mean, std=digits.std)
    site = next(iter(counted_sites(model).values()))
    site.set_patches([(2, 2)] * site.shape[0])
    payload = checkpoint_payload(model, model_name="resnet_narrow", num_classes=10, input_shape=digits.input_shape,
                                 mean=digits.mean, std=digits.std)
    rebuilt = model_from_payload(payload, models=builtin_models())
    name = next(iter(counted_sites(rebuilt)))
    payload["sites"][name]["sizes"].fill_(1)  # the payload changes after the rebuild: the model does not
    assert (counted_sites(rebuilt)[name].kernel.sizes == 2).all()
    key = f"{name}.kernel.sizes"
    payload["sites"][name]["sizes"].fill_(2)
    payload["state_dict"][key] = torch.full_like(payload["state_dict"][key], 4)
    with pytest.raises(BenchbedError, match=f"the state of site {name} disagrees with its spec"):
        model_from_payload(payload, models=builtin_models())
