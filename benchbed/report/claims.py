"""The papers' claims, tested on a multi-seed run's entry records.

Each claim is a set of comparisons "A vs B" on one metric, paired over seeds: for every seed where both
entries finished, d = metric(A) - metric(B). The rule (one-sided paired t-test at 95%):

- ``A better``  when mean(d) > t · SE,  with SE = sd(d) / sqrt(n) and t the 95% one-sided Student-t
  quantile for n - 1 degrees of freedom (2.92 for 3 seeds);
- ``B better``  when mean(d) < -t · SE;
- ``tie``       otherwise: the difference is within the seeds' spread.

With SE = 0 (every seed gives the same difference) any non-zero mean decides. A comparison needs at least two
paired seeds; with fewer it is "not tested here", as is one whose methods or metric are absent from the run.
How many seeds favour A (the sign test's count) is reported beside, not used.

A claim "A > B" is ``supported`` when A is better in every tested comparison, ``contradicted`` when B is
better in any, and a ``tie`` otherwise; a claim "A ≥ B" reads the same, and a tie is within it
(``holds``)."""
from __future__ import annotations

import math
from dataclasses import asdict, dataclass, field
from statistics import mean, stdev

# One-sided 95% quantiles of Student's t, by degrees of freedom; the normal quantile beyond the table.
T95 = {1: 6.314, 2: 2.920, 3: 2.353, 4: 2.132, 5: 2.015, 6: 1.943, 7: 1.895, 8: 1.860, 9: 1.833, 10: 1.812,
       12: 1.782, 15: 1.753, 20: 1.725, 30: 1.697}
NORMAL95 = 1.645

SUPPORTED, TIE, CONTRADICTED, NOT_TESTED = "supported", "tie", "contradicted", "not tested here"
METRIC_NAMES = {"clean_accuracy": "clean accuracy", "pgd_accuracy": "PGD accuracy",
                "corruption_accuracy": "corruption accuracy"}


def t95(df: int) -> float:
    """The table's quantile for ``df``, or for the largest tabulated df below it (conservative)."""
    below = [d for d in T95 if d <= df]
    return T95[max(below)] if df <= 30 else NORMAL95


@dataclass
class Comparison:
    label: str                      # e.g. "budget 600"
    a: str                          # "snl @ 600"
    b: str
    metric: str
    seeds: list[int] = field(default_factory=list)
    a_values: list[float] = field(default_factory=list)
    b_values: list[float] = field(default_factory=list)
    mean_difference: float | None = None
    standard_error: float | None = None
    threshold: float | None = None  # t · SE
    seeds_favouring_a: int | None = None
    verdict: str = NOT_TESTED
    why: str = ""


@dataclass
class Claim:
    key: str
    statement: str
    source: str
    relation: str                   # ">" or "≥"
    comparisons: list[Comparison]
    verdict: str = NOT_TESTED
    holds: bool | None = None


def compare(records: list[dict], label: str, a: tuple[str, int | None], b: tuple[str, int | None],
            metric: str) -> Comparison:
    """Paired comparison over seeds of entry ``a`` = (method, budget) against ``b`` on ``metric``."""
    name = lambda m: f"{m[0]} @ {m[1]:,}" if m[1] is not None else m[0]  # noqa: E731
    out = Comparison(label, name(a), name(b), metric)
    values = {side: _by_seed(records, *entry, metric) for side, entry in (("a", a), ("b", b))}
    if not values["a"] or not values["b"]:
        missing = [name(e) for e, v in ((a, values["a"]), (b, values["b"])) if not v]
        out.why = f"no finished entry of {', '.join(missing)} with {METRIC_NAMES.get(metric, metric)}"
        return out
    out.seeds = sorted(set(values["a"]) & set(values["b"]))
    out.a_values = [values["a"][s] for s in out.seeds]
    out.b_values = [values["b"][s] for s in out.seeds]
    if len(out.seeds) < 2:
        out.why = f"{len(out.seeds)} paired seed(s); a spread needs at least 2"
        return out
    diffs = [x - y for x, y in zip(out.a_values, out.b_values)]
    n = len(diffs)
    out.mean_difference = mean(diffs)
    out.standard_error = stdev(diffs) / math.sqrt(n)
    out.threshold = t95(n - 1) * out.standard_error
    out.seeds_favouring_a = sum(d > 0 for d in diffs)
    if out.mean_difference > out.threshold:
        out.verdict = SUPPORTED
    elif out.mean_difference < -out.threshold:
        out.verdict = CONTRADICTED
    else:
        out.verdict = TIE
    return out


def untested(label: str, why: str) -> Comparison:
    return Comparison(label, "", "", "", why=why)


def _by_seed(records: list[dict], method: str, budget: int | None, metric: str) -> dict[int, float]:
    found = {}
    for r in records:
        value = (r.get("metrics") or {}).get(metric)
        if (r["status"] == "ok" and r["method"] == method and r["budget"] == budget
                and isinstance(value, (int, float)) and not isinstance(value, bool)):
            found[r["seed"]] = float(value)
    return found


def _verdict(claim: Claim) -> Claim:
    tested = [c.verdict for c in claim.comparisons if c.verdict != NOT_TESTED]
    if not tested:
        claim.verdict, claim.holds = NOT_TESTED, None
    elif CONTRADICTED in tested:
        claim.verdict, claim.holds = CONTRADICTED, False
    elif all(v == SUPPORTED for v in tested):
        claim.verdict, claim.holds = SUPPORTED, True
    else:
        claim.verdict, claim.holds = TIE, claim.relation == "≥"
    return claim


def assess(records: list[dict]) -> list[Claim]:
    """Every claim, tested on ``records`` (entry records as ``benchbed.leaderboard.load_runs`` gives them)."""
    ok = [r for r in records if r["status"] == "ok"]
    budgets = sorted({r["budget"] for r in ok if r["budget"] is not None})
    methods = sorted({r["method"] for r in ok if r["budget"] is not None})
    none = [untested("every budget", "no entry with a budget finished")]

    def per_budget(a: str, b: str, metric: str, at: list[int] = budgets) -> list[Comparison]:
        return [compare(ok, f"budget {x:,}", (a, x), (b, x), metric) for x in at] or none

    claims = [
        Claim("snl_beats_random_mask", "SNL's learned mask beats a random mask at the same finetune (every budget)",
              "SNL, Cho et al., ICML 2022", ">", per_budget("snl", "random_mask", "clean_accuracy")),
        Claim("autorep_ge_snl_lowest_budget", "AutoReP ≥ SNL at the lowest budget",
              "AutoReP, Peng et al., ICCV 2023", "≥",
              per_budget("autorep", "snl", "clean_accuracy", budgets[:1])),
        Claim("knapsack_ge_snl", "knapsack's patch ReLUs ≥ SNL's per-pixel mask at equal DReLUs (every budget)",
              "knapsack patch-ReLU, Gorski & Avidan, arXiv:2304.10442", "≥",
              per_budget("knapsack", "snl", "clean_accuracy")),
    ]
    for metric, key in (("pgd_accuracy", "pgd"), ("corruption_accuracy", "corruption")):
        others = [m for m in methods if m != "rlnet"]
        claims.append(Claim(f"rlnet_best_{key}", f"RLNet has the best {METRIC_NAMES[metric]} at every budget",
                            "RLNet, Sarkar, Kundu, Beerel, CVPR-W 2024", "≥",
                            [c for m in others for c in per_budget("rlnet", m, metric)]
                            or [untested("every budget", "no other method with a budget finished")]))
    monotone = [compare(ok, f"{m}: {lo:,} → {hi:,}", (m, hi), (m, lo), "clean_accuracy")
                for m in methods for lo, hi in zip(budgets, budgets[1:])]
    claims.append(Claim("accuracy_monotone_in_budget", "clean accuracy does not fall as the budget grows, for every "
                        "method", "all methods", "≥",
                        monotone or [untested("every method", "fewer than two budgets finished")]))
    return [_verdict(c) for c in claims]


def as_json(claims: list[Claim]) -> list[dict]:
    return [asdict(c) for c in claims]


def _pct(v: float | None) -> str:
    return "—" if v is None else f"{100 * v:.2f}"


def markdown(claims: list[Claim]) -> list[str]:
    """The "## The papers' claims" section: one line per claim, then its comparisons with the seed-level numbers."""
    lines = ["## The papers' claims", "",
             "Paired over seeds: d = A − B per seed; A is better when mean(d) > t₀.₉₅(n−1) · SE(d), B when "
             "mean(d) < −t · SE, a tie otherwise (within the seeds' spread). A claim \"≥\" holds on a tie; "
             "\"k/n\" counts the seeds that favour A. Numbers are percentage points.", ""]
    for claim in claims:
        mark = {SUPPORTED: "✅", TIE: "🟰", CONTRADICTED: "❌", NOT_TESTED: "—"}[claim.verdict]
        holds = "" if claim.holds is None or claim.verdict != TIE else (" (within the claim)" if claim.holds
                                                                        else " (not shown beyond the spread)")
        reasons = {c.why for c in claim.comparisons}
        if claim.verdict == NOT_TESTED and len(reasons) == 1:  # one reason for all: say it once
            lines.append(f"- {mark} **{claim.statement}** ({claim.source}): **{claim.verdict}** — {reasons.pop()}")
            continue
        lines.append(f"- {mark} **{claim.statement}** ({claim.source}): **{claim.verdict}**{holds}")
        for c in claim.comparisons:
            if c.verdict == NOT_TESTED:
                versus = f": {c.a} vs {c.b}" if c.a else ""
                lines.append(f"  - {c.label}{versus}: not tested here ({c.why})")
                continue
            seeds = ", ".join(f"s{s}: {_pct(x)} vs {_pct(y)}" for s, x, y in zip(c.seeds, c.a_values, c.b_values))
            lines.append(f"  - {c.label}: {c.a} vs {c.b}, {METRIC_NAMES.get(c.metric, c.metric)}: "
                         f"mean d {100 * c.mean_difference:+.2f} ± {100 * c.standard_error:.2f} (SE), "
                         f"threshold {100 * c.threshold:.2f}, {c.seeds_favouring_a}/{len(c.seeds)} → {c.verdict} "
                         f"({seeds})")
    return lines
