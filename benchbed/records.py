"""Run directories: one JSON record per entry, written atomically so that a killed run never
leaves a half-written result behind."""
from __future__ import annotations

import json
import math
import os
import sys
import tempfile
from pathlib import Path
from typing import IO, Any, Callable

FINISHED = ("ok", "over_budget")


def atomic_write(path: Path, write: Callable[[IO[bytes]], None]) -> None:
    """Write ``path`` through ``write(file)`` so that readers see the old file or the whole new one:
    a temporary file of its own in the same folder, flushed to disk, then renamed over ``path``."""
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp")
    try:
        with os.fdopen(fd, "wb") as f:
            write(f)
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise


def finite(data: Any) -> Any:
    """``data`` with every NaN or infinity replaced by None: JSON has no such numbers."""
    if isinstance(data, float):
        return data if math.isfinite(data) else None
    if isinstance(data, dict):
        return {k: finite(v) for k, v in data.items()}
    if isinstance(data, (list, tuple)):
        return [finite(v) for v in data]
    return data


def write_json(path: Path, data: Any) -> None:
    text = json.dumps(finite(data), indent=2, sort_keys=False, default=str, allow_nan=False) + "\n"
    atomic_write(path, lambda f: f.write(text.encode()))


def read_json(path: Path) -> Any:
    return json.loads(path.read_text())


def entry_id(method: str, budget: int | None, seed: int) -> str:
    return f"{method}__{'all' if budget is None else budget}__s{seed}"


def entry_records(run_dir: Path, warn: Callable[[str], None] | None = None) -> list[dict]:
    """The readable entry records of a run directory; each unreadable one is reported through ``warn``
    (stderr by default) and left out, and ``benchbed run`` redoes it."""
    warn = warn or (lambda message: print(f"benchbed: warning: {message}", file=sys.stderr))
    records = []
    for path in sorted((run_dir / "entries").glob("*.json")):
        try:
            record = read_json(path)
            if not isinstance(record, dict) or "entry" not in record or "status" not in record:
                raise ValueError("not an entry record")
        except (OSError, ValueError) as exc:
            warn(f"{path} is unreadable ({type(exc).__name__}), left out; `benchbed run` on the suite redoes it")
            continue
        records.append(record)
    return records


def is_finished(path: Path) -> bool:
    """Whether the entry whose record is at ``path`` is done: a readable finished record, and for an
    ``ok`` entry its checkpoint beside it."""
    try:
        record = read_json(path)
        status = record.get("status")
    except (OSError, ValueError, AttributeError):
        return False
    if status == "ok":
        return (path.parent / str(record.get("checkpoint", ""))).is_file()
    return status in FINISHED
