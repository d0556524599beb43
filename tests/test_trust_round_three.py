"""Trust, round three: every published number is made in the measuring process, which no plugin code
ever ran in; the test split is only there; an entry's metered compute is read against the CPU time the
kernel counted for its process. Each case a misbehaving plugin of ``attack_plugins`` and the core's
answer — an honest row, a flagged row or an error row for that entry alone — never a wrong "ok" row."""
from __future__ import annotations

import pytest

from benchbed.api import DatasetSpec, hookimpl
from benchbed.errors import BenchbedError
from benchbed.files import read_json
from benchbed.model.checkpoint import checkpoint_payload, write_checkpoint
from benchbed.plugin.manager import Plugins, plugin_manager
from benchbed.run import cpu_check, measurer
from benchbed.run.runner import SuiteRun
from benchbed.run.suite import load_suite
from conftest import build_model, entry_records, keep_first_pixels, method_plugin, plugin
import attack_plugins as attacks


def _run(write_suite, methods_with, tmp_path, contributed, **changes):
    plugins = methods_with(*contributed)
    suite = write_suite(methods=[{"name": n} for n, _ in contributed], budgets=[64], **changes)
    counts = SuiteRun.from_file(suite, out=tmp_path / "run", quiet=True, plugins=plugins).run()
    return {r["method"]: r for r in entry_records(tmp_path / "run")}, counts


def test_a_plugin_that_patches_the_counter_in_its_process_is_counted_where_it_cannot(write_suite, methods_with,
                                                                                      tmp_path):
    records, _ = _run(write_suite, methods_with, tmp_path, [("counter", method_plugin(attacks.patch_counter))])
    rec = records["counter"]
    assert rec["status"] == "error" and "over the budget of 64" in rec["error"], rec.get("error")
    assert not (tmp_path / "run" / "entries" / "counter__64__s0.pt").exists(), "no checkpoint of a refused entry stays"


def test_a_plugin_that_patches_the_evaluation_in_its_process_gets_its_true_accuracy(write_suite, methods_with,
                                                                                    tmp_path):
    honest = method_plugin(lambda ctx, model: _zero(model))
    records, _ = _run(write_suite, methods_with, tmp_path, [("forger", method_plugin(attacks.patch_evaluation)),
                                                            ("honest", honest)])
    forged, plain = records["forger"], records["honest"]
    assert forged["status"] == plain["status"] == "ok"
    assert forged["metrics"]["clean_accuracy"] == plain["metrics"]["clean_accuracy"] != 0.999
    assert forged["drelus"] == plain["drelus"] == 0


def _zero(model):
    from benchbed.api import MaskResult

    attacks._zero_masks(model)
    return MaskResult(model)


@pytest.mark.parametrize("status", ["ok", "trained"])
def test_a_plugin_that_writes_its_own_result_and_exits_earns_no_ok_row(write_suite, methods_with, tmp_path, status):
    records, counts = _run(write_suite, methods_with, tmp_path,
                           [("writer", method_plugin(attacks.write_own_result(status)))])
    rec = records["writer"]
    assert rec["status"] == "error" and counts["ok"] == 0, rec
    # "ok" is the core's word; a "trained" all-ReLU checkpoint is measured as what it is
    assert ("without a trained model" if status == "ok" else "over the budget") in rec["error"], rec["error"]
    assert rec["entry"] == "writer__64__s0", "the record's identity is the core's, not the process's"


def test_compute_spent_around_the_meter_shows_in_the_cpu_time_the_kernel_counted(write_suite, methods_with,
                                                                                 tmp_path):
    records, _ = _run(write_suite, methods_with, tmp_path,
                      [("hidden", method_plugin(attacks.train_around_the_meter(cpu_seconds=5.0))),
                       ("honest", method_plugin(keep_first_pixels))])
    hidden, honest = records["hidden"]["compute"], records["honest"]["compute"]
    assert hidden["cpu"]["flagged"] and hidden["cpu"]["seconds"] > hidden["cpu"]["allowed_seconds"], hidden
    assert hidden["used"]["epochs"] < 0.5, "the meter saw (almost) nothing of it"
    assert not honest["cpu"]["flagged"], honest


def test_an_unmetered_row_is_flagged_on_the_board(tmp_path):
    from benchbed.report.markdown import UNMETERED, flags
    import pandas as pd

    row = pd.Series({"unmetered": 1.0, "unreliable": float("nan"), "seeds": 1, "external": False})
    assert UNMETERED in flags(row, 1)
    assert UNMETERED not in flags(row.copy().replace(1.0, 0.0), 1)


def test_the_cpu_rule_allows_its_factor_of_the_metered_need_and_its_slack():
    cpu = lambda seconds, epochs: cpu_check.read({"used": {"epochs": epochs}}, seconds, 1e-3, 1000,  # noqa: E731
                                                 __import__("torch").device("cpu"))
    assert cpu(cpu_check.SLACK_S - 0.1, 0.0)["flagged"] is False
    assert cpu(cpu_check.SLACK_S + 0.1, 0.0)["flagged"] is True
    need = 10 * 1000 * 1e-3  # 10 epochs of 1,000 images at a millisecond each
    assert cpu(cpu_check.FACTOR * need + cpu_check.SLACK_S - 0.1, 10.0)["flagged"] is False
    assert cpu(1.0, 1.0)["metered_seconds"] == pytest.approx(1.0)
    assert cpu_check.read({"used": {"epochs": 1}}, None, 1e-3, 1000, __import__("torch").device("cpu")) is None


def test_no_process_that_runs_plugin_code_holds_the_test_split(write_suite, methods_with, tmp_path):
    def own_evaluate(ctx, model, settings):
        return {"clean_accuracy": 0.5, "saw_test": float(hasattr(ctx.data, "test_x"))}

    before = {id(o) for o in attacks.test_split_objects()}  # this test process's own (a session's fixtures)
    records, _ = _run(write_suite, methods_with, tmp_path,
                      [("seeker", method_plugin(attacks.look_for_the_test_split(before), evaluate=own_evaluate))])
    rec = records["seeker"]
    assert rec["status"] == "ok"
    assert rec["setup"]["reported"]["test_objects_found"] == 0, rec["setup"]
    assert rec["method_metrics"]["saw_test"] == 0.0, "the method's own evaluate gets no test split either"
    assert rec["metrics"]["clean"]["images"] == 359, "the measuring process evaluated on all of test"
    # the method's own evaluate runs on what its process has (no test split); its accuracy is checked
    # against the core's validation accuracy
    assert any("clean_accuracy" in d and "validation" in d for d in rec.get("disagreements", [])), rec
    data = read_json(tmp_path / "run" / "data.json")
    assert data["test"] == 359, "the run still records the test split's size"


def test_the_measuring_process_refuses_a_checkpoint_changed_after_it_was_saved(write_suite, tmp_path, digits):
    loaded = load_suite(write_suite(), Plugins(plugin_manager()))
    model = build_model("resnet_narrow", num_classes=10, input_shape=digits.input_shape, mean=digits.mean,
                        std=digits.std)
    path = tmp_path / "m.pt"
    write_checkpoint(checkpoint_payload(model, model_name="resnet_narrow", num_classes=10,
                                        input_shape=digits.input_shape, mean=digits.mean, std=digits.std), path)
    setting = measurer.Setting(loaded.suite, ("benchbed.plugin.defaults",))
    with pytest.raises(BenchbedError, match="changed after it was saved"):
        measurer.measure(setting, str(path), "0" * 64, "m", 0, lambda *a: None)


def test_a_provider_registered_by_hand_is_refused_before_any_work(write_suite, methods_with, tmp_path, digits):
    spec = DatasetSpec("hand_digits", lambda root, download, val, seed: digits, digits.input_shape, 10)
    plugins = methods_with(("hand", plugin(datasets=hookimpl(lambda: [spec]))))
    suite = write_suite(dataset={"name": "hand_digits"})
    run = SuiteRun.from_file(suite, out=tmp_path / "run", quiet=True, plugins=plugins)
    with pytest.raises(BenchbedError, match="install it as a package"):
        run.run()
    assert not (tmp_path / "run" / "suite.yaml").exists(), "nothing was written"
