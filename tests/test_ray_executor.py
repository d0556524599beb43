"""The Ray executor: the smoke suite on a local Ray instance with two CPU workers gives records of the
same form as the local executor, renders the same leaderboard, and resumes."""
from __future__ import annotations

import json
from pathlib import Path

import pytest

from benchbed.leaderboard import render
from benchbed.records import entry_records
from benchbed.runner import SuiteRun

ray = pytest.importorskip("ray")
ROOT = Path(__file__).resolve().parents[1]


@pytest.fixture(scope="module")
def local_ray():
    ray.init(num_cpus=2, include_dashboard=False, log_to_driver=False)
    yield
    ray.shutdown()


@pytest.mark.slow
def test_smoke_suite_on_ray_matches_the_local_form(local_ray, tmp_path, write_suite):
    counts = SuiteRun.from_file(ROOT / "suites" / "smoke.yaml", out=tmp_path / "ray", quiet=True).run(executor="ray")
    assert counts["error"] == 0 and counts["ok"] > 0
    ray_records = {r["entry"]: r for r in entry_records(tmp_path / "ray")}
    assert all(r["status"] == "ok" for r in ray_records.values())
    assert all((tmp_path / "ray" / "entries" / r["checkpoint"]).exists() for r in ray_records.values())

    tiny = write_suite(methods=[{"name": "all_relu"}, {"name": "random_mask"}])
    SuiteRun.from_file(tiny, out=tmp_path / "local", quiet=True).run()
    SuiteRun.from_file(tiny, out=tmp_path / "tiny_ray", quiet=True).run(executor="ray")
    local = {r["entry"]: r for r in entry_records(tmp_path / "local")}
    remote = {r["entry"]: r for r in entry_records(tmp_path / "tiny_ray")}
    assert local.keys() == remote.keys()
    for key in local:
        assert local[key].keys() == remote[key].keys()
        assert local[key]["drelus"] == remote[key]["drelus"]
        assert local[key]["compute"]["limit"] == remote[key]["compute"]["limit"], "identical budgets on both executors"

    board = render([tmp_path / "ray"], tmp_path / "ray", stem="leaderboard").read_text()
    assert "| snl" in board and "| all_relu" in board
    again = SuiteRun.from_file(ROOT / "suites" / "smoke.yaml", out=tmp_path / "ray", quiet=True).run(executor="ray")
    assert again["skipped"] == len(ray_records) and again["ok"] == 0
    assert json.loads((tmp_path / "ray" / "suite.json").read_text())["suite"]["name"] == "smoke"
