"""Leaderboards: rendered from run records, seeds merged as mean ± std, runs of other suites refused."""
from __future__ import annotations

import json

import pytest

from benchbed.cli import main
from benchbed.errors import BenchbedError
from benchbed.report.board import render
from benchbed.run.runner import SuiteRun

METHODS = [{"name": "all_relu"}, {"name": "random_mask", "options": {"finetune": {"batch_size": 64}}}]


@pytest.fixture(scope="module")
def two_seeds(tmp_path_factory):
    import yaml

    from conftest import TINY_SUITE, _merge

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
    assert "<b>Protocol</b>" in md and "Seeds:** 0, 1" in md and "validation" in md
    # the first screen is the findings: the reference, and per budget the most accurate and fastest methods
    assert md.index("## Findings") < md.index("<b>Protocol</b>") < md.index("## Results")
    findings = md[md.index("## Findings"):md.index("<b>Protocol</b>")]
    assert "Reference, no budget: **all_relu**" in findings
    assert "64 DReLUs: most accurate **random_mask**" in findings and "fastest on aby3 WAN **random_mask**" in findings
    rows = [line for line in md.splitlines()  # the ranked table's: rank, then method
            if line.startswith("| ") and line.split("|")[2].strip() == "random_mask"]
    assert len(rows) == 2
    assert all(row.startswith("| 1 ") and "±" in row for row in rows), "ranked under the reference, with a spread"
    assert all(len(line) <= 120 for line in md.splitlines() if line.startswith("|")), "every table fits a screen"
    # per budget a ranked table, then a secure-cost table per profile
    assert md.index("### 64 DReLUs") < md.index("Secure cost under `aby3`") < md.index("### 512 DReLUs")
    ranked = next(line for line in md.splitlines() if line.startswith("| #"))
    assert [h.strip() for h in ranked.strip("|").split("|")] == ["#", "method", "DReLUs", "clean %", "aby3 WAN s",
                                                                  "epochs"]
    cost = next(line for line in md.splitlines() if line.startswith("| method"))
    same = next(line for line in md.splitlines() if line.startswith("- The same in every row"))
    assert "aby3 rounds" in same, "a column constant in every row is stated once, not repeated"
    assert "MB" in cost and "compute s" in cost and "LAN s" in cost + same
    assert "seconds" not in ranked + cost, "wall time varies with machine load: it is not ranked"
    assert "### How to read the table" in md and "sample standard deviation over seeds" in md
    twin = json.loads((root / "published" / "tiny.json").read_text())
    assert twin["seeds"] == [0, 1] and len(twin["entries"]) == 6
    assert twin["schema_version"] == 2
    row = next(r for r in twin["rows"] if r["method"] == "random_mask" and r["budget"] == 64)
    accs = [e["metrics"]["clean_accuracy"] for e in twin["entries"] if e["method"] == "random_mask" and e["budget"] == 64]
    assert row["metrics"]["clean_accuracy"]["mean"] == pytest.approx(sum(accs) / 2)
    assert row["metrics"]["clean_accuracy"]["std"] > 0 and "latency_s" in row["secure_cost"]["aby3"]
    spec = {c["key"]: c for c in twin["columns"]}
    assert spec["clean_accuracy"]["higher_is_better"] is True and spec["comm_mb@aby3"]["group"] == "cost"
    assert spec["latency_WAN@aby3"]["path"] == ["secure_cost", "aby3", "latency_s", "WAN"]
    assert (root / "published" / "tiny.png").stat().st_size > 10_000
    assert (root / "published" / "tiny.html").read_text().count("<tr>") == 1 + 3, "header and one row per entry group"


def test_leaderboard_command_rerenders_a_run(two_seeds, capsys):
    _, dirs = two_seeds
    (dirs[0] / "leaderboard.md").unlink(missing_ok=True)
    assert main(["leaderboard", str(dirs[0])]) == 0
    md = (dirs[0] / "leaderboard.md").read_text()
    assert "| all_relu" in md
    header = next(line.split("|") for line in md.splitlines() if line.startswith("| #"))
    row = next(line.split("|") for line in md.splitlines()
               if line.startswith("| ") and line.split("|")[2].strip() == "random_mask" and "| 64 " in line)
    acc = row[[h.strip() for h in header].index("clean %")].strip()
    assert "±" in acc, "one seed: the accuracy carries its binomial interval"
    from benchbed.report.tables import wilson_halfwidth

    value, half = (float(x) for x in acc.split("±"))
    n = json.loads((dirs[0] / "data.json").read_text())["test"]
    assert half == pytest.approx(100 * wilson_halfwidth(value / 100, n), abs=0.051), "written to one decimal"


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


def test_wilson_interval_against_a_hand_computation():
    from benchbed.report.tables import wilson_halfwidth

    # p = 0.9, n = 100, z = 1.96: (1.96·sqrt(0.0009 + 0.000096)) / 1.0384 = 0.05957…
    assert wilson_halfwidth(0.9, 100) == pytest.approx(0.0596, abs=1e-4)
    assert wilson_halfwidth(1.0, 359) > 0, "a perfect score still has an interval"


def test_colours_are_stable_across_runs():
    from benchbed.report.figure import colour

    assert colour("snl") == "#1f77b4" and colour("my_method") == colour("my_method")


def test_the_published_html_renders_the_table_in_a_browser(two_seeds):
    from test_html_board import CHROMIUM, read_table, rendered_dom

    if CHROMIUM is None:
        pytest.skip("needs Debian's chromium (.ci/run installs it)")
    root, dirs = two_seeds
    render(dirs, root / "html")
    rows = read_table(rendered_dom(root / "html" / "tiny.html", "#sort=clean_accuracy"))
    assert rows[0][:4] == ["method", "budget", "seeds", "ReLUs"]
    body = rows[1:]
    assert len(body) == 3 and {r[0] for r in body} == {"all_relu", "random_mask"}
    accuracies = [float(r[rows[0].index("clean acc %")].split("±")[0]) for r in body]
    assert accuracies == sorted(accuracies, reverse=True), "sorted by the browser, best first"


def test_cuts_are_grouped_across_seeds():
    from benchbed.report.board import grouped_lines

    level = {"label": "2 epochs", "index": 0}
    records = [{"method": "knapsack", "label": "knapsack", "budget": 600, "seed": s, "compute_level": level,
                "cuts": {"probes": f"{30 + (s > 0)} of 2048 images per probe"}} for s in range(3)]
    assert grouped_lines(records, "cuts") == ["- knapsack @ 600, 2 epochs (seeds 0, 1, 2): probes: 30 of 2048 images per probe / "
                                  "31 of 2048 images per probe"]


def test_the_mask_by_finetune_grid_shows_only_the_methods_a_composition_involves():
    from benchbed.report.markdown import grid_lines

    cells = {("clean_accuracy", 600): {("snl", "snl"): 0.8, ("random_mask", "snl"): 0.6, ("autorep", "autorep"): 0.9,
                                       ("knapsack", "knapsack"): 0.85, ("random_mask", "random_mask"): 0.5}}
    text = "\n".join(grid_lines(cells, {"clean_accuracy": "clean acc %"}))
    assert "| mask ↓ / finetune → | random_mask | snl   |" in text
    assert "autorep" not in text and "knapsack" not in text
