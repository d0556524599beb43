"""Run directories: one JSON record per entry, written atomically so that a killed run never
leaves a half-written result behind."""
from __future__ import annotations

import json
import os
from pathlib import Path
from typing import Any

FINISHED = ("ok", "over_budget")


def write_json(path: Path, data: Any) -> None:
    tmp = path.with_name(path.name + ".tmp")
    tmp.write_text(json.dumps(data, indent=2, sort_keys=False, default=str) + "\n")
    os.replace(tmp, path)


def read_json(path: Path) -> Any:
    return json.loads(path.read_text())


def entry_id(method: str, budget: int | None, seed: int) -> str:
    return f"{method}__{'all' if budget is None else budget}__s{seed}"


def entry_records(run_dir: Path) -> list[dict]:
    return [read_json(p) for p in sorted((run_dir / "entries").glob("*.json"))]


def is_finished(path: Path) -> bool:
    try:
        return read_json(path).get("status") in FINISHED
    except (OSError, ValueError):
        return False
