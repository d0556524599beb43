"""A leaderboard's JSON rows, both ways: written nested per figure (schema version 2: ``metrics``,
``counts``, ``secure_cost`` per profile, ``compute``, ``paper``; each figure ``{"mean", "std", "ci95",
"images"}`` as far as known), and read back from either version (``read_leaderboard``), a version-1
board's flat rows (``comm_mb@aby3``, ``latency_WAN@aby3`` …) nested on the way in."""
from __future__ import annotations

import re
from pathlib import Path
from typing import Any

import pandas as pd

from benchbed import schemas
from benchbed.errors import BenchbedError
from benchbed.files import read_json
from benchbed.report.columns import Column, missing

# A row's fields that say which row it is, not what was measured.
IDENTITY = ("method", "label", "budget", "level", "level_index", "level_epochs", "seeds", "external")


def _plain(value: Any) -> Any:
    if missing(value):
        return None
    return value.item() if hasattr(value, "item") else value


def _put(row: dict, path: tuple[str, ...], figure: dict) -> None:
    for part in path[:-1]:
        row = row.setdefault(part, {})
    row[path[-1]] = figure


def _figure(row: pd.Series, key: str) -> dict:
    figure = {"mean": _plain(row.get(key))}
    for name, suffix in (("std", "_std"), ("ci95", "_ci")):
        value = _plain(row.get(f"{key}{suffix}"))
        if value is not None:
            figure[name] = value
    images = _plain(row.get(f"n:{key}"))
    if images is not None:
        figure["images"] = int(images)
    return figure


def rows(frame: pd.DataFrame, cols: list[Column]) -> list[dict]:
    """The table's rows as version 2 writes them: identity fields, then every column's figure at its path."""
    out = []
    for _, row in frame.iterrows():
        found = {k: _plain(row.get(k)) for k in IDENTITY}
        found["budget"] = None if found["budget"] is None else int(found["budget"])
        found["seeds"], found["external"] = int(found["seeds"]), bool(found["external"])
        found["unreliable"] = _plain(row.get("unreliable"))
        found["unmetered"] = _plain(row.get("unmetered"))
        for column in cols:
            if not missing(row.get(column.key)):
                _put(found, column.path, _figure(row, column.key))
        if not missing(row.get("val_accuracy")):
            _put(found, ("metrics", "val_accuracy"), _figure(row, "val_accuracy"))
        out.append(found)
    return out


# A version-1 row's flat key → where version 2 keeps it (the only place a key is parsed: old boards).
_V1_PATHS = [
    (r"comm_mb@(.+)", lambda m: ("secure_cost", m[1], "comm_mb")),
    (r"rounds@(.+)", lambda m: ("secure_cost", m[1], "rounds")),
    (r"latency_(.+)@(.+)", lambda m: ("secure_cost", m[2], "latency_s", m[1])),
    (r"compute_s@(.+)", lambda m: ("secure_cost", m[1], "compute_s")),
    (r"storage_mb@(.+)", lambda m: ("secure_cost", m[1], "client_storage_mb")),
    (r"setup_mb@(.+)", lambda m: ("secure_cost", m[1], "setup", "mb")),
    (r"setup_latency_(.+)@(.+)", lambda m: ("secure_cost", m[2], "setup", "latency_s", m[1])),
    (r"(relus|drelus)", lambda m: ("counts", m[1])),
    (r"epochs_used", lambda m: ("compute", "epochs_used")),
    (r"asset_epochs", lambda m: ("compute", "one_time_teacher_epochs")),
    (r"paper_(accuracy|delta)", lambda m: ("paper", m[1])),
    (r"(.+_accuracy(?:_.+)?)", lambda m: ("metrics", m[1])),
]


def _v1_path(key: str) -> tuple[str, ...] | None:
    for pattern, path in _V1_PATHS:
        match = re.fullmatch(pattern, key)
        if match:
            return path(match)
    return None


def upgraded_row(flat: dict) -> dict:
    """A version-1 row nested as version 2 has it."""
    row = {k: flat.get(k) for k in IDENTITY}
    row["external"] = bool(row["external"])
    row["unreliable"] = flat.get("unreliable")
    for key, value in flat.items():
        if key in IDENTITY or key.endswith(("_std", "_ci")) or key.startswith("n:") or value is None:
            continue
        path = _v1_path(key)
        if path is None:
            continue
        figure = {"mean": value}
        for name, suffix in (("std", "_std"), ("ci95", "_ci")):
            if flat.get(f"{key}{suffix}") is not None:
                figure[name] = flat[f"{key}{suffix}"]
        if flat.get(f"n:{key}") is not None:
            figure["images"] = int(flat[f"n:{key}"])
        _put(row, path, figure)
    return row


def read_leaderboard(path: str | Path) -> dict:
    """A published leaderboard's JSON twin, validated against its version's schema, as version 2 has it
    (a version-1 board's rows nested, its columns given their key and title)."""
    try:
        board = read_json(Path(path))
    except (OSError, ValueError, UnicodeDecodeError) as exc:
        raise BenchbedError(f"{path} is no leaderboard JSON ({type(exc).__name__}); pass the .json twin of a board") from None
    version = board.get("schema_version") if isinstance(board, dict) else None
    if version == 1:
        schemas.check(board, "leaderboard.v1", str(path))
        return {**board, "schema_version": schemas.LEADERBOARD_VERSION, "upgraded_from": 1,
                "rows": [upgraded_row(r) for r in board["rows"]]}
    if version != schemas.LEADERBOARD_VERSION:
        raise BenchbedError(f"{path} is a leaderboard of schema version {version!r}; this benchbed reads versions 1 "
                            f"and {schemas.LEADERBOARD_VERSION} (upgrade benchbed, or publish the board again)")
    schemas.check(board, "leaderboard", str(path))
    return board
