"""The leaderboard's figure: accuracy against DReLUs (the budgets as ticks) and, where a secure cost was
priced, against secure latency with the Pareto front, each point labelled with its budget. Every
method keeps its colour in every plot; its rows (splits, compositions) differ in marker and line."""
from __future__ import annotations

import hashlib
import io

import matplotlib
import pandas as pd

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402  (after choosing the headless backend)
from matplotlib.figure import Figure  # noqa: E402

from benchbed.files import atomic_write  # noqa: E402
from benchbed.report.markdown import settings_text  # noqa: E402

# Stable colours: the built-in methods keep theirs in every plot; others get one from their name.
PALETTE = {"all_relu": "#555555", "random_mask": "#9e9e9e", "snl": "#1f77b4", "autorep": "#ff7f0e",
           "knapsack": "#2ca02c", "rlnet": "#d62728", "deepreduce": "#9467bd"}
EXTRA_COLOURS = ["#8c564b", "#e377c2", "#17becf", "#bcbd22", "#7f7f7f", "#393b79", "#637939", "#843c39"]


def colour(method: str) -> str:
    """The method's colour, the same in every plot of every run."""
    if method in PALETTE:
        return PALETTE[method]
    return EXTRA_COLOURS[int(hashlib.sha256(method.encode()).hexdigest(), 16) % len(EXTRA_COLOURS)]


MARKERS, LINES = ["o", "s", "^", "D", "v", "P"], ["-", "--", ":", "-."]


def styles(frame: pd.DataFrame) -> dict[str, dict]:
    """Per row label: its method's colour, and a marker and line style of its own among the labels of
    that method (``snl`` and ``random_mask → snl`` differ in colour; two splits of one method in marker)."""
    out = {}
    for method, rows in frame.groupby("method"):
        for i, label in enumerate(sorted(rows["label"].unique())):
            out[label] = {"color": colour(method), "marker": MARKERS[i % len(MARKERS)], "ls": LINES[i % len(LINES)]}
    return out


def figure(frame: pd.DataFrame, meta: dict, profiles: list[str]) -> Figure:
    """Accuracy against DReLUs (the budgets as ticks) and, where a secure cost was priced, against the WAN
    latency of the first profile with the Pareto front of every entry."""
    latency = next((f"latency_WAN@{p}" for p in profiles if f"latency_WAN@{p}" in frame.columns), None)
    fig, axes = plt.subplots(1, 2 if latency else 1, figsize=(12 if latency else 6.4, 4.6), dpi=110, squeeze=False)
    ax = axes[0][0]
    style = styles(frame)
    for label, rows in frame.groupby("label"):
        rows = rows.sort_values("drelus")
        err = 100 * rows["clean_accuracy_std"].where(rows["seeds"] > 1, rows.get("clean_accuracy_ci")).fillna(0)
        if rows["budget"].isna().all():
            ax.axhline(100 * rows["clean_accuracy"].iloc[0], ls="--", color=style[label]["color"], lw=1,
                       label=f"{label} ({int(rows['drelus'].iloc[0]):,} DReLUs)")
        else:
            ax.errorbar(rows["drelus"], 100 * rows["clean_accuracy"], yerr=err, capsize=3, label=label, **style[label])
    budgeted = frame[frame["budget"].notna()]["drelus"].dropna()
    if len(budgeted) and (budgeted > 0).all():  # a log axis around the budgets, with room on both sides
        ax.set_xscale("log")
        ax.set_xlim(budgeted.min() / 1.6, budgeted.max() * 1.6)
    elif len(budgeted):  # an entry at 0 DReLUs: linear up to half the smallest positive count, log above
        positive = budgeted[budgeted > 0]
        ax.set_xscale("symlog", linthresh=max(1.0, positive.min() / 2) if len(positive) else 1.0)
        ax.set_xlim(left=0, right=budgeted.max() * 1.6)
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
            right.scatter(rows[latency], 100 * rows["clean_accuracy"], color=style[label]["color"],
                          marker=style[label]["marker"], label=label, s=28)
            for _, row in rows.iterrows():  # which point is which budget
                right.annotate("no budget" if pd.isna(row["budget"]) else f"{int(row['budget']):,}",
                               (row[latency], 100 * row["clean_accuracy"]), xytext=(3, 3),
                               textcoords="offset points", fontsize=6, color=style[label]["color"])
        front, best = [], -1.0
        for _, row in points.sort_values([latency, "clean_accuracy"], ascending=[True, False]).iterrows():
            if row["clean_accuracy"] > best:
                best = row["clean_accuracy"]
                front.append((row[latency], 100 * best))
        if front:
            right.step(*zip(*front), where="post", color="black", lw=1, alpha=0.6, label="Pareto front")
        right.set_xscale("log")
        right.set_xlabel(f"WAN network latency per image, s ({latency.split('@')[1]}; compute apart)")
        right.set_ylabel("clean test accuracy (%)")
        right.set_title("accuracy vs secure cost")
        right.grid(alpha=0.3, which="both")
        right.legend(fontsize=7)
    fig.suptitle(f"{meta['suite']['name']}: {settings_text(meta)}", fontsize=9)
    fig.tight_layout()
    return fig


def save(fig: Figure, path) -> None:
    """Write ``fig`` as a PNG atomically (a reader never sees half an image)."""
    buffer = io.BytesIO()
    fig.savefig(buffer, format="png")
    plt.close(fig)
    atomic_write(path, lambda f: f.write(buffer.getvalue()))


def compute_figure(frame: pd.DataFrame, meta: dict) -> Figure:
    """Per ReLU budget, each method's clean accuracy against the compute its entries got (the suite's
    levels, log scale), ± its spread; reference rows as dashed lines."""
    rows = frame[frame["level"] != "—"]
    budgets = sorted({int(b) for b in rows["budget"].dropna()})
    fig, axes = plt.subplots(1, len(budgets), figsize=(4.2 * len(budgets), 4.0), dpi=110, squeeze=False)
    reference = frame[frame["level"] == "—"]
    style = styles(frame)
    for ax, budget in zip(axes[0], budgets):
        at = rows[rows["budget"] == budget]
        for label, line in at.groupby("label"):
            line = line.sort_values("level_epochs")
            err = 100 * line["clean_accuracy_std"].where(line["seeds"] > 1, line.get("clean_accuracy_ci")).fillna(0)
            ax.errorbar(line["level_epochs"], 100 * line["clean_accuracy"], yerr=err, capsize=3, label=label,
                        **style[label])
        for _, ref in reference.iterrows():
            ax.axhline(100 * ref["clean_accuracy"], ls="--", lw=1, color=colour(ref["method"]), label=ref["label"])
        ax.set_xscale("log", base=2)
        epochs = sorted(at["level_epochs"].dropna().unique())
        ax.set_xticks(epochs)
        ax.set_xticklabels([f"{e:g}" for e in epochs])
        ax.minorticks_off()
        ax.set_xlabel("compute per entry (epochs of training images)")
        ax.set_ylabel("clean test accuracy (%)")
        ax.set_title(f"{budget:,} DReLUs")
        ax.grid(alpha=0.3)
    axes[0][0].legend(fontsize=7)
    fig.suptitle(f"{meta['suite']['name']}: accuracy against compute · {settings_text(meta)}", fontsize=9)
    fig.tight_layout()
    return fig
