"""Compute as an axis: a suite lists several compute levels; an entry is (method, budget, level, seed);
the teacher and the reference rows are shared; a split budget gives every finetune the same part."""
from __future__ import annotations

import pytest

from benchbed.api import FinetuneResult, TrainRecipe, fit
from benchbed.cli import main
from benchbed.errors import SuiteError
from benchbed.plugin.manager import Plugins, plugin_manager
from benchbed.run.runner import SuiteRun
from benchbed.run.suite import load_suite, suite_entries
from conftest import entry_records, keep_first_pixels, method_plugin


def test_validate_accepts_compute_lists_and_counts_the_levels(write_suite, capsys):
    suite = write_suite(compute={"epochs": [1, 2]})
    assert main(["validate", str(suite)]) == 0
    out = capsys.readouterr().out
    assert "5 entries" in out and "× 2 compute levels" in out  # random_mask × 2 budgets × 2 levels + all_relu
    entries = suite_entries(load_suite(suite, Plugins(plugin_manager())).suite, Plugins(plugin_manager()))
    assert sorted(e.id for e in entries) == ["all_relu__all__s0", "random_mask__512__e1__s0",
                                             "random_mask__512__e2__s0", "random_mask__64__e1__s0",
                                             "random_mask__64__e2__s0"]


@pytest.mark.parametrize("compute, message", [({"epochs": [1, 1]}, "repeat"), ({"epochs": [1, -2]}, "positive"),
                                              ({"epochs": [1, 2], "seconds": [5, 6, 7]}, "numbers of compute levels"),
                                              ({"epochs": []}, "at least one"),
                                              ({"epochs": None, "seconds": 5, "finetune_share": 0.5}, "give `epochs`"),
                                              ({"epochs": [1.0000001, 1.0000002]}, "both read 'e1' in entry ids"),
                                              ({"epochs": [1, float("inf")]}, "finite"),
                                              ({"seconds": float("nan")}, "finite")])
def test_bad_compute_levels_name_the_field(write_suite, compute, message):
    with pytest.raises(SuiteError, match=message):
        load_suite(write_suite(compute=compute), Plugins(plugin_manager()))


def test_a_two_level_suite_end_to_end(write_suite, tmp_path):
    suite = write_suite(compute={"epochs": [0.5, 1.5]}, seeds=[0], budgets=[64],
                        methods=[{"name": "all_relu"}, {"name": "random_mask", "options": {"finetune": {"batch_size": 64}}},
                                 {"name": "snl", "options": {"search": {"batch_size": 64},
                                                             "finetune": {"batch_size": 64}}}])
    counts = SuiteRun.from_file(suite, out=tmp_path / "run", quiet=True).run()
    assert counts["ok"] == 5 and counts["error"] == 0
    records = {r["entry"]: r for r in entry_records(tmp_path / "run")}
    assert set(records) == {"all_relu__all__s0", "random_mask__64__e0.5__s0", "random_mask__64__e1.5__s0",
                            "snl__64__e0.5__s0", "snl__64__e1.5__s0"}
    for key in ("random_mask__64__e0.5__s0", "snl__64__e0.5__s0"):
        assert records[key]["compute"]["used"]["epochs"] <= 0.5 * 1.02 + 512 / 1222
    assert records["random_mask__64__e1.5__s0"]["compute"]["used"]["epochs"] > 1.0, "the larger level trains longer"
    assert records["all_relu__all__s0"]["compute_level"] is None, "the reference row is shared, run once"
    from benchbed.report.board import render

    text = render([tmp_path / "run"], tmp_path / "board", stem="b").read_text()
    assert "### 0.5 epochs per entry · 64 DReLUs" in text and "### 1.5 epochs per entry · 64 DReLUs" in text
    assert "at each compute level: 0.5, 1.5 epochs" in text
    assert (tmp_path / "board" / "b.compute.png").exists()
    assert "at 0.5 epochs:" in text or "not tested here" in text


def test_a_split_budget_gives_every_finetune_exactly_its_part(write_suite, methods_with, tmp_path):
    """Under ``finetune_share: 0.5`` a method that searches nothing still finetunes on half the budget, and a
    search cannot take the finetune's half."""
    def greedy_search(ctx, model):
        fit(model, ctx, TrainRecipe(epochs=100, lr=0.01, batch_size=64), select_on_val=False)
        return keep_first_pixels(ctx, model)

    def finetune_all(ctx, model):
        result = fit(model, ctx, TrainRecipe(epochs=100, lr=0.01, batch_size=64))
        return FinetuneResult(model, result.summary())

    plugins = methods_with(("nosearch", method_plugin(keep_first_pixels, finetune_all)),
                           ("greedy", method_plugin(greedy_search, finetune_all)))
    suite = write_suite(methods=[{"name": "nosearch"}, {"name": "greedy"}], compute={"epochs": 2, "finetune_share": 0.5},
                        budgets=[64])
    SuiteRun.from_file(suite, out=tmp_path / "run", quiet=True, plugins=plugins).run()
    for r in entry_records(tmp_path / "run"):
        used = r["compute"]["used"]
        assert r["status"] == "ok", r.get("error")
        assert used["finetune_epochs"] == pytest.approx(1.0, abs=0.06), (r["entry"], used)
        assert used["search_epochs"] <= 1.0 + 1e-6
        assert r["compute_level"]["finetune_epochs"] == 1.0
