"""Writing files so that a reader sees the old file or the whole new one, never half of one; and JSON
that holds no NaN or infinity. Every file benchbed writes goes through ``atomic_write``."""
from __future__ import annotations

import json
import math
import os
import tempfile
from pathlib import Path
from typing import IO, Any, Callable

# The process's umask, read once at import (reading it means setting it, which no thread should race).
UMASK = os.umask(0o022)
os.umask(UMASK)


def atomic_write(path: Path, write: Callable[[IO[bytes]], None]) -> None:
    """Write ``path`` through ``write(file)`` so that readers see the old file or the whole new one:
    a temporary file of its own in the same folder, flushed to disk, then renamed over ``path``."""
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp")
    try:
        # mkstemp makes the file private (0600); a written file has the mode any new file would (0644 under
        # the usual umask), so a published board or a shared run directory is readable by others
        os.fchmod(fd, 0o666 & ~UMASK)
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
    write_text(path, json.dumps(finite(data), indent=2, sort_keys=False, default=str, allow_nan=False) + "\n")


def write_text(path: Path, text: str) -> None:
    atomic_write(path, lambda f: f.write(text.encode()))


def read_json(path: Path) -> Any:
    return json.loads(path.read_text())
