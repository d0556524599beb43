"""A board's first screen: what it found. Per compute level and budget, the most accurate method and,
per protocol, the one with the lowest network latency; the all-ReLU reference beside them; per compute
level, protocol and network, the entries on the accuracy-latency Pareto front; then each claim's
verdict in one line. Every figure is a table cell further down; this only picks them out."""
from __future__ import annotations

import pandas as pd

from benchbed.report.claims import MARKS, NOT_AS_STATED, NOT_TESTED, ClaimResult
from benchbed.report.pareto import HEADLINE_NETWORK, Point, front


def _pct(row: pd.Series) -> str:
    spread = row.get("clean_accuracy_std")
    text = f"{100 * row['clean_accuracy']:.2f}%"
    return text + (f" ± {100 * spread:.2f}" if pd.notna(spread) and row["seeds"] > 1 and spread > 0 else "")


def _mark(result: ClaimResult) -> str:
    if result.summary.startswith(NOT_AS_STATED):
        return MARKS[NOT_AS_STATED]
    verdicts = {lv.verdict for lv in result.levels}
    if "contradicted" in verdicts:
        return MARKS["contradicted"]
    if result.summary.startswith("holds at every"):
        return MARKS["supported"]
    return MARKS["tie"] if result.summary != NOT_TESTED else MARKS[NOT_TESTED]


def _name(row: pd.Series) -> str:
    return row["label"] if pd.isna(row["budget"]) else f"{row['label']} @ {int(row['budget']):,}"


def pareto_lines(frame: pd.DataFrame, profile_names: list[str], networks: list[str]) -> list[str]:
    """Per compute level, protocol and network, the entries no other beats on both clean accuracy and
    network latency, fastest first (the reference rows, which compute nothing, join every level)."""
    reference = frame[frame["budget"].isna()]
    lines = []
    for (_, level), at_level in frame[frame["budget"].notna()].groupby(["level_index", "level"], sort=True):
        rows = pd.concat([at_level, reference])
        for profile in profile_names:
            for network in networks:
                key = f"latency_{network}@{profile}"
                if key not in rows.columns:
                    continue
                kept = front([Point(_name(r), r[key], r["clean_accuracy"]) for _, r in rows.iterrows()
                              if pd.notna(r[key]) and pd.notna(r["clean_accuracy"])])
                if kept:
                    where = f"{level}, " if level and level != "—" else ""
                    lines.append(f"- {where}`{profile}` {network}: " + " → ".join(
                        f"{p.name} ({p.latency:.3g} s, {100 * p.value:.2f}%)" for p in kept))
    if not lines:
        return []
    return ["", "Accuracy-latency Pareto fronts (clean accuracy against network latency per image; each entry on "
                "a front is beaten by none on both, fastest first):", ""] + lines


def findings_lines(frame: pd.DataFrame, profile_names: list[str], networks: list[str],
                   tested: list[ClaimResult]) -> list[str]:
    """The "## Findings" section (markdown lines)."""
    lines = ["## Findings", ""]
    if frame.empty:
        return lines + ["No entry finished.", ""]
    internal = frame[~frame.get("external", pd.Series(False, index=frame.index)).fillna(False).astype(bool)]
    reference = internal[internal["budget"].isna()]
    for _, row in reference.iterrows():
        lines.append(f"- Reference, no budget: **{row['label']}** {_pct(row)} clean accuracy.")
    network = HEADLINE_NETWORK if HEADLINE_NETWORK in networks else (networks[0] if networks else None)
    budgeted = internal[internal["budget"].notna()]
    for (index, level), at_level in budgeted.groupby(["level_index", "level"], sort=True):
        for budget, rows in at_level.groupby("budget", sort=True):
            best = rows.loc[rows["clean_accuracy"].idxmax()]
            parts = [f"most accurate **{best['label']}** {_pct(best)}"]
            for profile in profile_names:
                key = f"latency_{network}@{profile}"
                if network and key in rows.columns and rows[key].notna().any():
                    fastest = rows.loc[rows[key].idxmin()]
                    parts.append(f"fastest on {profile} {network} **{fastest['label']}** {fastest[key]:.3g} s")
            where = f"{level}, " if level and level != "—" else ""
            lines.append(f"- {where}{int(budget):,} DReLUs: " + "; ".join(parts) + ".")
    lines += pareto_lines(internal, profile_names, networks)
    if tested:
        lines += ["", "Claims (details under *The papers' claims*):", ""]
        lines += [f"- {_mark(r)} {r.statement} — *{r.summary}*" for r in tested]
    return lines + [""]
