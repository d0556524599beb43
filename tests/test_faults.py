"""Faults and bad input around the run directory: locks, torn or missing files, unwritable places,
mismatched checkpoints, non-finite numbers, broken plugins. Each gets a one-line error that says
what to do, or is repaired by running again; no finished result is lost."""
from __future__ import annotations

import os
import subprocess
import sys
import threading

import pandas as pd
import pytest
import yaml

from benchbed.cli import main
from benchbed.errors import BenchbedError
from benchbed.files import atomic_write, read_json, write_json
from benchbed.model.checkpoint import checkpoint_payload, write_checkpoint
from benchbed.report.board import render
from benchbed.report.figure import figure
from benchbed.run.rundir import RunDir
from benchbed.run.runner import SuiteRun
from conftest import build_model, install_plugin


def _suite(write_suite, **changes):
    return write_suite(methods=[{"name": "all_relu"}, {"name": "random_mask"}], budgets=[64], **changes)


def _run(path, out, **kw):
    return SuiteRun.from_file(path, out=out, quiet=True, **kw).run()


def test_a_second_run_on_a_locked_directory_is_refused(write_suite, tmp_path, capsys):
    suite = _suite(write_suite)
    with RunDir(tmp_path / "run").locked():
        code = main(["run", str(suite), "--out", str(tmp_path / "run"), "--quiet"])
    err = capsys.readouterr().err
    assert code == 2 and err.count("\n") == 1
    assert "in use by another benchbed run" in err and f"pid {os.getpid()}" in err
    assert _run(suite, tmp_path / "run")["ok"] == 2, "the lock is released with its holder"


def test_concurrent_writers_never_show_a_torn_file(tmp_path):
    path = tmp_path / "record.json"
    write_json(path, {"n": -1, "pad": "x" * 20_000})
    errors: list[Exception] = []

    def writer(k: int) -> None:
        for i in range(40):
            write_json(path, {"n": k * 1000 + i, "pad": "x" * 20_000})

    def reader() -> None:
        for _ in range(200):
            try:
                assert len(read_json(path)["pad"]) == 20_000
            except Exception as exc:  # noqa: BLE001 — any failure to read is the bug under test
                errors.append(exc)

    threads = [threading.Thread(target=writer, args=(k,)) for k in range(3)] + [threading.Thread(target=reader)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert errors == []
    assert [p.name for p in tmp_path.iterdir()] == ["record.json"], "no temporary file is left behind"


def test_a_failed_write_leaves_the_old_file(tmp_path):
    path = tmp_path / "x.json"
    write_json(path, {"ok": 1})

    def fail(f):
        f.write(b"{half")
        raise OSError("disk full")

    with pytest.raises(OSError):
        atomic_write(path, fail)
    assert read_json(path) == {"ok": 1} and len(list(tmp_path.iterdir())) == 1


def test_an_unwritable_run_directory_is_one_line(write_suite, tmp_path, capsys):
    blocker = tmp_path / "file"
    blocker.write_text("not a folder")
    code = main(["run", str(_suite(write_suite)), "--out", str(blocker / "run"), "--quiet"])
    err = capsys.readouterr().err
    assert code == 2 and err.count("\n") == 1 and "cannot write the run directory" in err


def test_a_failed_entry_write_fails_that_entry_only(write_suite, tmp_path, monkeypatch):
    from benchbed.run import runner

    real = runner.write_checkpoint

    def flaky(payload, path):
        if "random_mask" in path.name:
            raise OSError(28, "No space left on device")
        return real(payload, path)

    monkeypatch.setattr(runner, "write_checkpoint", flaky)
    counts = _run(_suite(write_suite), tmp_path / "run")
    assert counts["ok"] == 1 and counts["error"] == 1
    monkeypatch.setattr(runner, "write_checkpoint", real)
    again = _run(_suite(write_suite), tmp_path / "run")
    assert again == {"ok": 1, "over_budget": 0, "error": 0, "skipped": 1}, "the lost entry is redone"


def test_torn_and_missing_files_are_repaired_by_running_again(write_suite, tmp_path, capsys):
    suite, run_dir = _suite(write_suite), tmp_path / "run"
    _run(suite, run_dir)
    entries = run_dir / "entries"
    teacher_acc = read_json(run_dir / "teacher.json")["clean_accuracy"]
    (entries / "random_mask__64__s0.json").write_text('{"entry": "random_mask__64__s0", "sta')
    render([run_dir], tmp_path / "board")
    assert "random_mask__64__s0.json is unreadable" in capsys.readouterr().err
    (run_dir / "suite.json").write_text('{"suite": ')
    (run_dir / "teacher.json").write_text("")
    (entries / "all_relu__all__s0.pt").unlink()
    counts = _run(suite, run_dir)
    assert counts == {"ok": 2, "over_budget": 0, "error": 0, "skipped": 0}
    assert read_json(run_dir / "suite.json")["fingerprint"] and read_json(run_dir / "teacher.json")["clean_accuracy"] == teacher_acc
    (run_dir / "teacher.pt").write_bytes(b"\x00garbage")
    (entries / "all_relu__all__s0.json").unlink()
    assert _run(suite, run_dir)["ok"] == 1, "a corrupt teacher is trained again"
    assert read_json(run_dir / "teacher.json")["clean_accuracy"] == teacher_acc, "the same seed gives the same teacher"


def test_a_teacher_for_other_inputs_is_refused_before_any_work(write_suite, tmp_path, capsys):
    other = build_model("resnet_narrow", num_classes=10, input_shape=(1, 16, 16), mean=(0.5,), std=(0.25,))
    ckpt = tmp_path / "other.pt"
    write_checkpoint(checkpoint_payload(other, model_name="resnet_narrow", num_classes=10, input_shape=(1, 16, 16),
                                        mean=(0.5,), std=(0.25,)), ckpt)
    suite = _suite(write_suite, teacher={"recipe": None, "checkpoint": str(ckpt)})
    for command in (["validate", str(suite)], ["run", str(suite), "--out", str(tmp_path / "run"), "--quiet"]):
        code = main(command)
        err = capsys.readouterr().err
        assert code == 2 and "shape (1, 16, 16)" in err and err.count("\n") == 1
    assert not (tmp_path / "run").exists(), "nothing was claimed"


def test_a_teacher_with_other_normalisation_is_refused(write_suite, tmp_path, digits):
    model = build_model("resnet_narrow", num_classes=10, input_shape=digits.input_shape, mean=(0.1,), std=(0.9,))
    ckpt = tmp_path / "other.pt"
    write_checkpoint(checkpoint_payload(model, model_name="resnet_narrow", num_classes=10,
                                        input_shape=digits.input_shape, mean=(0.1,), std=(0.9,)), ckpt)
    suite = _suite(write_suite, teacher={"recipe": None, "checkpoint": str(ckpt)})
    with pytest.raises(BenchbedError, match="normalises inputs with another mean"):
        _run(suite, tmp_path / "run")
    assert not (tmp_path / "run").exists()


def test_validate_reads_the_teacher_checkpoint(write_suite, tmp_path, capsys):
    ckpt = tmp_path / "bad.pt"
    ckpt.write_bytes(b"\x00garbage" * 10)
    code = main(["validate", str(_suite(write_suite, teacher={"recipe": None, "checkpoint": str(ckpt)}))])
    assert code == 2 and "teacher.checkpoint, line " in capsys.readouterr().err


@pytest.mark.parametrize("changes, field", [({"teacher": {"recipe": {"epochs": ".inf"}}}, "teacher.recipe.epochs"),
                                            ({"compute": {"epochs": ".nan"}}, "compute.epochs"),
                                            ({"evaluation": {"pgd": {"eps": ".inf"}}}, "evaluation.pgd.eps")])
def test_non_finite_numbers_are_rejected(write_suite, tmp_path, capsys, changes, field):
    path = _suite(write_suite)
    raw = yaml.safe_load(path.read_text())
    for key, value in changes.items():
        raw[key] = {**raw.get(key, {}), **value} if isinstance(value, dict) else value
    text = yaml.safe_dump(raw).replace("'.inf'", ".inf").replace("'.nan'", ".nan")
    path.write_text(text)
    code = main(["validate", str(path)])
    err = capsys.readouterr().err
    assert code == 2 and field in err and "finite" in err


def test_records_never_hold_nan(tmp_path):
    write_json(tmp_path / "r.json", {"acc": float("nan"), "nested": [float("inf"), 1.5]})
    assert read_json(tmp_path / "r.json") == {"acc": None, "nested": [None, 1.5]}


BROKEN_PLUGIN = "raise ImportError('needs a library that is not installed')\n"


def test_a_plugin_that_fails_to_import_is_left_out_with_a_warning(tmp_path, write_suite):
    site_dir = install_plugin(tmp_path / "site", "broken-bb", "0.1", "broken", "broken_bb", BROKEN_PLUGIN)
    env = {**os.environ, "PYTHONPATH": str(site_dir)}
    listing = subprocess.run([sys.executable, "-m", "benchbed", "plugins"], env=env, capture_output=True, text=True)
    assert listing.returncode == 0 and "random_mask" in listing.stdout
    assert listing.stderr.count("'broken'") == 1 and "BENCHBED_DISABLE=broken" in listing.stderr
    suite = _suite(write_suite)
    check = subprocess.run([sys.executable, "-m", "benchbed", "validate", str(suite)], env=env, capture_output=True,
                           text=True)
    assert check.returncode == 0, "suites that do not use the broken plugin still work"


def test_a_wrong_method_info_answer_is_left_out(methods_with, capsys):
    from benchbed.api import hookimpl
    from conftest import plugin

    plugins = methods_with(("odd", plugin(method_info=hookimpl(lambda: {"description": "a dict"}),
                                          build_mask=hookimpl(lambda ctx, model: None),
                                          finetune=hookimpl(lambda ctx, model: None))))
    assert "odd" not in plugins.all and "all_relu" in plugins.all
    assert "not a MethodInfo" in capsys.readouterr().err
    with pytest.raises(BenchbedError, match="not a MethodInfo"):
        plugins.get("odd")


def test_zero_drelu_entries_stay_on_the_plot():
    frame = pd.DataFrame({"method": ["m", "m"], "label": ["m", "m"], "budget": [0, 64], "drelus": [0, 64],
                          "clean_accuracy": [0.1, 0.9], "clean_accuracy_std": [float("nan"), float("nan")],
                          "seeds": [1, 1]})
    meta = {"suite": {"name": "t", "dataset": {"name": "digits"}, "model": {"name": "m", "stem_relu": True},
                      "compute": {"epochs": 1, "seconds": None, "paper": False}}, "seeds": [0]}
    fig = figure(frame, meta, [])
    ax = fig.axes[0]
    xs = [x for line in ax.get_lines() for x in line.get_xdata()]
    left, right = ax.get_xlim()
    assert 0 in xs and left <= 0 < 64 <= right


def test_a_child_that_fails_after_its_entry_names_its_error(tmp_path):
    """A full disk while the entry's process writes its result: the record gets the error, not only the code."""
    from benchbed.run.isolation import Job, run_isolated

    def work(send):
        raise OSError(28, "No space left on device")

    (done,) = list(run_isolated([Job("e", work, tmp_path / "result.pt", "fork")], workers=1))
    assert done.key == "e" and done.result is None
    assert "exited with code 1" in done.why and "No space left on device" in done.why, done.why


def test_written_files_have_the_mode_of_any_new_file(tmp_path):
    """A board or record is readable by others (0644 under the usual umask), not private as a temp file is."""
    from benchbed.files import UMASK, write_text

    write_text(tmp_path / "board.md", "# board\n")
    assert (tmp_path / "board.md").stat().st_mode & 0o777 == 0o666 & ~UMASK
