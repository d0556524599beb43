"""The board's columns, declared once. Each is a key of the aggregated table (``tables.table``) with
its title, unit, how its cells are written, whether higher is better, the group it belongs to (a
table of the markdown page, a set the HTML page shows or hides) and where it sits in a JSON row. The
markdown tables, the HTML page and the JSON twin all read this list; nothing downstream parses a key."""
from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Literal

import pandas as pd

Format = Literal["percent", "count", "megabytes", "seconds", "epochs"]
# The groups, in the order a reader meets them; a cost or setup column also names its profile.
GROUPS = {"counts": "ReLU counts", "accuracy": "clean accuracy", "robustness": "robustness",
          "paper": "paper's figures", "compute": "compute", "cost": "secure cost", "setup": "session setup"}
TITLES = {"clean_accuracy": "clean acc %"}  # the fallback where the records title no accuracy
ROBUSTNESS_ORDER = ("pgd_accuracy", "autoattack_accuracy", "corruption_accuracy")
# Titles in the ranked table, where width is short (the full title heads the HTML page's column).
SHORT = {"autoattack_accuracy": "AA %", "corruption_accuracy": "corr. %", "clean_accuracy_adv_bn": "adv-BN"}
# Figures few rows have (a dual-BN model's clean accuracy through its adversarial BNs): in the ranked
# table they are a row's flag, not a column of dashes.
FLAGGED = {"clean_accuracy_adv_bn"}


@dataclass(frozen=True)
class Column:
    key: str
    title: str
    format: Format
    group: str
    path: tuple[str, ...]  # where the figure sits in a JSON row (``board_json``)
    unit: str = ""
    higher_is_better: bool | None = None
    profile: str | None = None
    short: str = ""  # its title in the ranked table, where width is short
    ranked: bool = True  # a column of the ranked table (else, where it has a figure, one of the row's flags)

    @property
    def heading(self) -> str:
        return self.short or self.title

    def text(self, value: float) -> str:
        """``value`` as a cell writes it, at the precision its unit carries."""
        if self.format == "percent":  # 0.1 point: a tenth of a percent is more than most test splits resolve
            return f"{100 * value:.1f}"
        if self.format == "count":
            return f"{value:,.0f}"
        if self.format == "megabytes":
            return f"{value:.3f}"
        if self.format == "seconds":
            return f"{value:.3f}" if value < 100 else f"{value:,.1f}"
        return f"{value:.2f}"

    def as_json(self) -> dict:
        return {"key": self.key, "title": self.title, "unit": self.unit, "format": self.format,
                "higher_is_better": self.higher_is_better, "group": self.group, "profile": self.profile,
                "path": list(self.path)}


def missing(value) -> bool:
    return value is None or value is pd.NA or (isinstance(value, float) and math.isnan(value))


def spread(row: pd.Series, key: str) -> float | None:
    """The seeds' sample standard deviation (several seeds) or the 95% binomial half-width (one)."""
    value = row.get(f"{key}_std") if row["seeds"] > 1 else row.get(f"{key}_ci")
    return None if missing(value) or value <= 0 else float(value)


def cell(row: pd.Series, column: Column) -> str:
    """A table cell: the mean, ± its spread where one is known and shows at the cell's precision."""
    value = row.get(column.key)
    if missing(value):
        return "—"
    text = column.text(value)
    around = spread(row, column.key)
    if around is not None:
        shown = column.text(around)
        if shown.strip("0.,"):  # a spread that rounds to nothing says nothing
            text += f" ±{shown}"
    return text


def _accuracy(key: str, title: str) -> Column:
    group = "accuracy" if key == "clean_accuracy" else "robustness"
    return Column(key, title, "percent", group, ("metrics", key), unit="%", higher_is_better=True,
                  short=SHORT.get(key, title.replace(" acc %", " %")), ranked=key not in FLAGGED)


def declared(frame: pd.DataFrame, titles: dict[str, str], profile_names: list[str],
             networks: list[str]) -> list[Column]:
    """Every column the frame has a figure for, in the order the board shows them."""
    have = set(frame.columns)
    titles = {**TITLES, **titles}
    cols = [Column("relus", "ReLUs", "count", "counts", ("counts", "relus"), ranked=False),
            Column("drelus", "DReLUs", "count", "counts", ("counts", "drelus"), higher_is_better=False),
            _accuracy("clean_accuracy", titles["clean_accuracy"])]
    others = [k for k in titles if k != "clean_accuracy" and k in have]
    others.sort(key=lambda k: ROBUSTNESS_ORDER.index(k) if k in ROBUSTNESS_ORDER else len(ROBUSTNESS_ORDER))
    cols += [_accuracy(k, titles[k]) for k in others]
    if "paper_accuracy" in have:
        cols += [Column("paper_accuracy", "paper's acc %", "percent", "paper", ("paper", "accuracy"), unit="%",
                        short="paper %"),
                 Column("paper_delta", "Δ vs paper (pp)", "percent", "paper", ("paper", "delta"), unit="pp",
                        higher_is_better=True, short="Δ paper")]
    for p in profile_names:
        cost = ("secure_cost", p)
        cols += [Column(f"comm_mb@{p}", f"{p} MB", "megabytes", "cost", cost + ("comm_mb",), "MB", False, p, "MB"),
                 Column(f"rounds@{p}", f"{p} rounds", "count", "cost", cost + ("rounds",), "", False, p, "rounds")]
        cols += [Column(f"latency_{n}@{p}", f"{p} {n} s", "seconds", "cost", cost + ("latency_s", n), "s", False, p,
                        f"{n} s") for n in networks]
        cols.append(Column(f"compute_s@{p}", f"{p} compute s", "seconds", "cost", cost + ("compute_s",), "s", False, p,
                           "compute s"))
        cols.append(Column(f"storage_mb@{p}", f"{p} client storage MB", "megabytes", "setup",
                           cost + ("client_storage_mb",), "MB", False, p, "client storage MB"))
        cols.append(Column(f"setup_mb@{p}", f"{p} setup MB", "megabytes", "setup", cost + ("setup", "mb"), "MB",
                           False, p, "setup MB"))
        cols += [Column(f"setup_latency_{n}@{p}", f"{p} setup {n} s", "seconds", "setup",
                        cost + ("setup", "latency_s", n), "s", False, p, f"setup {n} s") for n in networks]
    cols.append(Column("epochs_used", "compute used (epochs)", "epochs", "compute", ("compute", "epochs_used"),
                       "epochs", short="epochs"))
    # the robust teacher RLNet alone uses: its cost, once, beside the entry's
    cols.append(Column("asset_epochs", "one-time method teacher (epochs)", "epochs", "compute",
                       ("compute", "one_time_teacher_epochs"), "epochs"))
    return [c for c in cols if c.key in have]


def constant(frame: pd.DataFrame, cols: list[Column]) -> tuple[list[Column], list[str]]:
    """The columns worth a place in a table, and one line stating those whose cell is the same in every
    row (a profile's setup, say)."""
    if len(frame) < 2:
        return cols, []
    kept, same = [], []
    for column in cols:
        cells = {cell(row, column) for _, row in frame.iterrows()}
        if len(cells) == 1 and column.group not in ("counts", "accuracy") and cells != {"—"}:
            same.append(f"{column.title} {cells.pop()}")
        else:
            kept.append(column)
    return kept, ([f"- The same in every row, so not a column: {'; '.join(same)}."] if same else [])
