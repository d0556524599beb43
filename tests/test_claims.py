"""The papers' claims on hand-made records: supported, contradicted, a tie within the seeds' spread, not tested."""
from __future__ import annotations

import json
import math

import numpy as np
import pytest
from benchbed.report.claims import (
    CONTRADICTED,
    NOT_TESTED,
    SUPPORTED,
    T95,
    TIE,
    as_json,
    assess,
    compare,
    markdown,
    t95,
)
from scipy import stats

BUDGETS = (100, 400)


def rec(method: str, budget: int | None, seed: int, acc: float, **metrics: float) -> dict:
    return {"entry": f"{method}-{budget}-s{seed}", "method": method, "budget": budget, "seed": seed, "status": "ok",
            "metrics": {"clean_accuracy": acc, **metrics}}


def by_key(claims) -> dict:
    return {c.key: c for c in claims}


def test_t_table_is_students_one_sided_95_percent_quantile():
    for df, value in T95.items():
        assert value == pytest.approx(stats.t.ppf(0.95, df), abs=1e-3)
    assert t95(11) == T95[10], "between tabulated dfs the smaller df's (larger) quantile is used"


def test_paired_comparison_numbers_match_a_hand_computation():
    a, b = [0.80, 0.83, 0.81], [0.70, 0.74, 0.70]
    records = [rec("snl", 100, s, x) for s, x in enumerate(a)] + [rec("random_mask", 100, s, y) for s, y in enumerate(b)]
    c = compare(records, "budget 100", ("snl", 100), ("random_mask", 100), "clean_accuracy")
    d = np.array(a) - np.array(b)
    assert c.mean_difference == pytest.approx(d.mean())
    assert c.standard_error == pytest.approx(d.std(ddof=1) / math.sqrt(3))
    assert c.threshold == pytest.approx(stats.t.ppf(0.95, 2) * d.std(ddof=1) / math.sqrt(3), rel=1e-3)
    assert c.seeds == [0, 1, 2] and c.seeds_favouring_a == 3 and c.verdict == SUPPORTED


def test_supported_when_snl_beats_random_mask_at_every_budget_beyond_the_spread():
    records = [rec("snl", b, s, 0.85 + 0.01 * s) for b in BUDGETS for s in range(3)]
    records += [rec("random_mask", b, s, 0.70 + 0.012 * s) for b in BUDGETS for s in range(3)]
    claim = by_key(assess(records))["snl_beats_random_mask"]
    assert claim.verdict == SUPPORTED and claim.holds
    assert [c.label for c in claim.comparisons] == ["budget 100", "budget 400"]


def test_contradicted_when_the_other_side_wins_at_one_budget():
    records = [rec("snl", b, s, 0.80 + 0.01 * s) for b in BUDGETS for s in range(3)]
    records += [rec("random_mask", 100, s, 0.70 + 0.01 * s) for s in range(3)]
    records += [rec("random_mask", 400, s, 0.90 + 0.005 * s) for s in range(3)]
    claim = by_key(assess(records))["snl_beats_random_mask"]
    assert [c.verdict for c in claim.comparisons] == [SUPPORTED, CONTRADICTED]
    assert claim.verdict == CONTRADICTED and claim.holds is False


def test_a_difference_within_the_seeds_spread_is_a_tie():
    # differences +3, -2, +1 points: mean +0.67, SE 1.45, t·SE 4.2 -> a tie
    records = [rec("autorep", 100, s, x) for s, x in enumerate((0.83, 0.78, 0.81))]
    records += [rec("snl", 100, s, 0.80) for s in range(3)]
    records += [rec("random_mask", 100, s, x) for s, x in enumerate((0.77, 0.82, 0.79))]
    claims = by_key(assess(records))
    assert claims["autorep_ge_snl_lowest_budget"].verdict == TIE
    assert claims["autorep_ge_snl_lowest_budget"].holds, "a tie is within a ≥ claim"
    assert claims["snl_beats_random_mask"].verdict == TIE
    assert claims["snl_beats_random_mask"].holds is False, "a tie does not show a > claim"


def test_absent_methods_metrics_or_seeds_are_not_tested():
    one_seed = [rec("snl", 100, 0, 0.8), rec("random_mask", 100, 0, 0.7), rec("rlnet", 100, 0, 0.8)]
    claims = by_key(assess(one_seed))
    assert claims["snl_beats_random_mask"].verdict == NOT_TESTED
    assert "a spread needs at least 2" in claims["snl_beats_random_mask"].comparisons[0].why
    assert claims["autorep_ge_snl_lowest_budget"].verdict == NOT_TESTED
    assert "autorep @ 100" in claims["autorep_ge_snl_lowest_budget"].comparisons[0].why
    assert claims["rlnet_best_pgd"].verdict == NOT_TESTED, "no PGD numbers in the run"
    assert claims["accuracy_monotone_in_budget"].verdict == NOT_TESTED, "one budget only"
    everything_failed = [{**rec("snl", 100, s, 0.9), "status": "error"} for s in range(3)]
    assert {c.verdict for c in assess(everything_failed)} == {NOT_TESTED}


def test_rlnet_best_robustness_and_monotone_budgets():
    records = []
    for s in range(3):
        for b, base in zip(BUDGETS, (0.70, 0.80)):
            records.append(rec("rlnet", b, s, base, pgd_accuracy=0.30 + 0.01 * s, corruption_accuracy=0.60))
            records.append(rec("snl", b, s, base + 0.05, pgd_accuracy=0.10 + 0.01 * s, corruption_accuracy=0.65))
        records.append(rec("knapsack", 100, s, 0.9 - 0.01 * s))
        records.append(rec("knapsack", 400, s, 0.8 - 0.01 * s))  # falls with the budget
        records.append(rec("all_relu", None, s, 0.95, pgd_accuracy=0.9))  # no budget: never a rival
    claims = by_key(assess(records))
    assert claims["rlnet_best_pgd"].verdict == SUPPORTED
    assert {c.b for c in claims["rlnet_best_pgd"].comparisons} == {"knapsack @ 100", "knapsack @ 400", "snl @ 100",
                                                                   "snl @ 400"}
    assert claims["rlnet_best_corruption"].verdict == CONTRADICTED, "snl's corruption accuracy is higher"
    monotone = claims["accuracy_monotone_in_budget"]
    assert monotone.verdict == CONTRADICTED
    assert {c.label: c.verdict for c in monotone.comparisons}["knapsack: 100 → 400"] == CONTRADICTED


def test_markdown_and_json_carry_the_seed_level_numbers():
    records = [rec("snl", 100, s, 0.85 + 0.01 * s) for s in range(3)]
    records += [rec("random_mask", 100, s, 0.70) for s in range(3)]
    claims = assess(records)
    text = "\n".join(markdown(claims))
    assert text.startswith("## The papers' claims")
    assert "s2: 87.00 vs 70.00" in text and "3/3 → supported" in text and "not tested here" in text
    twin = json.loads(json.dumps(as_json(claims)))
    assert twin[0]["comparisons"][0]["a_values"] == pytest.approx([0.85, 0.86, 0.87])
