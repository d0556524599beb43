"""The two protocols end to end on the embedded data: matched compute limits every entry alike; paper
recipes run each method's published recipe without a limit and record the compute it used."""
from __future__ import annotations

from benchbed.plugin.manager import Plugins, plugin_manager
from benchbed.run.runner import SuiteRun
from conftest import entry_records


def test_paper_protocol_runs_the_published_recipes_and_records_their_compute(write_suite, tmp_path):
    suite = write_suite(budgets=[256], compute="paper", methods=[
        {"name": "all_relu"},
        {"name": "snl", "options": {"lambda_init": 3.0e-3, "alpha_lr": 0.01, "search": {"epochs": 3, "batch_size": 64},
                                    "finetune": {"epochs": 2, "batch_size": 64}}}])
    run = SuiteRun.from_file(suite, out=tmp_path / "run", quiet=True)
    recipe = Plugins(plugin_manager()).get("snl").info.paper_recipe
    assert run.options["snl"].lambda_schedule == recipe["lambda_schedule"] == "paper", "the paper's own lambda rule"
    assert run.options["snl"].search.epochs == 3 and run.options["snl"].search.lr == recipe["search"]["lr"]
    counts = run.run()
    assert counts["ok"] == 2, counts
    snl = next(r for r in entry_records(tmp_path / "run") if r["method"] == "snl")
    assert snl["protocol"] == "paper"
    assert snl["compute"]["limit"] == {"epochs": None, "seconds": None, "finetune_epochs": None}
    # what the recipe used, in the matched protocol's units: 5 epochs of data, each image a training pass
    # and a teacher forward for the KD (a third), and the validation passes
    assert 5 * (1 + 1 / 3) < snl["compute"]["used"]["epochs"] <= 5 * (1 + 1 / 3) + 0.4
    board = (tmp_path / "run" / "leaderboard.md")
    from benchbed.report.board import render

    text = render([tmp_path / "run"], tmp_path / "run", stem="leaderboard").read_text()
    assert board.exists() and "Protocol: paper recipes" in text and "| epochs |" in text
