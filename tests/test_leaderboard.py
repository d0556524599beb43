"""Leaderboards: rendered from run records, seeds merged as mean ± std, runs of other suites refused."""
from __future__ import annotations

import json

import pytest

from benchbed.cli import main
from benchbed.errors import BenchbedError
from benchbed.leaderboard import render
from benchbed.runner import SuiteRun

METHODS = [{"name": "all_relu"}, {"name": "random_mask", "options": {"finetune": {"batch_size": 64}}}]


@pytest.fixture(scope="module")
def two_seeds(tmp_path_factory):
    from conftest import TINY_SUITE, _merge
    import yaml

    root = tmp_path_factory.mktemp("board")
    dirs = []
    for seed in (0, 1):
        suite = root / f"s{seed}.yaml"
        suite.write_text(yaml.safe_dump(_merge(TINY_SUITE, {"seeds": [seed], "methods": METHODS})))
        SuiteRun.from_file(suite, out=root / f"run{seed}", quiet=True).run()
        dirs.append(root / f"run{seed}")
    return root, dirs


def test_publish_merges_seeds_into_mean_and_std(two_seeds, capsys):
    root, dirs = two_seeds
    assert main(["publish", *map(str, dirs), "--to", str(root / "published")]) == 0
    md = (root / "published" / "tiny.md").read_text()
    assert "## Protocol" in md and "Seeds:** 0, 1" in md and "validation" in md
    rows = [line for line in md.splitlines() if line.startswith("| random_mask")]
    assert len(rows) == 2
    assert all("| 2 " in row and "±" in row for row in rows), rows
    header = next(line for line in md.splitlines() if line.startswith("| method"))
    for column in ("ReLUs", "DReLUs", "clean acc %", "comm MB", "rounds", "LAN s", "WAN s", "epochs used"):
        assert column in header
    twin = json.loads((root / "published" / "tiny.json").read_text())
    assert twin["seeds"] == [0, 1] and len(twin["entries"]) == 6
    row = next(r for r in twin["rows"] if r["method"] == "random_mask" and r["budget"] == 64)
    accs = [e["metrics"]["clean_accuracy"] for e in twin["entries"] if e["method"] == "random_mask" and e["budget"] == 64]
    assert row["clean_accuracy"] == pytest.approx(sum(accs) / 2)
    assert (root / "published" / "tiny.png").stat().st_size > 10_000


def test_leaderboard_command_rerenders_a_run(two_seeds, capsys):
    _, dirs = two_seeds
    (dirs[0] / "leaderboard.md").unlink(missing_ok=True)
    assert main(["leaderboard", str(dirs[0])]) == 0
    assert "| all_relu" in (dirs[0] / "leaderboard.md").read_text()


def test_runs_of_different_suites_are_not_merged(two_seeds, write_suite, tmp_path):
    _, dirs = two_seeds
    other = write_suite(budgets=[32], methods=[{"name": "all_relu"}])
    SuiteRun.from_file(other, out=tmp_path / "other", quiet=True).run()
    with pytest.raises(BenchbedError, match="different suite configurations"):
        render([dirs[0], tmp_path / "other"], tmp_path / "out")


def test_the_same_seed_twice_is_refused(two_seeds, tmp_path):
    _, dirs = two_seeds
    with pytest.raises(BenchbedError, match="merge runs of different seeds"):
        render([dirs[0], dirs[0]], tmp_path / "out")
