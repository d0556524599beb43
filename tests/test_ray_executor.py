"""The Ray executor: a suite on a local Ray instance with two CPU workers gives records of the same form
as the local executor, renders the same leaderboard, and resumes."""
from __future__ import annotations

import json

import pytest

from benchbed.report.board import render
from benchbed.run.runner import SuiteRun
from conftest import entry_records

ray = pytest.importorskip("ray")


@pytest.fixture(scope="module")
def local_ray():
    ray.init(num_cpus=2, include_dashboard=False, log_to_driver=False)
    yield
    ray.shutdown()


def test_ray_entries_match_the_local_form_and_resume(local_ray, tmp_path, write_suite):
    tiny = write_suite(methods=[{"name": "all_relu"}, {"name": "random_mask"}, {"name": "snl"}],
                       teacher={"recipe": {"epochs": 1}})
    SuiteRun.from_file(tiny, out=tmp_path / "local", quiet=True).run()
    counts = SuiteRun.from_file(tiny, out=tmp_path / "ray", quiet=True).run(executor="ray")
    assert counts["error"] == 0 and counts["ok"] == 5, counts
    local = {r["entry"]: r for r in entry_records(tmp_path / "local")}
    remote = {r["entry"]: r for r in entry_records(tmp_path / "ray")}
    assert local.keys() == remote.keys()
    for key in local:
        assert local[key].keys() == remote[key].keys()
        assert local[key]["drelus"] == remote[key]["drelus"]
        assert local[key]["compute"]["limit"] == remote[key]["compute"]["limit"], "identical budgets on both executors"
        assert (tmp_path / "ray" / "entries" / remote[key]["checkpoint"]).exists()

    board = render([tmp_path / "ray"], tmp_path / "ray", stem="leaderboard").read_text()
    assert "| snl" in board and "| all_relu" in board
    again = SuiteRun.from_file(tiny, out=tmp_path / "ray", quiet=True).run(executor="ray")
    assert again["skipped"] == len(remote) and again["ok"] == 0
    assert json.loads((tmp_path / "ray" / "suite.json").read_text())["suite"]["name"] == "tiny"
