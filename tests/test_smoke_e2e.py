"""The embedded suite, end to end, exactly as the README runs it."""
from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest
import yaml

from conftest import entry_records

ROOT = Path(__file__).resolve().parents[1]


@pytest.mark.slow
def test_smoke_suite_end_to_end(tmp_path):
    out = tmp_path / "smoke"
    result = subprocess.run([sys.executable, "-m", "benchbed", "run", str(ROOT / "suites" / "smoke.yaml"),
                             "--out", str(out), "--quiet"], capture_output=True, text=True, cwd=tmp_path, timeout=1800)
    assert result.returncode == 0, result.stderr[-3000:]
    assert f"leaderboard: {out / 'leaderboard.md'}" in result.stdout
    records = entry_records(out)
    assert records and all(r["status"] == "ok" for r in records), [r.get("error") for r in records]
    # every built-in method's CPU time is what its metered compute needs (0.8-1.1x on this machine), far from the flag
    assert all(not r["compute"]["cpu"]["flagged"] for r in records), [r["compute"]["cpu"] for r in records]
    listed = {m["name"] for m in yaml.safe_load((ROOT / "suites" / "smoke.yaml").read_text())["methods"]}
    assert {r["method"] for r in records} == listed, "the smoke suite runs the methods it lists, whatever else is installed"
    assert listed >= {"all_relu", "random_mask", "snl", "autorep", "knapsack", "rlnet"}, "every built-in method"
    board = (out / "leaderboard.md").read_text()
    for method in listed:
        assert f"| {method}" in board
    budgeted = [r for r in records if r["budget"] is not None]
    assert all(r["drelus"] <= r["budget"] for r in budgeted), "no method goes over its budget"
    fine_grained = [r for r in budgeted if r["method"] != "deepreduce"]
    assert all(r["drelus"] == r["budget"] for r in fine_grained), "every per-pixel or per-patch method lands on it"
    coarse = [r for r in budgeted if r["method"] == "deepreduce"]
    assert all("deepreduce" in r["notes"] for r in coarse), "the coarse method says what it used"
    assert (out / "leaderboard.png").exists() and (out / "leaderboard.json").exists()
