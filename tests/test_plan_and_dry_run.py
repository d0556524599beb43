"""``benchbed plan`` against a hand computation, and ``benchbed run --dry-run`` on a small suite: every
entry's phases run, the export agrees with torch, a failing entry is its own one-line error, an absent
dataset gets a synthetic stand-in of its real size, and nothing is recorded."""
from __future__ import annotations

import json

import pytest

from benchbed.cli import main
from benchbed.plugin.manager import Plugins, plugin_manager
from benchbed.preflight.dry import dry_run
from benchbed.preflight.forecast import forecast
from benchbed.run.suite import load_suite
from benchbed.train.meter import forward_macs
from conftest import build_model

SMALL = {"budgets": [64, 512], "compute": {"epochs": 3}, "teacher": {"recipe": {"epochs": 4, "batch_size": 64}},
         "methods": [{"name": "all_relu"}, {"name": "snl"}, {"name": "knapsack"}],
         "evaluation": {"pgd": {"eps": 0.1, "step": 0.025, "steps": 10, "check_steps": 2, "images": 100},
                        "corruptions": {"names": ["gaussian_noise", "pixelate"], "severities": [1, 5], "images": 50}},
         "secure_cost": {"profiles": ["aby3"]}, "seeds": [0, 1]}


def test_plan_against_a_hand_computation(write_suite, tmp_path):
    plugins = Plugins(plugin_manager())
    loaded = load_suite(write_suite(**SMALL), plugins)
    bench = {"model": "resnet_narrow", "input_shape": [1, 8, 8], "device": "cpu", "gpu": None, "batch_size": 64,
             "torch": "x", "compiled": False,
             "sites": {"masked": {"harness_train_images_per_s": 1000.0, "harness_infer_images_per_s": 4000.0}}}
    planned = forecast(loaded, plugins, bench)
    n_train, n_val, n_test = 1222, 216, 359          # digits: 1,438 train less 15% validation, 359 test
    assert planned["images"] == {"train": n_train, "val": n_val, "test": n_test}
    macs = forward_macs(build_model("resnet_narrow", num_classes=10, input_shape=(1, 8, 8)), (1, 8, 8))
    assert planned["forward_macs"] == macs
    # evaluation: clean test + val forwards; PGD (10 + 2) steps of 2/3 and 3 forwards an image; 2 x 2 x 50 forwards
    train_images, forwards = 100 * 12 * 2 / 3, n_val + n_test + 100 * 3 + 2 * 2 * 50
    assert planned["evaluation_per_entry"]["equivalents"] == pytest.approx(train_images + forwards / 3)
    snl = next(g for g in planned["groups"] if g["method"] == "snl")
    assert snl["entries"] == 2 * 2 and snl["training_equivalents_per_entry"] == pytest.approx(3 * n_train)
    assert snl["pflops_per_entry"] == pytest.approx((3 * n_train + train_images + forwards / 3) * 3 * macs * 2 / 1e15)
    seconds = (3 * n_train + train_images) / 1000 + forwards / 4000
    assert snl["seconds_per_entry"] == pytest.approx(seconds) and snl["seconds"] == pytest.approx(4 * seconds)
    teacher = next(t for t in planned["teachers"] if t["variant"] == "standard")
    assert teacher["equivalents"] == pytest.approx(4 * n_train + (n_val + n_test) / 3)
    entries = 2 + 2 * 2 * 2          # all_relu once per seed; snl and knapsack at two budgets and two seeds
    assert planned["entries"] == entries
    total = sum(g["seconds"] for g in planned["groups"]) + teacher["seconds"]
    assert planned["total"]["hours"] == pytest.approx(total / 3600)


def test_plan_refuses_a_bench_of_another_model(write_suite, tmp_path, capsys):
    bench = tmp_path / "bench.json"
    bench.write_text(json.dumps({"model": "resnet18_cifar", "input_shape": [3, 32, 32], "sites": {}}))
    assert main(["plan", str(write_suite(**SMALL)), "--bench", str(bench)]) == 2
    assert "run `benchbed bench --model resnet_narrow --dataset digits" in capsys.readouterr().err


def test_dry_run_runs_every_phase_and_records_nothing(write_suite, tmp_path, monkeypatch, capsys):
    import benchbed.secure.export_check as export_check
    import benchbed_plugins.knapsack as knapsack

    def out_of_memory(*args, **kwargs):
        raise RuntimeError("CUDA out of memory. Tried to allocate 2.00 GiB\n(more lines of the allocator's report)")

    monkeypatch.setattr(knapsack, "extract_distortions", out_of_memory)  # the entries' forked processes see it too
    # the export (JAX, which starts threads) runs in the measuring process: were it here, it would fail
    monkeypatch.setattr(export_check, "export", out_of_memory)
    monkeypatch.chdir(tmp_path)
    code = main(["run", str(write_suite(**SMALL)), "--dry-run", "--json", str(tmp_path / "dry.json")])
    out = capsys.readouterr().out
    rows = json.loads((tmp_path / "dry.json").read_text())
    assert [r["entry"] for r in rows] == ["all_relu__all__s0", "snl__64__s0", "snl__512__s0", "knapsack__64__s0",
                                          "knapsack__512__s0"]
    good = [r for r in rows if not r["entry"].startswith("knapsack")]
    assert all(r["status"] == "ok" and r["export_agrees"] for r in good)
    assert all(set(r["phases"]) == {"build_mask", "finetune", "evaluate", "price"} for r in good)
    assert all(p["seconds"] >= 0 and p["peak_mb"] >= p["own_mb"] > 0
               for r in good for p in r["phases"].values())
    failed = [r for r in rows if r["entry"].startswith("knapsack")]
    assert all(r["status"] == "error" and r["error"] == "RuntimeError: CUDA out of memory. Tried to allocate 2.00 GiB"
               for r in failed)
    assert code == 1 and "3 of 5 entries ran every phase; failed: knapsack__64__s0, knapsack__512__s0" in out
    assert not (tmp_path / "runs").exists(), "a dry run records nothing"


def test_an_absent_dataset_gets_a_synthetic_stand_in_of_its_real_size(write_suite, tmp_path):
    plugins = Plugins(plugin_manager())
    suite = write_suite(dataset={"name": "cifar10", "root": str(tmp_path / "nothing"), "download": False,
                                 "val_fraction": 0.1},
                        budgets=[1000], methods=[{"name": "snl"}], evaluation={}, secure_cost={"profiles": ["aby3"]},
                        teacher={"recipe": {"epochs": 1, "batch_size": 64}})
    logged = []
    rows = dry_run(load_suite(suite, plugins, need_data=False), plugins, log=logged.append)
    assert any("50,000 + 10,000 random images of its shape [3, 32, 32] stand in" in line for line in logged)
    assert [r["status"] for r in rows] == ["ok"] and rows[0]["export_agrees"], rows
    assert not (tmp_path / "nothing").exists(), "nothing downloaded"


@pytest.mark.parametrize("compute, method", [("paper", "snl"), ({"epochs": 3}, "deepreduce")])
def test_a_dry_run_runs_the_finetune_too(write_suite, compute, method):
    """A search may use all a few steps' budget (SNL's under paper recipes, DeepReDuce's stage networks);
    the dry run splits its cut level so that the finetune gets steps of its own (AutoReP's paper recipe
    has no finetune: its search trains)."""
    plugins = Plugins(plugin_manager())
    suite = write_suite(budgets=[256], compute=compute, methods=[{"name": method}], evaluation={},
                        secure_cost={"profiles": ["aby3"]}, teacher={"recipe": {"epochs": 1, "batch_size": 64}})
    rows = dry_run(load_suite(suite, plugins), plugins, log=lambda line: None)
    assert [r["status"] for r in rows] == ["ok"], rows
    assert rows[0]["compute_used"]["search_epochs"] > 0 and rows[0]["compute_used"]["finetune_epochs"] > 0, rows
