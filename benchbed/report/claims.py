"""The papers' claims, tested on a multi-seed run's entry records, at every compute level.

Claims belong to the methods that make them (``MethodInfo.claims``, carried in every entry record); this
module holds only the statistics. A claim is a set of comparisons "A vs B" on one metric, one per budget
(and per other method, for "best of every method" claims), at each compute level. A comparison is paired
over seeds: d = metric(A) − metric(B) for every seed where both entries finished, and it needs at least
``MIN_SEEDS`` seeds.

The rule: a two-sided paired t-test (scipy) for every comparison of a claim at a level, the claim's
comparisons corrected together by Holm's step-down at ``ALPHA`` = 5%; a comparison whose corrected p
stays at or above it is a **tie**, and shows the smallest difference its seeds could have detected
(a paired t-test at the Bonferroni level with 80% power, on the seeds' spread). Every seed giving the
same non-zero difference decides at once.

A claim "A > B" is ``supported`` at a level when A is better in every comparison tested there,
``contradicted`` when B is better in any, a ``tie`` otherwise; a claim "A ≥ B" holds on a tie. Across
levels the summary says whether it holds at every level, from one level on, up to one, or flips.

A claim's ``conditions`` are the setup its statement depends on (its paper's teacher, schedule, probes).
Each is read from the compared entries' records — what the core observed (``setup.observed``), the
options it validated, or what the method reported (``setup.reported``) — and a comparison with an
entry that departs is **not tested as stated**: its numbers are shown as run, its verdict is neither
supported nor contradicted, and so is the verdict of its level and of the claim."""
from __future__ import annotations

import math
from dataclasses import asdict, dataclass, field

import numpy as np
from scipy import stats

from benchbed.plugin.types import ClaimSide
from benchbed.report import pareto
from benchbed.report.tables import profiles

ALPHA = 0.05
POWER = 0.8
MIN_SEEDS = 3
SUPPORTED, TIE, CONTRADICTED, NOT_TESTED = "supported", "tie", "contradicted", "not tested here"
NOT_AS_STATED = "not tested as stated"
METRIC_NAMES = {"clean_accuracy": "clean accuracy", "pgd_accuracy": "PGD accuracy",
                "corruption_accuracy": "corruption accuracy", "autoattack_accuracy": "AutoAttack accuracy"}


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
    p_value: float | None = None          # two-sided paired t-test
    p_holm: float | None = None           # after Holm's correction over the claim's comparisons at the level
    detectable: float | None = None       # the smallest difference these seeds could have detected
    seeds_favouring_a: int | None = None
    verdict: str = NOT_TESTED
    why: str = ""


@dataclass
class LevelResult:
    level: str                      # "2 epochs"
    comparisons: list[Comparison]
    verdict: str = NOT_TESTED
    holds: bool | None = None
    departures: list[str] = field(default_factory=list)   # the conditions the compared entries departed from
    setup: dict[str, str] = field(default_factory=dict)   # each condition's fact on the claiming side's entries
    equal_latency: list[str] = field(default_factory=list)  # the same comparison at equal latency, per profile


@dataclass
class ClaimResult:
    key: str
    statement: str
    source: str
    relation: str
    same: str
    levels: list[LevelResult]
    summary: str = NOT_TESTED
    quote: str = ""
    conditions: list[str] = field(default_factory=list)


PAPER_LEVEL = "each method's paper recipe"  # `compute: paper`: one level, no limit


def _level_label(record: dict) -> str:
    level = record.get("compute_level")
    if level is None:
        return "—"
    return level.get("label") or PAPER_LEVEL


def _level_order(records: list[dict]) -> list[str]:
    """The compute levels claims are tested at, in order; the reference rows' "—" only when it is the
    only one (they compute nothing, so no claim compares them at a level of their own)."""
    found = {_level_label(r): (r.get("compute_level") or {}).get("index", 0) for r in records}
    levels = [level for level in sorted(found, key=found.get) if level != "—"]
    return levels or ["—"]


def _side_records(records: list[dict], side: ClaimSide, budget: int | None, level: str) -> list[dict]:
    return [r for r in records if r["status"] == "ok" and r["budget"] == budget and _level_label(r) == level
            and side.matches(r)]


def _finetune_epochs(record: dict) -> float | None:
    return (record.get("compute_level") or {}).get("finetune_epochs")


def _by_seed(records: list[dict], metric: str) -> dict[int, float]:
    found = {}
    for r in records:
        value = (r.get("metrics") or {}).get(metric)
        if isinstance(value, (int, float)) and not isinstance(value, bool):
            found[r["seed"]] = float(value)
    return found


def fact(record: dict, path: str) -> tuple[bool, object]:
    """The value at ``path`` of a record (``observed.<name>``, ``reported.<name>``, ``options.<path>``)."""
    head, *rest = path.split(".")
    node = record.get("options") if head == "options" else (record.get("setup") or {}).get(head)
    for part in rest:
        if not isinstance(node, dict) or part not in node:
            return False, None
        node = node[part]
    return True, node


def meets(condition: dict, value: object) -> bool:
    target, relation = condition["value"], condition["relation"]
    try:
        return {"==": lambda: value == target, "!=": lambda: value != target, ">=": lambda: value >= target,
                "<=": lambda: value <= target, "in": lambda: value in target}[relation]()
    except TypeError:  # a fact of another type than the condition's (None against a number)
        return False


def _shown(value: object) -> str:
    if isinstance(value, float):
        return f"{value:.3g}"
    return "missing" if value is None else str(value)


def _stated(records: list[dict]) -> list[dict]:
    """The setup the entries' own methods state their papers' figures for (``MethodInfo.setup``)."""
    found: dict[str, dict] = {}
    for r in records:
        for c in r.get("stated_setup") or []:
            found.setdefault(c["requirement"], c)
    return list(found.values())


def departures(conditions: list[dict], a_records: list[dict], b_records: list[dict]) -> list[str]:
    """Each condition some compared entry departs from, with what those entries did: the claim's own
    (on the side each names) and each side's method's stated setup (on that side's entries)."""
    checks = [(c, {"a": a_records, "b": b_records, "both": a_records + b_records}[c.get("side", "a")])
              for c in conditions]
    checks += [(c, [r for r in records if c in (r.get("stated_setup") or [])])
               for records in (a_records, b_records) for c in _stated(records)]
    found = []
    for c, records in checks:
        did = sorted({_shown(fact(r, c["fact"])[1]) for r in records
                      if not (fact(r, c["fact"])[0] and meets(c, fact(r, c["fact"])[1]))})
        if did:
            name = c["fact"].split(".", 1)[1]
            word = ", the method's word" if c["fact"].startswith("reported.") else ""
            methods = "/".join(sorted({r.get("method", "") for r in records}))
            found.append(f"{c['requirement']} ({methods}: {name} {' / '.join(did)}{word})")
    return sorted(set(found))


def _setup(conditions: list[dict], records: list[dict]) -> dict[str, str]:
    """Each condition's fact over ``records``: one value, or the range of a number."""
    out = {}
    for c in conditions:
        values = [fact(r, c["fact"])[1] for r in records if fact(r, c["fact"])[0]]
        numbers = [v for v in values if isinstance(v, (int, float)) and not isinstance(v, bool)]
        name = c["fact"].split(".", 1)[1]
        if numbers and len(numbers) == len(values):
            lo, hi = min(numbers), max(numbers)
            out[name] = _shown(lo) if lo == hi else f"{_shown(lo)}–{_shown(hi)}"
        elif values:
            out[name] = " / ".join(sorted({_shown(v) for v in values}))
    return out


def _assets(records: list[dict]) -> dict[str, str]:
    """The one-time assets the claiming side's entries used (a teacher only that method trains), in epochs."""
    found = {}
    for r in records:
        for name, asset in (r.get("method_assets") or {}).items():
            if isinstance(asset.get("epochs"), (int, float)):
                found[f"{name} (once)"] = f"{asset['epochs']:.3g} epochs"
    return found


def pair(a_records: list[dict], b_records: list[dict], same: str) -> tuple[list[dict], list[dict], str]:
    """The entries of each side that the claim may compare: under ``finetune compute`` those with the same
    fixed finetune part of a split budget; under ``total compute`` B's entries whose finetune got the most."""
    if same == "finetune compute":
        shares = {_finetune_epochs(r) for r in a_records} - {None}
        if not shares:
            return [], [], "needs a split budget (compute.finetune_share): entries that differ only in their mask"
        part = max(shares)
        return ([r for r in a_records if _finetune_epochs(r) == part],
                [r for r in b_records if _finetune_epochs(r) == part], "")
    if not b_records:
        return a_records, b_records, ""
    total = lambda r: math.inf if _finetune_epochs(r) is None else _finetune_epochs(r)  # noqa: E731
    most = max(total(r) for r in b_records)
    return a_records, [r for r in b_records if total(r) == most], ""


def compare(label: str, a_name: str, b_name: str, a_records: list[dict], b_records: list[dict],
            metric: str) -> Comparison:
    """The paired difference of ``a_records`` and ``b_records`` on ``metric`` over their common seeds."""
    out = Comparison(label, a_name, b_name, metric)
    values = {"a": _by_seed(a_records, metric), "b": _by_seed(b_records, metric)}
    missing = [n for n, side in ((a_name, "a"), (b_name, "b")) if not values[side]]
    if missing:
        out.why = f"no finished entry of {', '.join(missing)} with {METRIC_NAMES.get(metric, metric)}"
        return out
    out.seeds = sorted(set(values["a"]) & set(values["b"]))
    out.a_values = [values["a"][s] for s in out.seeds]
    out.b_values = [values["b"][s] for s in out.seeds]
    if len(out.seeds) < MIN_SEEDS:
        out.why = f"{len(out.seeds)} paired seed(s); a test needs at least {MIN_SEEDS}"
        return out
    diffs = np.asarray(out.a_values) - np.asarray(out.b_values)
    n = len(diffs)
    out.mean_difference = float(diffs.mean())
    sd = float(diffs.std(ddof=1))
    out.standard_error = sd / math.sqrt(n)
    out.seeds_favouring_a = int((diffs > 0).sum())
    if sd <= 1e-12:  # every seed gives the same difference (up to float noise): no spread to weigh it against
        out.p_value = 0.0 if out.mean_difference else 1.0
    else:
        out.p_value = float(stats.ttest_rel(out.a_values, out.b_values).pvalue)
    return out


def holm(comparisons: list[Comparison]) -> None:
    """Holm's step-down correction over ``comparisons`` (those tested), then each one's verdict."""
    tested = [c for c in comparisons if c.p_value is not None]
    m = len(tested)
    running = 0.0
    for rank, c in enumerate(sorted(tested, key=lambda c: c.p_value)):
        running = max(running, min(1.0, (m - rank) * c.p_value))
        c.p_holm = running
    for c in tested:
        if c.p_holm < ALPHA:
            c.verdict = SUPPORTED if c.mean_difference > 0 else CONTRADICTED
        else:
            c.verdict = TIE
            n = len(c.seeds)
            alpha = ALPHA / m
            c.detectable = float((stats.t.ppf(1 - alpha / 2, n - 1) + stats.t.ppf(POWER, n - 1)) * c.standard_error)


def _level_verdict(level: LevelResult, relation: str) -> LevelResult:
    tested = [c.verdict for c in level.comparisons if c.verdict != NOT_TESTED]
    if NOT_AS_STATED in tested:
        level.verdict, level.holds = NOT_AS_STATED, None
    elif not tested:
        level.verdict, level.holds = NOT_TESTED, None
    elif CONTRADICTED in tested:
        level.verdict, level.holds = CONTRADICTED, False
    elif all(v == SUPPORTED for v in tested):
        level.verdict, level.holds = SUPPORTED, True
    else:
        level.verdict, level.holds = TIE, relation == "≥"
    return level


def summary(levels: list[LevelResult]) -> str:
    """Across the compute levels (in order): holds at every level, from one on, up to one, at none, or flips."""
    departed = sorted({d for lv in levels if lv.verdict == NOT_AS_STATED for d in lv.departures})
    if departed:
        return f"{NOT_AS_STATED}: " + "; ".join(departed)
    tested = [lv for lv in levels if lv.holds is not None]
    if not tested:
        return NOT_TESTED
    if len(tested) == 1:
        return f"{'holds' if tested[0].holds else 'does not hold'} at the one level tested ({tested[0].level})"
    pattern = [lv.holds for lv in tested]
    if all(pattern):
        return "holds at every level"
    if not any(pattern):
        verdicts = {lv.verdict for lv in tested}
        return f"{'contradicted' if verdicts == {CONTRADICTED} else 'does not hold'} at every level"
    first = pattern.index(True)
    if all(pattern[first:]) and not any(pattern[:first]):
        return f"holds from {tested[first].level} on"
    last = len(pattern) - 1 - pattern[::-1].index(True)
    if all(pattern[:last + 1]) and not any(pattern[last + 1:]):
        return f"holds up to {tested[last].level}, not beyond"
    return "flips between levels: " + ", ".join(f"{lv.level}: {lv.verdict}" for lv in tested)


def declared(records: list[dict]) -> list[dict]:
    """Every claim the run's methods declare, once each, in the order first met."""
    found: dict[str, dict] = {}
    for r in records:
        for claim in r.get("claims") or []:
            found.setdefault(claim["key"], claim)
    return list(found.values())


def _others(ok: list[dict], a: ClaimSide) -> list[ClaimSide]:
    """Every other budgeted method as published: its own mask and finetune (an entry's key may name its
    budget split, never its composition)."""
    return [ClaimSide(m) for m in sorted({r.get("mask_method") or r["method"] for r in ok if r["budget"] is not None
                                          and not r.get("composition")}) if m != a.mask]


def _mean(records: list[dict], metric: str) -> float:
    values = list(_by_seed(records, metric).values())
    return float(np.mean(values)) if values else -math.inf


def _best(ok: list[dict], others: list[ClaimSide], budget: int, level: str, by: str) -> list[ClaimSide]:
    """The other method with the highest mean ``by`` at this budget and level (none when none finished)."""
    scored = [(_mean(_side_records(ok, side, budget, level), by), str(side), side) for side in others]
    scored = [s for s in scored if s[0] > -math.inf]
    return [max(scored, key=lambda s: (s[0], s[1]))[2]] if scored else []


def _equal_latency(claim: dict, ok: list[dict], a: ClaimSide, level: str, metric: str) -> list[str]:
    """Beside a claim at equal ReLUs, the same sides compared at equal latency under each profile (on
    the headline network): for each of B's entries, A's best at no more latency. Never a verdict."""
    at_level = [r for r in ok if r["budget"] is not None and _level_label(r) == level]
    b_sides = [ClaimSide(**claim["b"])] if claim.get("b") else _others(ok, a)
    a_records = [r for r in at_level if a.matches(r)]
    b_records = [r for r in at_level if any(side.matches(r) for side in b_sides)]
    b_name = str(b_sides[0]) if claim.get("b") else "other methods'"
    lines = []
    for profile in profiles(a_records + b_records):
        network = pareto.network_of(a_records + b_records, profile)
        name = lambda r: f"{r.get('mask_method') or r['method']} @ {r['budget']:,}"  # noqa: E731
        mine, theirs = (pareto.points(rs, metric, profile, network, name) for rs in (a_records, b_records))
        if mine and theirs:
            found = pareto.at_equal_latency(mine, theirs)
            lines.append(f"`{profile}` {network}, {METRIC_NAMES.get(metric, metric)}: {found.text(str(a), b_name)}")
    return lines


def test_claim(claim: dict, records: list[dict]) -> ClaimResult:
    """One declared claim tested at every compute level of ``records``."""
    ok = [r for r in records if r["status"] == "ok"]
    budgets = sorted({r["budget"] for r in ok if r["budget"] is not None})
    at = budgets[:1] if claim.get("budgets") == "lowest" else budgets
    a = ClaimSide(**claim["a"])
    metrics = [claim["metric"]] if isinstance(claim["metric"], str) else list(claim["metric"])
    versus = claim.get("versus", "each")
    conditions = list(claim.get("conditions") or [])
    result = ClaimResult(claim["key"], claim["statement"], claim["source"], claim["relation"], claim["same"], [],
                         quote=claim.get("quote", ""), conditions=[c["requirement"] for c in conditions])
    for level in _level_order(ok):
        comparisons, lost, claiming = [], set(), []
        for budget in at:
            if claim.get("b"):
                sides = [ClaimSide(**claim["b"])]
            elif versus == "best":
                sides = _best(ok, _others(ok, a), budget, level, claim.get("best_by", "clean_accuracy"))
            else:
                sides = _others(ok, a)
            for b in sides:
                a_records, b_records, why = pair(_side_records(ok, a, budget, level), _side_records(ok, b, budget, level),
                                                 claim["same"])
                claiming += a_records
                departed = departures(conditions, a_records, b_records)
                lost.update(departed)
                for metric in metrics:
                    label = f"budget {budget:,}" + (f", vs {b}" if not claim.get("b") else "")
                    c = compare(label, f"{a} @ {budget:,}", f"{b} @ {budget:,}", a_records, b_records, metric)
                    if why:
                        c.why = why
                        c.seeds, c.a_values, c.b_values, c.p_value = [], [], [], None
                    comparisons.append(c)
                    if departed and c.p_value is not None:
                        c.verdict, c.why = NOT_AS_STATED, "; ".join(departed)
        if not comparisons:
            comparisons.append(Comparison("every budget", "", "", metrics[0], why="no entry with a budget finished"))
        holm([c for c in comparisons if c.verdict != NOT_AS_STATED])
        level_result = LevelResult(level, comparisons, departures=sorted(lost),
                                   setup={**_setup(conditions + _stated(claiming), claiming), **_assets(claiming)},
                                   equal_latency=_equal_latency(claim, ok, a, level, metrics[0]))
        result.levels.append(_level_verdict(level_result, claim["relation"]))
    result.summary = summary(result.levels)
    return result


def monotone(records: list[dict]) -> ClaimResult:
    """The benchmark's own sanity check: a method's clean accuracy does not fall as its budget grows."""
    ok = [r for r in records if r["status"] == "ok" and r["budget"] is not None]
    budgets = sorted({r["budget"] for r in ok})
    result = ClaimResult("accuracy_monotone_in_budget", "clean accuracy does not fall as the budget grows, for every "
                         "method", "benchbed (a sanity check)", "≥", "total compute", [])
    for level in _level_order(ok):
        comparisons = []
        for method in sorted({r["method"] for r in ok}):
            for lo, hi in zip(budgets, budgets[1:]):
                side = lambda b: [r for r in ok if r["method"] == method and r["budget"] == b  # noqa: E731
                                  and _level_label(r) == level]
                comparisons.append(compare(f"{method}: {lo:,} → {hi:,}", f"{method} @ {hi:,}", f"{method} @ {lo:,}",
                                           side(hi), side(lo), "clean_accuracy"))
        if not comparisons:
            comparisons.append(Comparison("every method", "", "", "clean_accuracy", why="fewer than two budgets finished"))
        holm(comparisons)
        result.levels.append(_level_verdict(LevelResult(level, comparisons), "≥"))
    result.summary = summary(result.levels)
    return result


def assess(records: list[dict]) -> list[ClaimResult]:
    """Every declared claim, then the sanity check, tested on ``records``."""
    return [test_claim(c, records) for c in declared(records)] + [monotone(records)]


def as_json(results: list[ClaimResult]) -> list[dict]:
    return [asdict(r) for r in results]


def _pct(v: float | None) -> str:
    return "—" if v is None else f"{100 * v:.2f}"


MARKS = {SUPPORTED: "✅", TIE: "🟰", CONTRADICTED: "❌", NOT_TESTED: "—", NOT_AS_STATED: "⚠️"}


def markdown(results: list[ClaimResult]) -> list[str]:
    """The "## The papers' claims" section: per claim one summary line across the compute levels, then per
    level its verdict and comparisons with the seed-level numbers."""
    lines = ["## The papers' claims", "",
             f"Each claim is declared by the method that makes it. Per compute level, every comparison A vs B is "
             f"paired over seeds (d = A − B per seed, at least {MIN_SEEDS} seeds), tested two-sided (scipy's paired "
             f"t-test) and corrected over the claim's comparisons by Holm's method at {ALPHA:.0%}: A better or B "
             f"better when the corrected p is below it, a tie otherwise — and a tie shows the smallest difference "
             f"its seeds could have detected ({POWER:.0%} power). A claim \"≥\" holds on a tie. Numbers are "
             "percentage points; \"k/n\" counts the seeds that favour A.", ""]
    for r in results:
        verdicts = {lv.verdict for lv in r.levels}
        mark = MARKS[NOT_AS_STATED] if r.summary.startswith(NOT_AS_STATED) else MARKS[CONTRADICTED] \
            if CONTRADICTED in verdicts else (MARKS[SUPPORTED] if r.summary.startswith("holds at every") else
                                              MARKS[TIE] if r.summary != NOT_TESTED else MARKS[NOT_TESTED])
        lines.append(f"- {mark} **{r.statement}** ({r.source}; compared at the same {r.same}): **{r.summary}**")
        if r.quote:
            lines.append(f"  - the paper: “{r.quote}”")
        if r.conditions:
            lines.append(f"  - stated for: {'; '.join(r.conditions)}")
        for level in r.levels:
            reasons = {c.why for c in level.comparisons}
            head = f"  - at {level.level}: **{level.verdict}**" if len(r.levels) > 1 or level.level != "—" else \
                f"  - **{level.verdict}**"
            if level.setup:
                head += " (as run: " + ", ".join(f"{k} {v}" for k, v in level.setup.items()) + ")"
            if level.verdict == NOT_TESTED and len(reasons) == 1:
                lines.append(f"{head} — {reasons.pop()}")
                continue
            lines.append(head)
            if level.equal_latency:  # an added reading, not the paper's claim: no verdict
                lines.append("    - the same sides at equal latency instead of equal ReLUs (means over seeds; "
                             "no verdict): " + "; ".join(level.equal_latency))
            for c in level.comparisons:
                if c.verdict == NOT_TESTED:
                    versus = f": {c.a} vs {c.b}" if c.a else ""
                    lines.append(f"    - {c.label}{versus}: not tested here ({c.why})")
                    continue
                seeds = ", ".join(f"s{s}: {_pct(x)} vs {_pct(y)}" for s, x, y in zip(c.seeds, c.a_values, c.b_values))
                if c.verdict == NOT_AS_STATED:
                    lines.append(f"    - {c.label}: {c.a} vs {c.b}, {METRIC_NAMES.get(c.metric, c.metric)}: as run, mean d "
                                 f"{100 * c.mean_difference:+.2f} ± {100 * c.standard_error:.2f} (SE), "
                                 f"{c.seeds_favouring_a}/{len(c.seeds)} → {NOT_AS_STATED} ({seeds})")
                    continue
                detect = (f", could have detected ±{100 * c.detectable:.2f}" if c.detectable is not None else "")
                lines.append(f"    - {c.label}: {c.a} vs {c.b}, {METRIC_NAMES.get(c.metric, c.metric)}: mean d "
                             f"{100 * c.mean_difference:+.2f} ± {100 * c.standard_error:.2f} (SE), p {c.p_value:.3g}, "
                             f"Holm {c.p_holm:.3g}, {c.seeds_favouring_a}/{len(c.seeds)} → {c.verdict}{detect} ({seeds})")
    return lines
