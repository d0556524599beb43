"""Leaderboards from run records: markdown (tabulate), a JSON twin, a self-contained HTML page and a
plot (accuracy against DReLUs, and against secure latency with the Pareto front).

Several runs of one suite (typically different seeds) merge into one board: every number is the
mean over seeds ± the sample standard deviation; with one seed, an accuracy carries its 95%
binomial (Wilson) interval on the number of images it was measured on, so readers do not rank noise."""
from __future__ import annotations

import hashlib
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
from benchbed.html_board import write_html
from benchbed.records import entry_records, read_json, write_json

# Metric keys the core knows how to title; any other scalar metric gets a column under its own name.
METRIC_TITLES = {"clean_accuracy": "clean acc %", "corruption_accuracy": "corruption acc %",
                 "pgd_accuracy": "PGD acc %", "clean_accuracy_adv_bn": "clean acc, adv BN %"}
# Accuracies, with the key of the image count each was measured on (for the one-seed interval).
ACCURACIES = {"clean_accuracy": "n_test", "clean_accuracy_adv_bn": "n_test", "pgd_accuracy": "n_pgd",
              "corruption_accuracy": "n_corruption", "paper_accuracy": None, "paper_delta": None}
NOT_SHOWN = {"method", "label", "budget", "seed", "status", "seeds", "val_accuracy", "n_test", "n_pgd", "n_corruption"}
# Stable colours: the built-in methods keep theirs in every plot; others get one from their name.
PALETTE = {"all_relu": "#555555", "random_mask": "#9e9e9e", "snl": "#1f77b4", "autorep": "#ff7f0e",
           "knapsack": "#2ca02c", "rlnet": "#d62728", "deepreduce": "#9467bd"}
EXTRA_COLOURS = ["#8c564b", "#e377c2", "#17becf", "#bcbd22", "#7f7f7f", "#393b79", "#637939", "#843c39"]
Z95 = 1.959964


def colour(method: str) -> str:
    """The method's colour, the same in every plot of every run."""
    if method in PALETTE:
        return PALETTE[method]
    return EXTRA_COLOURS[int(hashlib.sha256(method.encode()).hexdigest(), 16) % len(EXTRA_COLOURS)]


def wilson_halfwidth(p: float, n: int) -> float:
    """Half-width of the 95% Wilson score interval of a proportion ``p`` measured on ``n`` trials."""
    if not n:
        return float("nan")
    denominator = 1 + Z95 ** 2 / n
    return Z95 * math.sqrt(p * (1 - p) / n + Z95 ** 2 / (4 * n * n)) / denominator


def _costs(record: dict) -> dict[str, dict]:
    """The entry's secure cost per protocol profile (a record priced under one profile holds it bare)."""
    cost = record.get("secure_cost") or {}
    if "comm_mb" in cost:
        return {cost.get("profile", "aby3"): cost}
    return {name: c for name, c in cost.items() if isinstance(c, dict) and "comm_mb" in c}


def _profiles(records: list[dict]) -> list[str]:
    return list(dict.fromkeys(p for r in records for p in _costs(r)))


def _flatten(record: dict, n_test: int | None) -> dict[str, Any]:
    metrics = record.get("metrics") or {}
    row = {"method": record["method"], "label": record.get("label", record["method"]), "budget": record["budget"],
           "seed": record["seed"], "status": record["status"], "relus": record.get("relus"),
           "drelus": record.get("drelus"), "epochs_used": record["compute"]["used"]["epochs"],
           "n_test": n_test, "n_pgd": (metrics.get("pgd") or {}).get("images"),
           "n_corruption": (metrics.get("corruptions") or {}).get("images")}
    for key, value in metrics.items():
        if isinstance(value, (int, float)) and not isinstance(value, bool):
            row[key] = value
    if record.get("published"):
        row["paper_accuracy"] = record["published"]["accuracy"]
    for profile, cost in _costs(record).items():
        row[f"comm_mb@{profile}"], row[f"rounds@{profile}"] = cost["comm_mb"], cost["rounds"]
        for net, seconds in cost["latency_s"].items():
            row[f"latency_{net}@{profile}"] = seconds
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


def table(records: list[dict], n_test: int | None = None) -> pd.DataFrame:
    """One row per (method, budget): means, sample standard deviations over the finished seeds and, for
    one seed, the 95% binomial interval of each accuracy."""
    frame = pd.DataFrame([_flatten(r, n_test) for r in records if r["status"] == "ok"])
    if frame.empty:
        return frame
    frame["budget"] = frame["budget"].astype("Int64")
    numeric = [c for c in frame.columns if c not in ("method", "label", "budget", "seed", "status")]
    frame[numeric] = frame[numeric].apply(pd.to_numeric, errors="coerce")
    grouped = frame.groupby(["method", "label", "budget"], dropna=False)
    out = grouped[numeric].mean().join(grouped[numeric].std(ddof=1).add_suffix("_std"))
    out["seeds"] = grouped["seed"].count()
    if "paper_accuracy" in out.columns:
        out["paper_delta"] = out["clean_accuracy"] - out["paper_accuracy"]
    for key, n_key in ACCURACIES.items():
        if key in out.columns and n_key in out.columns:
            out[f"{key}_ci"] = [wilson_halfwidth(p, int(n)) if pd.notna(p) and pd.notna(n) else float("nan")
                                for p, n in zip(out[key], out[n_key])]
    out = out.reset_index()
    return out.sort_values(["budget", "clean_accuracy"], ascending=[True, False], na_position="last")


def _format(key: str, value: float) -> str:
    if key in ACCURACIES:
        return f"{100 * value:.2f}"
    if key in ("relus", "drelus") or key.startswith("rounds@"):
        return f"{value:,.0f}"
    if key.startswith("comm_mb@"):
        return f"{value:.3f}"
    if key.startswith("latency_"):
        return f"{value:.3f}" if value < 100 else f"{value:,.1f}"
    if key == "epochs_used":
        return f"{value:.2f}"
    return f"{value:.4g}"


def _cell(row: pd.Series, key: str) -> str:
    value = row.get(key)
    if value is None or (isinstance(value, float) and math.isnan(value)) or value is pd.NA:
        return "—"
    text = _format(key, value)
    spread = row.get(f"{key}_std") if row["seeds"] > 1 else row.get(f"{key}_ci")
    if spread is not None and not (isinstance(spread, float) and math.isnan(spread)) and spread > 0:
        text += f" ± {_format(key, spread)}"
    return text


def _columns(frame: pd.DataFrame, profiles: list[str], networks: list[str]) -> list[tuple[str, str]]:
    cols = [("relus", "ReLUs"), ("drelus", "DReLUs"), ("clean_accuracy", "clean acc %")]
    if "paper_accuracy" in frame.columns:
        cols += [("paper_accuracy", "paper's acc %"), ("paper_delta", "Δ vs paper (pp)")]
    known = {k for k, _ in cols} | {"paper_accuracy", "paper_delta", "epochs_used"} | NOT_SHOWN
    cols += [(k, METRIC_TITLES.get(k, k)) for k in frame.columns
             if k not in known and "@" not in k and not k.endswith(("_std", "_ci"))]
    for profile in profiles:
        if f"comm_mb@{profile}" in frame.columns:
            cols += [(f"comm_mb@{profile}", f"{profile} MB"), (f"rounds@{profile}", f"{profile} rounds")]
            cols += [(f"latency_{n}@{profile}", f"{profile} {n} s") for n in networks]
    return cols + [("epochs_used", "compute used (epochs)")]


def explanation_lines(frame: pd.DataFrame, profiles: list[str], n_test: int | None) -> list[str]:
    """What the columns mean, so that the table reads without the source code."""
    lines = ["- **ReLUs** are the pixels whose output passes through a comparison-gated nonlinearity; **DReLUs** are "
             "the secure comparisons one image costs. They differ for patch ReLUs (knapsack: one DReLU gates a whole "
             "patch), so budgets are in DReLUs.",
             "- **Accuracies** are on the test split, read once after the weights were chosen on validation. "
             + (f"One test image is {100 / n_test:.2f} points. " if n_test else "")
             + "With one seed, ± is the 95% binomial (Wilson) interval on the images the accuracy was measured on; "
               "with several, ± is the sample standard deviation over seeds. Differences inside them are noise."]
    if "clean_accuracy_adv_bn" in frame.columns:
        lines.append("- **clean acc, adv BN** is a dual-BN model's (RLNet's) clean accuracy through its adversarial "
                     "BatchNorms, the path its PGD accuracy is measured on; the other accuracies use the clean BNs.")
    if profiles:
        lines.append("- **MB** is the communication of one inference of one image, summed over all parties (the figure "
                     "papers report); **rounds** are its sequential communication rounds; **s** is latency per image "
                     "on each network, whose bandwidth term is priced on the busiest party's bytes where the profile "
                     "records them (parties send in parallel).")
    lines.append("- **compute used** is the entry's whole mask search and finetune in epochs of training-image "
                 "equivalents (a forward-only image counts a third), the unit the matched-compute budget is set in. "
                 "Wall time is in the JSON records; it depends on the machine and its load, so it is not ranked here.")
    return lines


def _attack_lines(records: list[dict]) -> list[str]:
    """The PGD settings and the outcome of its two sanity checks over every entry."""
    attacked = [r for r in records if (r.get("metrics") or {}).get("pgd")]
    if not attacked:
        return []
    pgd = attacked[0]["metrics"]["pgd"]
    flagged = [r["entry"] for r in attacked if r["metrics"]["pgd"].get("gradient_masking_suspected")]
    checks = ("both sanity checks passed on every entry (adversarial ≤ clean accuracy; the full attack no weaker "
              "than a short one beyond noise)" if not flagged else
              f"a sanity check failed — gradient masking suspected — on {', '.join(flagged)}")
    return [f"- **PGD:** L∞, ε = {pgd['eps']:.4g}, step {pgd['step']:.4g}, {pgd['steps']} steps, "
            f"{'random start' if pgd['random_start'] else 'no random start'}, on the first {pgd['images']:,} test "
            f"images, in pixel space [0, 1] before normalisation, in eval mode; {checks}."]


def grid_lines(records: list[dict]) -> list[str]:
    """Mask × finetune: each accuracy (mean over seeds) of every pairing in the run, one grid per budget."""
    finished = [r for r in records if r["status"] == "ok" and r["budget"] is not None]
    if not any(r.get("composition") for r in finished):
        return []
    cells: dict[tuple[str, int, str, str], list[float]] = {}
    for r in finished:
        part = r.get("composition") or {"mask_method": r["method"], "finetune_method": r["method"], "bypass": "identity"}
        mask = part["mask_method"] + (" + DaPa" if part.get("bypass") == "dapa" else "")
        for metric in ("clean_accuracy", "pgd_accuracy", "corruption_accuracy"):
            if metric in r["metrics"]:
                cells.setdefault((metric, r["budget"], mask, part["finetune_method"]), []).append(r["metrics"][metric])
    lines = ["## Mask × finetune", "",
             "Each method's mask (rows) trained by each method's finetune (columns), under the same compute budget; "
             "the diagonal is each method as published. Mean over seeds, %."]
    for metric, budget in sorted({(m, b) for m, b, _, _ in cells}, key=lambda k: (k[1], list(METRIC_TITLES).index(k[0]))):
        masks = sorted({m for k, b, m, _ in cells if (k, b) == (metric, budget)})
        finetunes = sorted({f for k, b, _, f in cells if (k, b) == (metric, budget)})
        body = [[m] + [f"{100 * sum(v) / len(v):.2f}" if (v := cells.get((metric, budget, m, f))) else "—"
                       for f in finetunes] for m in masks]
        lines += ["", f"**{METRIC_TITLES[metric]}, {budget:,} DReLUs**", "",
                  tabulate(body, headers=["mask ↓ / finetune →"] + finetunes, tablefmt="github", disable_numparse=True)]
    return lines


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
        f"- **Seeds:** {', '.join(map(str, meta['seeds']))}.",
    ]
    lines += _attack_lines(records)
    corrupted = next((r["metrics"]["corruptions"] for r in records if (r.get("metrics") or {}).get("corruptions")), None)
    if corrupted:
        source = corrupted["source"] if isinstance(corrupted["source"], str) else "official and generated"
        grey = source == "generated" and (data.get("input_shape") or [3])[0] == 1
        lines.append(f"- **Corruptions:** {len(corrupted['per_corruption'])} CIFAR-C corruptions × severities "
                     f"{', '.join(map(str, corrupted['severities']))} on {corrupted['images']:,} test images, "
                     + ("generated, applied per channel to grayscale." if grey else f"{source}."))
    if cost["enabled"]:
        nets = "; ".join(f"{n} {v['bandwidth_mbps']:g} Mbit/s, RTT {v['rtt_ms']:g} ms" for n, v in cost["networks"].items())
        lines.append(f"- **Secure cost:** {', '.join(f'`{p}`' for p in _profiles(records))} (one inference of one "
                     "image, whole network: linear and non-linear layers; latency = local compute + the busiest party's "
                     f"bytes / bandwidth + rounds · RTT); {nets}.")
    lines.append(f"- **Hardware:** {hardware.get('gpu', hardware.get('device', '?'))}, "
                 f"{hardware.get('cpu_count', '?')} CPUs; **versions:** "
                 + ", ".join(f"{k} {v}" for k, v in versions.items())
                 + f"; **commit:** {commit.get('commit') or 'unknown'}{' (dirty)' if commit.get('dirty') else ''}.")
    return lines


def render(run_dirs: list[Path], out_dir: Path, stem: str | None = None, overwrite: bool = True) -> Path:
    """Write ``<stem>.md``, ``.json``, ``.png`` and ``.html`` into ``out_dir``; return the markdown path.
    Without ``overwrite``, a leaderboard already there is an error rather than silently replaced."""
    meta, records = load_runs([Path(d) for d in run_dirs])
    stem = stem or meta["suite"]["name"]
    out_dir = Path(out_dir)
    if not overwrite and (out_dir / f"{stem}.md").exists():
        raise BenchbedError(f"{out_dir / f'{stem}.md'} exists; pass --overwrite to replace it, or --to another folder")
    out_dir.mkdir(parents=True, exist_ok=True)
    n_test = (meta.get("data") or {}).get("test")
    frame = table(records, n_test)
    profiles = _profiles(records)
    networks = list(meta["suite"]["secure_cost"]["networks"]) if meta["suite"]["secure_cost"]["enabled"] else []
    protocol = protocol_lines(meta, records)
    explained = [] if frame.empty else explanation_lines(frame, profiles, n_test)
    title = f"Leaderboard: {meta['suite']['name']}"
    lines = [f"# {title}", ""]
    if meta["suite"].get("description"):
        lines += [meta["suite"]["description"], ""]
    lines += ["## Protocol", ""] + protocol + ["", "## Results", ""]
    cols = [] if frame.empty else _columns(frame, profiles, networks)
    if frame.empty:
        lines.append("No entry finished.")
    else:
        body = [[row["label"], "—" if pd.isna(row["budget"]) else f"{int(row['budget']):,}", int(row["seeds"])]
                + [_cell(row, key) for key, _ in cols] for _, row in frame.iterrows()]
        lines.append(tabulate(body, headers=["method", "budget", "seeds"] + [t for _, t in cols],
                              tablefmt="github", disable_numparse=True))
        lines += ["", "### How to read the table", ""] + explained
    extra = grid_lines(records)
    cut = [r for r in records if r.get("cuts")]
    if cut:
        extra += ["", "## Cut to fit the budget", ""]
        extra += [f"- `{r['entry']}`: " + "; ".join(f"{part}: {why}" for part, why in r["cuts"].items()) for r in cut]
    unfinished = [r for r in records if r["status"] != "ok"]
    if unfinished:
        extra += ["", "## Entries that did not finish", ""]
        extra += [f"- `{r['entry']}`: **{r['status']}** — {r.get('error', '')}" for r in unfinished]
    tested = claims.assess(records)
    extra += [""] + claims.markdown(tested)
    lines += [""] + extra
    md_path = out_dir / f"{stem}.md"
    md_path.write_text("\n".join(lines) + "\n")
    write_json(out_dir / f"{stem}.json", {
        "suite": meta["suite"], "seeds": meta["seeds"], "run_dirs": meta["run_dirs"], "claims": claims.as_json(tested),
        "protocol": protocol, "how_to_read": explained, "columns": [{"key": k, "title": t} for k, t in cols],
        "rows": [] if frame.empty else frame.astype(object).where(frame.notna(), None).to_dict(orient="records"),
        "entries": [{k: r.get(k) for k in ("entry", "method", "label", "budget", "seed", "status", "error", "relus",
                                           "drelus", "metrics", "secure_cost", "compute", "notes", "cuts",
                                           "composition", "published")} for r in records]})
    images = []
    if not frame.empty:
        images.append(out_dir / f"{stem}.png")
        fig = figure(frame, meta, profiles)
        fig.savefig(images[0])
        plt.close(fig)
    rows = [] if frame.empty else [
        [(row["label"], row["label"]), ("—" if pd.isna(row["budget"]) else f"{int(row['budget']):,}",
                                        None if pd.isna(row["budget"]) else int(row["budget"])),
         (str(int(row["seeds"])), int(row["seeds"]))]
        + [(_cell(row, k), None if pd.isna(row.get(k)) else float(row[k])) for k, _ in cols]
        for _, row in frame.iterrows()]
    write_html(out_dir / f"{stem}.html", title, protocol + explained,
               [("method", "method"), ("budget", "budget"), ("seeds", "seeds")] + cols, rows, images, extra)
    return md_path


def settings_text(meta: dict) -> str:
    suite = meta["suite"]
    compute = suite["compute"]
    budget = ("paper recipes" if compute.get("paper") else
              ", ".join(f"{v:g} {k}" for k, v in compute.items() if k != "paper" and v is not None) + " per entry")
    return (f"{suite['dataset']['name']} · {suite['model']['name']} ({'with' if suite['model']['stem_relu'] else 'no'} "
            f"stem ReLU) · {budget} · seeds {', '.join(map(str, meta['seeds']))}")


def figure(frame: pd.DataFrame, meta: dict, profiles: list[str]) -> Figure:
    """Accuracy against DReLUs (the budgets as ticks) and, where a secure cost was priced, against the WAN
    latency of the first profile with the Pareto front of every entry."""
    latency = next((f"latency_WAN@{p}" for p in profiles if f"latency_WAN@{p}" in frame.columns), None)
    fig, axes = plt.subplots(1, 2 if latency else 1, figsize=(12 if latency else 6.4, 4.6), dpi=110, squeeze=False)
    ax = axes[0][0]
    for label, rows in frame.groupby("label"):
        rows = rows.sort_values("drelus")
        method = rows["method"].iloc[0]
        err = 100 * rows["clean_accuracy_std"].where(rows["seeds"] > 1, rows.get("clean_accuracy_ci")).fillna(0)
        if rows["budget"].isna().all():
            ax.axhline(100 * rows["clean_accuracy"].iloc[0], ls="--", color=colour(method), lw=1,
                       label=f"{label} ({int(rows['drelus'].iloc[0]):,} DReLUs)")
        else:
            ax.errorbar(rows["drelus"], 100 * rows["clean_accuracy"], yerr=err, marker="o", capsize=3,
                        color=colour(method), label=label)
    # symlog: log-like for the budgets, and entries with no DReLU at all still get a place, at 0.
    ax.set_xscale("symlog", linthresh=1)
    ax.set_xlim(left=0)
    budgets = sorted({int(b) for b in frame["budget"].dropna()})
    if budgets:
        ax.set_xticks(budgets)
        ax.set_xticklabels([f"{b:,}" for b in budgets], rotation=30)
        ax.minorticks_off()
    ax.set_xlabel("DReLUs per image (ticks: the suite's budgets)")
    ax.set_ylabel("clean test accuracy (%)")
    ax.set_title("accuracy vs DReLUs")
    ax.grid(alpha=0.3)
    ax.legend(fontsize=7)
    if latency:
        right = axes[0][1]
        points = frame.dropna(subset=[latency, "clean_accuracy"])
        for label, rows in points.groupby("label"):
            right.scatter(rows[latency], 100 * rows["clean_accuracy"], color=colour(rows["method"].iloc[0]),
                          label=label, s=28)
        front, best = [], -1.0
        for _, row in points.sort_values([latency, "clean_accuracy"], ascending=[True, False]).iterrows():
            if row["clean_accuracy"] > best:
                best = row["clean_accuracy"]
                front.append((row[latency], 100 * best))
        if front:
            right.step(*zip(*front), where="post", color="black", lw=1, alpha=0.6, label="Pareto front")
        right.set_xscale("log")
        right.set_xlabel(f"WAN latency per image, s ({latency.split('@')[1]})")
        right.set_ylabel("clean test accuracy (%)")
        right.set_title("accuracy vs secure cost")
        right.grid(alpha=0.3, which="both")
        right.legend(fontsize=7)
    fig.suptitle(f"{meta['suite']['name']}: {settings_text(meta)}", fontsize=9)
    fig.tight_layout()
    return fig
