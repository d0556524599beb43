"""Aggregation: entry records to one table row per (method, budget) — means and sample standard
deviations over seeds, and for one seed the 95% binomial (Wilson) interval of each accuracy on the
images it was measured on. No presentation here."""
from __future__ import annotations

import math
from typing import Any

import pandas as pd

Z95 = 1.959964
# Accuracies the evaluation titles in every record (``metrics.columns``); these are their fallbacks.
DEFAULT_TITLES = {"clean_accuracy": "clean acc %"}
PAPER_COLUMNS = {"paper_accuracy": "paper's acc %", "paper_delta": "Δ vs paper (pp)"}
IDENTITY_COLUMNS = ("method", "label", "budget", "seed", "status", "level", "external")
GROUP = ["method", "label", "budget", "level", "level_index", "level_epochs"]


def wilson_halfwidth(p: float, n: int) -> float:
    """Half-width of the 95% Wilson score interval of a proportion ``p`` measured on ``n`` trials."""
    if not n:
        return float("nan")
    denominator = 1 + Z95 ** 2 / n
    return Z95 * math.sqrt(p * (1 - p) / n + Z95 ** 2 / (4 * n * n)) / denominator


def costs(record: dict) -> dict[str, dict]:
    """The entry's secure cost per protocol profile (a record priced under one profile holds it bare)."""
    cost = record.get("secure_cost") or {}
    if "comm_mb" in cost:
        return {cost.get("profile", "aby3"): cost}
    return {name: c for name, c in cost.items() if isinstance(c, dict) and "comm_mb" in c}


def network_seconds(cost: dict) -> dict[str, float]:
    """A price's (or a phase's) network latency per network: bytes / bandwidth + rounds · RTT / 2."""
    return cost.get("network_latency_s", cost["latency_s"])


def compute_kinds(records: list[dict]) -> dict[str, str]:
    """Per profile, where its compute seconds come from (``simulator`` or ``deployment``)."""
    return {p: c.get("compute_kind", "simulator") for r in records for p, c in costs(r).items()}


def profiles(records: list[dict]) -> list[str]:
    return list(dict.fromkeys(p for r in records for p in costs(r)))


def accuracy_titles(records: list[dict]) -> dict[str, str]:
    """Every accuracy the records' evaluations titled, in the order they first appear."""
    titles = dict(DEFAULT_TITLES)
    for r in records:
        for key, column in ((r.get("metrics") or {}).get("columns") or {}).items():
            titles.setdefault(key, column["title"])
    return titles


def flatten(record: dict) -> dict[str, Any]:
    """One record as one row: its scalar metrics, the image count of each accuracy (``n:KEY``), the
    paper's figure, and per profile its price: per inference (offline + online), and the session's
    setup and the client's storage apart."""
    metrics = record.get("metrics") or {}
    level = record.get("compute_level") or {}
    row = {"method": record["method"], "label": record.get("label", record["method"]), "budget": record["budget"],
           "level": level.get("label", "—"), "level_index": level.get("index", -1),
           "level_epochs": level.get("epochs") if level.get("epochs") is not None else float("nan"),
           "seed": record["seed"], "status": record["status"], "relus": record.get("relus"),
           "drelus": record.get("drelus"), "epochs_used": record["compute"]["used"]["epochs"]}
    for key, value in metrics.items():
        if isinstance(value, (int, float)) and not isinstance(value, bool):
            row[key] = value
    if "robustness_unreliable" in metrics:  # averaged over seeds: the share of seeds flagged
        row["unreliable"] = float(metrics["robustness_unreliable"])
    cpu = record["compute"].get("cpu")
    if cpu:  # likewise: the share of seeds whose CPU time was far beyond their metered compute
        row["unmetered"] = float(bool(cpu.get("flagged")))
    for key, column in (metrics.get("columns") or {}).items():
        row[f"n:{key}"] = column.get("images")
    if record.get("published"):
        row["paper_accuracy"] = record["published"]["accuracy"]
    assets = [a.get("epochs") for a in (record.get("method_assets") or {}).values()]
    if assets and all(isinstance(a, (int, float)) for a in assets):  # a teacher only this method uses, paid once
        row["asset_epochs"] = float(sum(assets))
    for profile, cost in costs(record).items():
        row[f"comm_mb@{profile}"], row[f"rounds@{profile}"] = cost["comm_mb"], cost["rounds"]
        # what a board ranks: the network terms, the same rule for every protocol; compute apart
        for net, seconds in network_seconds(cost).items():
            row[f"latency_{net}@{profile}"] = seconds
        if cost.get("compute_s"):
            row[f"compute_s@{profile}"] = cost["compute_s"]
        setup = (cost.get("phases") or {}).get("setup")
        if setup and setup["mb"]:  # once per client session: never part of an inference's latency
            row[f"setup_mb@{profile}"] = setup["mb"]
            for net, seconds in network_seconds(setup).items():
                row[f"setup_latency_{net}@{profile}"] = seconds
        if cost.get("client_storage_mb"):
            row[f"storage_mb@{profile}"] = cost["client_storage_mb"]
    return row


def table(records: list[dict]) -> pd.DataFrame:
    """One row per (method, budget, compute level) of the finished records: means, sample standard
    deviations (``KEY_std``) over seeds, ``seeds``, and each accuracy's 95% binomial half-width (``KEY_ci``).
    A reference row (no budget, no compute) has level "—"."""
    frame = pd.DataFrame([flatten(r) for r in records if r["status"] == "ok"])
    if frame.empty:
        return frame
    frame["budget"] = frame["budget"].astype("Int64")
    numeric = [c for c in frame.columns if c not in IDENTITY_COLUMNS and c not in GROUP]
    frame[numeric] = frame[numeric].apply(pd.to_numeric, errors="coerce")
    grouped = frame.groupby(GROUP, dropna=False)
    out = grouped[numeric].mean().join(grouped[numeric].std(ddof=1).add_suffix("_std"))
    out["seeds"] = grouped["seed"].count()
    if "paper_accuracy" in out.columns:
        out["paper_delta"] = out["clean_accuracy"] - out["paper_accuracy"]
    for key in accuracy_titles(records):
        if key in out.columns and f"n:{key}" in out.columns:
            out[f"{key}_ci"] = [wilson_halfwidth(p, int(n)) if pd.notna(p) and pd.notna(n) else float("nan")
                                for p, n in zip(out[key], out[f"n:{key}"])]
    return _ordered(out.reset_index())


def _ordered(frame: pd.DataFrame) -> pd.DataFrame:
    return frame.sort_values(["level_index", "budget", "clean_accuracy"], ascending=[True, True, False],
                             na_position="first")


def with_external(frame: pd.DataFrame, results: list[dict], accuracy_keys: set[str]) -> pd.DataFrame:
    """The table with a row per verified external result (``external.schema.json``): the figures benchbed
    measured (never the claimed ones), one "seed", the 95% binomial interval of each accuracy, shown
    beside every compute level (its compute is unknown), and ``external`` marking which rows they are."""
    frame = frame.assign(external=False)
    rows = []
    for result in results:
        row = {k: v for k, v in result["measured"].items() if k not in ("seed", "status")}
        row.update(method="external", label=f"{result['name']} (external)", budget=result["budget"], level="—",
                   level_index=-1, level_epochs=float("nan"), epochs_used=float("nan"), seeds=1, external=True)
        for key in accuracy_keys:
            if row.get(key) is not None and row.get(f"n:{key}"):
                row[f"{key}_ci"] = wilson_halfwidth(row[key], int(row[f"n:{key}"]))
        rows.append(row)
    if not rows:
        return frame
    merged = pd.concat([frame, pd.DataFrame(rows)], ignore_index=True) if not frame.empty else pd.DataFrame(rows)
    merged["budget"] = merged["budget"].astype("Int64")
    return _ordered(merged)


def levels(frame: pd.DataFrame) -> list[str]:
    """The compute levels of a table, in order (the reference rows' "—" left out)."""
    found = frame[frame["level"] != "—"][["level", "level_index"]].drop_duplicates().sort_values("level_index")
    return list(found["level"])


def grid(records: list[dict], metrics: list[str]) -> dict[tuple[str, int], dict[tuple[str, str], float]]:
    """Mask × finetune: per (metric, budget), the mean over seeds of every (mask, finetune) pairing that
    ran; empty unless the run composes methods."""
    finished = [r for r in records if r["status"] == "ok" and r["budget"] is not None]
    if not any(r.get("composition") for r in finished):
        return {}
    cells: dict[tuple[str, int, str, str], list[float]] = {}
    for r in finished:
        part = r.get("composition") or {"mask_method": r["method"], "finetune_method": r["method"], "bypass": "identity"}
        mask = part["mask_method"] + (" + DaPa" if part.get("bypass") == "dapa" else "")
        for metric in metrics:
            if metric in r["metrics"]:
                cells.setdefault((metric, r["budget"], mask, part["finetune_method"]), []).append(r["metrics"][metric])
    out: dict[tuple[str, int], dict[tuple[str, str], float]] = {}
    for (metric, budget, mask, finetune), values in cells.items():
        out.setdefault((metric, budget), {})[(mask, finetune)] = sum(values) / len(values)
    return out
