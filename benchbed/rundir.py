"""A run directory: claimed by one suite configuration, locked by one ``benchbed run`` at a time, one
JSON record and one checkpoint per finished entry.

    RUN_DIR/suite.json            the suite it belongs to (its fingerprint)
    RUN_DIR/run.lock              held while a run writes here; names its holder
    RUN_DIR/teacher*.pt|json      the shared teacher variants
    RUN_DIR/entries/<id>.json|pt  entry records and checkpoints
    RUN_DIR/secure_infer/         secure-inference measurements (never read as entries)
"""
from __future__ import annotations

import fcntl
import os
import socket
from contextlib import contextmanager
from pathlib import Path
from typing import IO, Iterator

from benchbed import provenance
from benchbed.config import Suite
from benchbed.errors import BenchbedError
from benchbed.records import entry_records, is_finished, read_json, write_json


class RunDir:
    def __init__(self, path: Path):
        self.path = Path(path)

    @property
    def entries(self) -> Path:
        return self.path / "entries"

    def record_path(self, entry_id: str) -> Path:
        return self.entries / f"{entry_id}.json"

    def checkpoint_path(self, entry_id: str) -> Path:
        return self.entries / f"{entry_id}.pt"

    def is_finished(self, entry_id: str) -> bool:
        return is_finished(self.record_path(entry_id))

    @contextmanager
    def locked(self) -> Iterator[None]:
        """Hold the directory's lock for the block; a second run on it fails at once, naming the holder."""
        try:
            self.entries.mkdir(parents=True, exist_ok=True)
            handle: IO[str] = open(self.path / "run.lock", "a+")
        except OSError as exc:
            raise BenchbedError(f"cannot write the run directory {self.path} ({exc.strerror}); "
                                "pass --out with a writable directory") from None
        try:
            try:
                fcntl.flock(handle, fcntl.LOCK_EX | fcntl.LOCK_NB)
            except BlockingIOError:
                handle.seek(0)
                holder = handle.read().strip() or "another process"
                raise BenchbedError(f"{self.path} is in use by another benchbed run ({holder}); wait for it to "
                                    "finish or pass --out with another directory") from None
            handle.seek(0)
            handle.truncate()
            handle.write(f"pid {os.getpid()} on {socket.gethostname()} since {provenance.now()}\n")
            handle.flush()
            yield
        finally:
            handle.close()

    def claim(self, suite: Suite, suite_path: str, options: dict) -> None:
        """Bind the directory to ``suite``'s configuration, or check that it already is."""
        meta_path = self.path / "suite.json"
        fingerprint = suite.fingerprint()
        if meta_path.exists():
            try:
                meta = read_json(meta_path)
                same = meta.get("fingerprint") == fingerprint and meta.get("seeds") == suite.seeds
            except (OSError, ValueError, AttributeError):
                if any(r.get("fingerprint") != fingerprint for r in entry_records(self.path, warn=lambda m: None)):
                    raise BenchbedError(f"{meta_path} is unreadable and the entries here come from another suite "
                                        "configuration; pass --out with a new directory") from None
                same = False
                meta = None
            if meta is not None and not same:
                raise BenchbedError(f"{self.path} holds a run of a different suite configuration; "
                                    "pass --out with a new directory to start afresh")
            if meta is not None:
                return
        write_json(meta_path, {"suite": suite.model_dump(mode="json"), "suite_file": suite_path,
                               "fingerprint": fingerprint, "seeds": suite.seeds, "options": options,
                               "created": provenance.now()})

