"""The papers' claims on hand-made records: the statistics against an independent computation, Holm's
correction, ties with their detectable difference, the claims as their methods declare them, at every
compute level, and "not tested" where the entries the claim needs are absent."""
from __future__ import annotations

import json
import math
from dataclasses import asdict

import numpy as np
import pytest
from scipy import stats

from benchbed.plugin.types import Claim, ClaimSide, Condition
from benchbed.report.claims import (CONTRADICTED, NOT_AS_STATED, NOT_TESTED, SUPPORTED, TIE, Comparison, LevelResult,
                                    as_json, assess, compare, fact, holm, markdown, meets, summary)
from benchbed_plugins import autorep, rlnet, snl

BUDGETS = (100, 400)
LEVELS = {"2 epochs": (0, 2.0), "8 epochs": (1, 8.0)}
CLAIMS = [asdict(c) for c in snl.CLAIMS + autorep.CLAIMS + rlnet.CLAIMS]


def rec(method: str, budget: int | None, seed: int, acc: float, level: str = "2 epochs", finetune: str | None = None,
        finetune_share: float | None = None, **metrics: float) -> dict:
    index, epochs = LEVELS[level]
    record = {"entry": f"{method}-{finetune}-{budget}-{level}-s{seed}", "method": method, "budget": budget,
              "seed": seed, "status": "ok", "metrics": {"clean_accuracy": acc, **metrics}, "claims": CLAIMS,
              "compute_level": {"index": index, "label": level, "epochs": epochs,
                                "finetune_epochs": None if finetune_share is None else finetune_share * epochs}}
    if finetune:
        record["method"] = f"{method}-{finetune}"
        record["composition"] = {"mask_method": method, "finetune_method": finetune, "bypass": "identity"}
    return record


def by_key(results) -> dict:
    return {r.key: r for r in results}


def test_paired_comparison_matches_a_hand_computed_t_test():
    a, b = [0.80, 0.83, 0.81, 0.84], [0.70, 0.74, 0.75, 0.70]
    c = compare("budget 100", "snl", "random_mask", [rec("snl", 100, s, x) for s, x in enumerate(a)],
                [rec("random_mask", 100, s, y) for s, y in enumerate(b)], "clean_accuracy")
    d = np.array(a) - np.array(b)
    se = d.std(ddof=1) / math.sqrt(4)
    t = d.mean() / se
    assert c.mean_difference == pytest.approx(d.mean()) and c.standard_error == pytest.approx(se)
    assert c.p_value == pytest.approx(2 * stats.t.sf(abs(t), df=3))  # two-sided, from the t statistic by hand
    assert c.seeds == [0, 1, 2, 3] and c.seeds_favouring_a == 4


def test_holm_step_down_by_hand():
    comparisons = [Comparison(str(i), "a", "b", "m", seeds=[0, 1, 2], mean_difference=0.01, standard_error=0.001,
                              p_value=p) for i, p in enumerate([0.01, 0.04, 0.03, 0.5])]
    holm(comparisons)
    # sorted p: 0.01, 0.03, 0.04, 0.5 -> x4, x3, x2, x1 with running max: 0.04, 0.09, 0.09, 0.5
    assert [c.p_holm for c in comparisons] == pytest.approx([0.04, 0.09, 0.09, 0.5])
    assert [c.verdict for c in comparisons] == [SUPPORTED, TIE, TIE, TIE]
    tie = comparisons[1]
    expected = (stats.t.ppf(1 - 0.05 / 4 / 2, 2) + stats.t.ppf(0.8, 2)) * 0.001
    assert tie.detectable == pytest.approx(expected), "the smallest difference three seeds could have detected"


def test_snl_mask_claim_compares_entries_that_differ_only_in_the_mask():
    """Same finetune (SNL's), same fixed finetune part of a split budget: snl vs random_mask → snl."""
    records = [rec("snl", b, s, 0.85 + 0.01 * s, finetune_share=0.5) for b in BUDGETS for s in range(3)]
    records += [rec("random_mask", b, s, 0.70 + 0.012 * s, finetune="snl", finetune_share=0.5)
                for b in BUDGETS for s in range(3)]
    records += [rec("random_mask", b, s, 0.95, finetune="snl", finetune_share=1.0) for b in BUDGETS for s in range(3)]
    results = by_key(assess(records))
    mask = results["snl_mask_beats_random_mask"]
    assert mask.summary.startswith("holds") and mask.levels[0].verdict == SUPPORTED
    assert [c.label for c in mask.levels[0].comparisons] == ["budget 100", "budget 400"]
    # the matched-total claim compares snl with the random mask whose finetune got the whole budget
    worth = results["snl_search_worth_its_compute"]
    assert worth.levels[0].verdict == CONTRADICTED
    assert all(c.b_values == [0.95] * 3 for c in worth.levels[0].comparisons)


def test_a_mask_claim_is_not_tested_without_a_split_budget():
    records = [rec("snl", 100, s, 0.85) for s in range(3)] + [rec("random_mask", 100, s, 0.7, finetune="snl")
                                                              for s in range(3)]
    mask = by_key(assess(records))["snl_mask_beats_random_mask"]
    assert mask.summary == NOT_TESTED and "finetune_share" in mask.levels[0].comparisons[0].why


def test_claims_are_tested_at_every_compute_level_with_a_one_line_summary():
    records = []
    for s in range(3):
        # AutoReP beats SNL at 2 epochs, ties at 8
        records += [rec("autorep", 100, s, 0.80 + 0.005 * s), rec("snl", 100, s, 0.70 + 0.004 * s)]
        records += [rec("autorep", 100, s, 0.85 + (0.01, -0.01, 0.0)[s], level="8 epochs"),
                    rec("snl", 100, s, 0.85, level="8 epochs")]
    claim = by_key(assess(records))["autorep_beats_snl_lowest_budget"]
    assert [(lv.level, lv.verdict) for lv in claim.levels] == [("2 epochs", SUPPORTED), ("8 epochs", TIE)]
    assert claim.summary == "holds up to 2 epochs, not beyond"
    text = "\n".join(markdown(assess(records)))
    assert "holds up to 2 epochs, not beyond" in text and "at 8 epochs: **tie**" in text and "could have detected" in text


def test_summaries_across_levels():
    def levels(*holds):
        return [LevelResult(f"{i} epochs", [], verdict={True: SUPPORTED, False: CONTRADICTED, None: NOT_TESTED}[h],
                            holds=h) for i, h in enumerate(holds)]
    assert summary(levels(True, True)) == "holds at every level"
    assert summary(levels(False, True, True)) == "holds from 1 epochs on"
    assert summary(levels(True, False, True)).startswith("flips between levels")
    assert summary(levels(False, False)) == "contradicted at every level"
    assert summary(levels(None, True)) == "holds at the one level tested (1 epochs)"
    assert summary(levels(None)) == NOT_TESTED


def test_fewer_than_three_seeds_or_absent_entries_are_not_tested():
    two_seeds = [rec("autorep", 100, s, 0.9) for s in range(2)] + [rec("snl", 100, s, 0.7) for s in range(2)]
    claim = by_key(assess(two_seeds))["autorep_beats_snl_lowest_budget"]
    assert claim.summary == NOT_TESTED and "at least 3" in claim.levels[0].comparisons[0].why
    only_snl = [rec("snl", 100, s, 0.7) for s in range(3)]
    assert "autorep @ 100" in by_key(assess(only_snl))["autorep_beats_snl_lowest_budget"].levels[0].comparisons[0].why
    assert "rlnet_triple_win" in by_key(assess(only_snl)), "the run's records carry every declared claim"


def test_rlnet_triple_win_against_the_best_other_method_on_three_metrics_and_monotone_budgets():
    records = []
    for s in range(3):
        for b, base in zip(BUDGETS, (0.70, 0.80)):
            records.append(rec("rlnet", b, s, base + 0.1 + 0.002 * s, pgd_accuracy=0.30 + 0.01 * s,
                               corruption_accuracy=0.60))
            records.append(rec("snl", b, s, base + 0.05, pgd_accuracy=0.10 + 0.011 * s,
                               corruption_accuracy=0.65 + 0.001 * s))
        records.append(rec("autorep", 100, s, 0.7 - 0.01 * s, pgd_accuracy=0.1 + 0.01 * s))
        records.append(rec("autorep", 400, s, 0.6 - 0.011 * s, pgd_accuracy=0.1 + 0.012 * s))  # falls with the budget
        records.append(rec("all_relu", None, s, 0.95, pgd_accuracy=0.9))  # no budget: never a rival
    results = by_key(assess(records))
    win = results["rlnet_triple_win"]
    # the best other method by clean accuracy is snl at both budgets; one comparison per metric
    assert {c.b for c in win.levels[0].comparisons} == {"snl @ 100", "snl @ 400"}
    verdicts = {(c.label, c.metric): c.verdict for c in win.levels[0].comparisons}
    assert verdicts["budget 100, vs snl", "pgd_accuracy"] == SUPPORTED
    assert verdicts["budget 100, vs snl", "clean_accuracy"] == SUPPORTED
    assert verdicts["budget 100, vs snl", "corruption_accuracy"] == CONTRADICTED, "snl's corruption accuracy is higher"
    assert win.levels[0].verdict == CONTRADICTED
    monotone = results["accuracy_monotone_in_budget"]
    assert monotone.levels[0].verdict == CONTRADICTED
    assert {c.label: c.verdict for c in monotone.levels[0].comparisons}["autorep: 100 → 400"] == CONTRADICTED


def _as_run(record: dict, setup: tuple, observed: dict | None = None, options: dict | None = None,
            reported: dict | None = None) -> dict:
    return {**record, "stated_setup": [asdict(c) for c in setup], "options": options or {},
            "setup": {"observed": observed or {}, "reported": reported or {}}}


RLNET_AS_STATED = dict(observed={"teacher": "robust", "dual_bn": True},
                       options={"sensitivity": "authors", "robust": {"pgd_steps": 7}})


def _rlnet_losing(**rlnet_setup) -> list[dict]:
    """RLNet worse than SNL on every metric at both budgets, RLNet's entries run as ``rlnet_setup`` says."""
    records = []
    for s in range(3):
        for b in BUDGETS:
            records.append(_as_run(rec("rlnet", b, s, 0.5 + 0.01 * s, pgd_accuracy=0.2 + 0.01 * s,
                                       corruption_accuracy=0.4 + 0.01 * s), rlnet.SETUP, **rlnet_setup))
            records.append(_as_run(rec("snl", b, s, 0.8 + 0.012 * s, pgd_accuracy=0.4 + 0.011 * s,
                                       corruption_accuracy=0.6 + 0.013 * s), snl.SETUP,
                                   reported={"top_k_share": 0.0, "reached_budget_by_search": True}))
    return records


def test_an_rlnet_entry_on_a_standard_teacher_cannot_yield_contradicted():
    standard = {**RLNET_AS_STATED, "observed": {"teacher": "standard", "dual_bn": True}}
    claim = by_key(assess(_rlnet_losing(**standard)))["rlnet_triple_win"]
    assert claim.summary.startswith(NOT_AS_STATED) and "robust dual-BN teacher" in claim.summary
    assert "teacher standard" in claim.summary, "what the entries did is named"
    assert all(lv.verdict == NOT_AS_STATED and lv.holds is None for lv in claim.levels)
    assert {c.verdict for lv in claim.levels for c in lv.comparisons} == {NOT_AS_STATED}
    text = "\n".join(markdown([claim]))
    assert "contradicted" not in text and "as run, mean d" in text and "the paper: “Compared with the SoTA" in text
    # the same numbers on entries run as the paper states: contradicted
    assert by_key(assess(_rlnet_losing(**RLNET_AS_STATED)))["rlnet_triple_win"].levels[0].verdict == CONTRADICTED


def test_each_departure_from_rlnets_setup_is_named():
    for change, named in (({"options": {"sensitivity": "uniform", "robust": {"pgd_steps": 7}}}, "budget shares"),
                          ({"options": {"sensitivity": "authors", "robust": {"pgd_steps": 3}}}, "PGD-7"),
                          ({"observed": {"teacher": "robust"}}, "dual-BN student")):
        claim = by_key(assess(_rlnet_losing(**{**RLNET_AS_STATED, **change})))["rlnet_triple_win"]
        assert claim.summary.startswith(NOT_AS_STATED) and named in claim.summary, change


def test_the_other_sides_stated_setup_counts_too():
    """AutoReP against an SNL whose search stopped short (top-k filled most of its mask): not tested as stated."""
    records = []
    for s in range(3):
        records.append(_as_run(rec("autorep", 100, s, 0.85 + 0.01 * s), autorep.SETUP, reported={"polynomial": "dapa"}))
        records.append(_as_run(rec("snl", 100, s, 0.7), snl.SETUP,
                               reported={"top_k_share": 0.6, "reached_budget_by_search": True}))
    claim = by_key(assess(records))["autorep_beats_snl_lowest_budget"]
    assert claim.summary.startswith(NOT_AS_STATED) and "top_k_share 0.6, the method's word" in claim.summary
    for r in records:
        r["setup"]["reported"]["top_k_share"] = 0.05
    claim = by_key(assess(records))["autorep_beats_snl_lowest_budget"]
    assert claim.levels[0].verdict == SUPPORTED and claim.levels[0].setup == {"polynomial": "dapa"}


def test_condition_facts_and_relations():
    record = {"options": {"robust": {"pgd_steps": 3}}, "setup": {"observed": {"teacher": "robust"}, "reported": {}}}
    assert fact(record, "options.robust.pgd_steps") == (True, 3)
    assert fact(record, "observed.teacher") == (True, "robust")
    assert fact(record, "reported.probe_images") == (False, None)
    rule = lambda relation, value: {"relation": relation, "value": value}  # noqa: E731
    assert meets(rule(">=", 3), 3) and not meets(rule(">=", 7), 3) and meets(rule("in", ["a", "b"]), "a")
    assert not meets(rule("<=", 0.1), None), "a missing number departs"


def test_claims_refuse_relations_and_fields_they_cannot_test():
    for bad in ({"relation": "<<"}, {"same": "nothing"}, {"budgets": "some"}, {"versus": "best", "b": ClaimSide("snl")},
                {"conditions": (Condition("x", "elsewhere.x"),)}):
        with pytest.raises(ValueError):
            Claim("k", "statement", "source", a=ClaimSide("a"), **bad)


def test_markdown_and_json_carry_the_seed_level_numbers():
    records = [rec("autorep", 100, s, 0.85 + 0.01 * s) for s in range(3)]
    records += [rec("snl", 100, s, 0.70) for s in range(3)]
    results = assess(records)
    text = "\n".join(markdown(results))
    assert text.startswith("## The papers' claims")
    assert "s2: 87.00 vs 70.00" in text and "3/3 → supported" in text and "not tested here" in text
    twin = json.loads(json.dumps(as_json(results)))
    claim = next(c for c in twin if c["key"] == "autorep_beats_snl_lowest_budget")
    assert claim["levels"][0]["comparisons"][0]["a_values"] == pytest.approx([0.85, 0.86, 0.87])


def test_claims_under_paper_recipes_are_tested_on_their_one_level():
    """`compute: paper` has one level without epochs: its records are found and tested like any level's."""
    records = [rec("autorep", 100, s, 0.80 + 0.005 * s) for s in range(3)] + [rec("snl", 100, s, 0.70)
                                                                            for s in range(3)]
    for r in records:
        r["compute_level"] = {"index": 0, "label": "", "epochs": None, "seconds": None, "finetune_epochs": None}
    claim = by_key(assess(records))["autorep_beats_snl_lowest_budget"]
    assert [(lv.level, lv.verdict) for lv in claim.levels] == [("each method's paper recipe", SUPPORTED)]
    one = by_key(assess([r for r in records if r["seed"] == 0]))["autorep_beats_snl_lowest_budget"]
    assert "1 paired seed" in one.levels[0].comparisons[0].why


def test_entries_keyed_by_their_own_budget_split_are_found_as_their_method():
    """The runner keys an entry with its own split ``snl.ft0.5`` and records its parts; every claim finds it
    as SNL's (as side A, as side B, and among "every other method"), and no claim is tested at the
    reference rows' level "—"."""
    def keyed(record: dict, key: str, mask: str, finetune: str) -> dict:
        return {**record, "method": key, "mask_method": mask, "finetune_method": finetune}

    records = [{"entry": "all_relu", "method": "all_relu", "budget": None, "seed": s, "status": "ok",
                "metrics": {"clean_accuracy": 0.9}, "claims": CLAIMS, "compute_level": None} for s in range(3)]
    for b in BUDGETS:
        for s in range(3):
            records.append(keyed(rec("snl", b, s, 0.80 + 0.01 * s, finetune_share=0.5, pgd_accuracy=0.50 + 0.01 * s),
                                 "snl.ft0.5", "snl", "snl"))
            records.append(keyed(rec("autorep", b, s, 0.86 + 0.01 * s, pgd_accuracy=0.40 + 0.01 * s),
                                 "autorep", "autorep", "autorep"))
            records.append(keyed(rec("rlnet", b, s, 0.60 + 0.01 * s, pgd_accuracy=0.30 + 0.012 * s),
                                 "rlnet", "rlnet", "rlnet"))
            records.append(rec("random_mask", b, s, 0.70 + 0.012 * s, finetune="snl", finetune_share=0.5))
    results = by_key(assess(records))
    assert results["snl_mask_beats_random_mask"].levels[0].verdict == SUPPORTED
    assert results["autorep_beats_snl_lowest_budget"].levels[0].verdict == SUPPORTED
    best = results["rlnet_triple_win"]
    assert [lv.level for lv in best.levels] == ["2 epochs"], "no level of its own for the reference rows"
    assert {c.b.split(" @")[0] for c in best.levels[0].comparisons} == {"autorep"}, "the best by clean accuracy"
    assert best.levels[0].verdict == CONTRADICTED


def test_pareto_front_and_equal_latency_by_hand():
    from benchbed.report.pareto import Point, at_equal_latency, front

    pts = [Point("a", 1.0, 0.5), Point("b", 2.0, 0.4), Point("c", 2.0, 0.7), Point("d", 3.0, 0.7), Point("e", 4.0, 0.9)]
    assert [p.name for p in front(pts)] == ["a", "c", "e"], "b is slower and worse than c; d no better than c"
    mine = [Point("A1", 1.0, 0.6), Point("A2", 3.0, 0.8)]
    theirs = [Point("B1", 0.5, 0.9), Point("B2", 1.5, 0.5), Point("B3", 3.0, 0.8), Point("B4", 3.5, 0.9)]
    found = at_equal_latency(mine, theirs)
    # A1 (1.0 s, 0.6): B's best no slower is B1's 0.9 -> behind; A2 (3.0 s, 0.8): B1 0.9 -> behind
    assert (found.at_a.ahead, found.at_a.level, found.at_a.behind, found.at_a.alone) == (0, 0, 2, 0)
    # B1: no A as fast; B2 (0.5) < A1 0.6 -> behind; B3 0.8 = A2 -> level; B4 0.9 > A2 0.8 -> ahead
    assert (found.at_b.ahead, found.at_b.level, found.at_b.behind, found.at_b.alone) == (1, 1, 1, 1)
    assert found.text("snl", "deepreduce") == (
        "at snl's 2 latencies, snl ahead at 0, level at 0, behind at 2; at deepreduce's 4 latencies, deepreduce "
        "ahead at 1, level at 1, behind at 1, no snl entry as fast at 1")


def test_an_iso_relu_claim_is_read_again_at_equal_latency():
    """Beside the paper's claim at equal ReLUs, an added reading at equal latency per profile: a method
    more accurate at each budget but slower can be behind at equal latency. No verdict changes."""
    def priced(record: dict, seconds: float) -> dict:
        record["secure_cost"] = {"aby3": {"comm_mb": 1.0, "rounds": 10, "latency_s": {"WAN": seconds},
                                          "network_latency_s": {"WAN": seconds}}}
        return record
    records = []
    for seed in range(3):
        for budget, (snl_s, dr_s) in zip(BUDGETS, ((2.0, 1.0), (4.0, 2.5))):
            records.append(priced(rec("snl", budget, seed, 0.80 + budget / 1e4 + seed / 1e3), snl_s))
            records.append(priced(rec("deepreduce", budget, seed, 0.70 + budget / 1e4 + seed / 1e3), dr_s))
    result = by_key(assess(records))["snl_beats_deepreduce"]
    level = result.levels[0]
    unpriced = by_key(assess([{k: v for k, v in r.items() if k != "secure_cost"} for r in records]))
    assert level.verdict == unpriced["snl_beats_deepreduce"].levels[0].verdict, "an added reading, not a verdict"
    # deepreduce @ 100 (1.0 s): no snl entry as fast; @ 400 (2.5 s): snl @ 100 (2.0 s, 0.81) beats 0.74
    # snl @ 100 (2.0 s, 0.81) against deepreduce's best no slower, @ 100 (1.0 s, 0.71): ahead; snl @ 400
    # (4.0 s, 0.84) against deepreduce @ 400 (2.5 s, 0.74): ahead. deepreduce @ 100 (1.0 s): no snl as fast;
    # @ 400 (2.5 s, 0.74) against snl @ 100 (0.81): behind
    assert level.equal_latency == ["`aby3` WAN, clean accuracy: at snl's 2 latencies, snl ahead at 2, level at 0, "
                                   "behind at 0; at deepreduce's 2 latencies, deepreduce ahead at 0, level at 0, "
                                   "behind at 1, no snl entry as fast at 1"]
    assert "at equal latency instead of equal ReLUs" in "\n".join(markdown([result]))


def test_the_docs_claim_table_says_what_the_fmnist_board_found():
    """docs/suites.md lists every declared claim with its verdict on leaderboards/fmnist.md: each row's
    last cell is the board's summary (the parenthesised facts and repeats left out)."""
    import re
    from pathlib import Path

    root = Path(__file__).resolve().parents[1]
    board = json.loads((root / "leaderboards" / "fmnist.json").read_text())
    table = [line for line in (root / "docs" / "suites.md").read_text().splitlines()
             if line.startswith("| ") and "`" in line.split("|")[2]]
    cells = {line.split("|")[2].strip().strip("`"): line.split("|")[-2].strip() for line in table}
    for claim in board["claims"]:
        head, _, rest = claim["summary"].partition(": ")
        parts = list(dict.fromkeys(re.sub(r" \([^()]*\)", "", x).strip() for x in rest.split("; "))) if rest else []
        assert cells[claim["key"]] == (head + ": " + "; ".join(parts) if parts else head), claim["key"]
    assert set(cells) == {c["key"] for c in board["claims"]}, "every claim the board tested, and no other"
