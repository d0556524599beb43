"""Leaderboards from run records: markdown (tabulate), a JSON twin, and a Pareto plot.

Several runs of one suite (typically different seeds) merge into one board: every number is the
mean over seeds, ± the sample standard deviation when there is more than one."""
from __future__ import annotations

import math
from pathlib import Path
from typing import Any

import matplotlib
import pandas as pd
from tabulate import tabulate

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402  (after choosing the headless backend)
from matplotlib.figure import Figure  # noqa: E402

from benchbed import claims
from benchbed.errors import BenchbedError
from benchbed.records import entry_records, read_json, write_json

# Metric keys the core knows how to title; any other scalar metric gets a column under its own name.
METRIC_TITLES = {"clean_accuracy": "clean acc %", "corruption_accuracy": "corruption acc %",
                 "pgd_accuracy": "PGD acc %", "clean_accuracy_adv_bn": "clean acc, adv BN %"}
PERCENT = {"clean_accuracy", "val_accuracy", "corruption_accuracy", "pgd_accuracy", "clean_accuracy_adv_bn",
           "paper_accuracy", "paper_delta"}
INTEGER = {"relus", "drelus", "rounds"}


def _flatten(record: dict) -> dict[str, Any]:
    row = {"method": record["method"], "budget": record["budget"], "seed": record["seed"],
           "status": record["status"], "relus": record.get("relus"), "drelus": record.get("drelus"),
           "epochs_used": record["compute"]["used"]["epochs"], "seconds_used": record["compute"]["used"]["seconds"]}
    for key, value in (record.get("metrics") or {}).items():
        if isinstance(value, (int, float)) and not isinstance(value, bool):
            row[key] = value
    if record.get("published"):
        row["paper_accuracy"] = record["published"]["accuracy"]
    cost = record.get("secure_cost")
    if cost:
        row["comm_mb"], row["rounds"] = cost["comm_mb"], cost["rounds"]
        for net, seconds in cost["latency_s"].items():
            row[f"latency_{net}"] = seconds
    return row


def load_runs(run_dirs: list[Path]) -> tuple[dict, list[dict]]:
    """The suite metadata shared by ``run_dirs`` and all their entry records."""
    metas = []
    for run_dir in map(Path, run_dirs):
        meta_path = run_dir / "suite.json"
        if not meta_path.exists():
            raise BenchbedError(f"{run_dir} is not a benchbed run directory (no suite.json); pass the --out of `benchbed run`")
        meta = read_json(meta_path)
        meta["run_dir"] = str(run_dir)
        for name in ("data", "teacher"):
            if (run_dir / f"{name}.json").exists():
                meta[name] = read_json(run_dir / f"{name}.json")
        metas.append(meta)
    if len({m["fingerprint"] for m in metas}) > 1:
        raise BenchbedError("these runs are of different suite configurations and cannot be merged: "
                            + ", ".join(f"{m['run_dir']} ({m['suite']['name']})" for m in metas))
    records, seen = [], {}
    for meta in metas:
        for record in entry_records(Path(meta["run_dir"])):
            if record["entry"] in seen:
                raise BenchbedError(f"entry {record['entry']} is in both {seen[record['entry']]} and {meta['run_dir']}; "
                                    "merge runs of different seeds")
            seen[record["entry"]] = meta["run_dir"]
            records.append(record)
    if not records:
        raise BenchbedError(f"no entry records in {', '.join(map(str, run_dirs))}; run the suite first")
    merged = dict(metas[0])
    merged["seeds"] = sorted({r["seed"] for r in records})
    merged["run_dirs"] = [m["run_dir"] for m in metas]
    return merged, records


def table(records: list[dict]) -> pd.DataFrame:
    """One row per (method, budget): means and standard deviations over the finished seeds."""
    frame = pd.DataFrame([_flatten(r) for r in records if r["status"] == "ok"])
    if frame.empty:
        return frame
    frame["budget"] = frame["budget"].astype("Int64")
    numeric = [c for c in frame.columns if c not in ("method", "budget", "seed", "status")]
    grouped = frame.groupby(["method", "budget"], dropna=False)
    mean = grouped[numeric].mean()
    std = grouped[numeric].std(ddof=1)
    out = mean.join(std.add_suffix("_std"))
    out["seeds"] = grouped["seed"].count()
    if "paper_accuracy" in out.columns:
        out["paper_delta"] = out["clean_accuracy"] - out["paper_accuracy"]
    out = out.reset_index()
    return out.sort_values(["budget", "clean_accuracy"], ascending=[True, False], na_position="last")


def _cell(row: pd.Series, key: str) -> str:
    value, spread = row.get(key), row.get(f"{key}_std")
    if value is None or (isinstance(value, float) and math.isnan(value)):
        return "—"
    scale, digits = (100, 2) if key in PERCENT else (1, 0 if key in INTEGER or abs(value) >= 100 else 3)
    text = f"{value * scale:,.{digits}f}"
    if spread and not (isinstance(spread, float) and math.isnan(spread)) and row["seeds"] > 1:
        text += f" ± {spread * scale:,.{digits}f}"
    return text


def _columns(frame: pd.DataFrame, networks: list[str]) -> list[tuple[str, str]]:
    cols = [("relus", "ReLUs"), ("drelus", "DReLUs"), ("clean_accuracy", "clean acc %")]
    if "paper_accuracy" in frame.columns:
        cols += [("paper_accuracy", "paper's acc %"), ("paper_delta", "Δ vs paper (pp)")]
    cols += [(k, METRIC_TITLES.get(k, k)) for k in frame.columns
             if k not in ("relus", "drelus", "clean_accuracy", "val_accuracy", "epochs_used", "seconds_used", "seeds",
                          "comm_mb", "rounds", "budget", "method", "paper_accuracy", "paper_delta")
             and not k.endswith("_std") and not k.startswith("latency_")]
    if "comm_mb" in frame.columns:
        cols += [("comm_mb", "comm MB"), ("rounds", "rounds")] + [(f"latency_{n}", f"{n} s") for n in networks]
    cols += [("epochs_used", "epochs used"), ("seconds_used", "seconds used")]
    return cols


def _compute_line(compute: dict) -> str:
    if compute.get("paper"):
        return ("- **Protocol: paper recipes.** Every method runs its published recipe (epochs, schedules, images per "
                "probe, teacher) without a compute limit; the compute each entry used is in the table, in epochs "
                "of training-image equivalents. Read it beside the matched-compute suite.")
    limits = ", ".join(f"{k} {v:g}" for k, v in compute.items() if k != "paper" and v is not None)
    return (f"- **Protocol: matched compute.** Every entry (mask search + finetune) gets the same budget: {limits}. "
            "Parts of a method's published recipe that did not fit are listed under *Cut to fit the budget*.")


def protocol_lines(meta: dict, records: list[dict]) -> list[str]:
    suite, data, teacher = meta["suite"], meta.get("data", {}), meta.get("teacher", {})
    first = next((r for r in records if r.get("versions")), {})
    versions = first.get("versions", {})
    commit = first.get("source_commit", {})
    hardware = first.get("hardware", {})
    cost = suite["secure_cost"]
    teacher_text = (f"trained here ({suite['teacher']['recipe']['epochs']:g} epochs, seed {suite['teacher']['seed']})"
                    if suite["teacher"].get("recipe") else f"loaded from {suite['teacher']['checkpoint']}")
    lines = [
        f"- **Data:** {suite['dataset']['name']}: {data.get('train', '?')} train / {data.get('val', '?')} validation "
        f"(split seed {suite['dataset']['split_seed']}) / {data.get('test', '?')} test images. "
        "Checkpoints are selected on validation; test is read once, at the end.",
        f"- **Model:** {suite['model']['name']}; ReLU convention: "
        + ("every ReLU counted, the stem ReLU included (the knapsack/RLNet model)." if suite["model"]["stem_relu"]
           else "built without a stem ReLU, every ReLU counted (the SNL/AutoReP model)."),
        f"- **Teacher:** one all-ReLU teacher shared by every entry, {teacher_text}; "
        f"test accuracy {100 * teacher.get('clean_accuracy', float('nan')):.2f}%.",
        f"- **Budgets (DReLUs over counted sites):** {', '.join(f'{b:,}' for b in suite['budgets'])}.",
        _compute_line(suite["compute"]),
        f"- **Seeds:** {', '.join(map(str, meta['seeds']))}; cells are mean ± sample std over seeds.",
    ]
    corrupted = next((r["metrics"]["corruptions"] for r in records if (r.get("metrics") or {}).get("corruptions")), None)
    if corrupted:
        source = corrupted["source"] if isinstance(corrupted["source"], str) else "official and generated"
        grey = source == "generated" and (data.get("input_shape") or [3])[0] == 1
        lines.append(f"- **Corruptions:** {len(corrupted['per_corruption'])} CIFAR-C corruptions × severities "
                     f"{', '.join(map(str, corrupted['severities']))} on {corrupted['images']:,} test images, "
                     + ("generated, applied per channel to grayscale." if grey else f"{source}."))
    if cost["enabled"]:
        nets = "; ".join(f"{n} {v['bandwidth_mbps']:g} Mbit/s, RTT {v['rtt_ms']:g} ms" for n, v in cost["networks"].items())
        lines.append(f"- **3PC cost:** profile `{cost['profile']}` (whole inference: linear and non-linear layers; "
                     f"latency = local compute + bytes / bandwidth + rounds · RTT); {nets}.")
    lines.append(f"- **Hardware:** {hardware.get('gpu', hardware.get('device', '?'))}, "
                 f"{hardware.get('cpu_count', '?')} CPUs; **versions:** "
                 + ", ".join(f"{k} {v}" for k, v in versions.items())
                 + f"; **commit:** {commit.get('commit') or 'unknown'}{' (dirty)' if commit.get('dirty') else ''}.")
    return lines


def render(run_dirs: list[Path], out_dir: Path, stem: str | None = None, overwrite: bool = True) -> Path:
    """Write ``<stem>.md``, ``<stem>.json`` and ``<stem>.png`` into ``out_dir``; return the markdown path.
    Without ``overwrite``, a leaderboard already there is an error rather than silently replaced."""
    meta, records = load_runs([Path(d) for d in run_dirs])
    stem = stem or meta["suite"]["name"]
    out_dir = Path(out_dir)
    if not overwrite and (out_dir / f"{stem}.md").exists():
        raise BenchbedError(f"{out_dir / f'{stem}.md'} exists; pass --overwrite to replace it, or --to another folder")
    out_dir.mkdir(parents=True, exist_ok=True)
    frame = table(records)
    networks = list(meta["suite"]["secure_cost"]["networks"]) if meta["suite"]["secure_cost"]["enabled"] else []
    lines = [f"# Leaderboard: {meta['suite']['name']}", ""]
    if meta["suite"].get("description"):
        lines += [meta["suite"]["description"], ""]
    lines += ["## Protocol", ""] + protocol_lines(meta, records) + ["", "## Results", ""]
    if frame.empty:
        lines.append("No entry finished.")
    else:
        cols = _columns(frame, networks)
        body = [[row["method"], "—" if pd.isna(row["budget"]) else f"{int(row['budget']):,}", int(row["seeds"])]
                + [_cell(row, key) for key, _ in cols] for _, row in frame.iterrows()]
        lines.append(tabulate(body, headers=["method", "budget", "seeds"] + [t for _, t in cols],
                              tablefmt="github", disable_numparse=True))
    cut = [r for r in records if r.get("cuts")]
    if cut:
        lines += ["", "## Cut to fit the budget", ""]
        lines += [f"- `{r['entry']}`: " + "; ".join(f"{part}: {why}" for part, why in r["cuts"].items()) for r in cut]
    unfinished = [r for r in records if r["status"] != "ok"]
    if unfinished:
        lines += ["", "## Entries that did not finish", ""]
        lines += [f"- `{r['entry']}`: **{r['status']}** — {r.get('error', '')}" for r in unfinished]
    tested = claims.assess(records)
    lines += [""] + claims.markdown(tested)
    md_path = out_dir / f"{stem}.md"
    md_path.write_text("\n".join(lines) + "\n")
    write_json(out_dir / f"{stem}.json", {
        "suite": meta["suite"], "seeds": meta["seeds"], "run_dirs": meta["run_dirs"], "claims": claims.as_json(tested),
        "protocol": protocol_lines(meta, records),
        "rows": [] if frame.empty else frame.astype(object).where(frame.notna(), None).to_dict(orient="records"),
        "entries": [{k: r.get(k) for k in ("entry", "method", "budget", "seed", "status", "error", "relus", "drelus",
                                           "metrics", "secure_cost", "compute", "notes")} for r in records]})
    if not frame.empty:
        _plot(frame, out_dir / f"{stem}.png", meta["suite"]["name"])
    return md_path


def _plot(frame: pd.DataFrame, path: Path, title: str) -> None:
    fig = figure(frame, title)
    fig.savefig(path)
    plt.close(fig)


def figure(frame: pd.DataFrame, title: str) -> Figure:
    fig, ax = plt.subplots(figsize=(6.4, 4.2), dpi=120)
    for method, rows in frame.groupby("method"):
        rows = rows.sort_values("drelus")
        err = 100 * rows["clean_accuracy_std"].fillna(0)
        if rows["budget"].isna().all():
            ax.axhline(100 * rows["clean_accuracy"].iloc[0], ls="--", color="grey", lw=1,
                       label=f"{method} ({int(rows['drelus'].iloc[0]):,} ReLUs)")
        else:
            ax.errorbar(rows["drelus"], 100 * rows["clean_accuracy"], yerr=err, marker="o", capsize=3, label=method)
    # symlog: log-like for the budgets, and entries with no DReLU at all still get a place, at 0.
    ax.set_xscale("symlog", linthresh=1)
    ax.set_xlim(left=0)
    ax.set_xlabel("DReLUs per image (counted sites)")
    ax.set_ylabel("clean test accuracy (%)")
    ax.set_title(f"{title}: accuracy vs ReLU budget")
    ax.grid(alpha=0.3, which="both")
    ax.legend(fontsize=8)
    fig.tight_layout()
    return fig
