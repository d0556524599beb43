"""A run directory, the one module that knows its layout: claimed by one suite configuration, locked by
one ``benchbed run`` at a time, one JSON record and one checkpoint per finished entry. Every other module
asks a ``RunDir`` for its files.

    RUN_DIR/suite.json            the suite it belongs to (its fingerprint)
    RUN_DIR/data.json             the dataset's splits as the run loaded them
    RUN_DIR/plan.json             the entries the suite asks for
    RUN_DIR/run.lock              held while a run writes here; names its holder
    RUN_DIR/teacher*.pt|json      the shared teacher variants (``.partial.pt`` while one trains)
    RUN_DIR/entries/<id>.json|pt  entry records and checkpoints
    RUN_DIR/work/<id>/            an entry's scratch folder
    RUN_DIR/secure_infer/         secure-inference measurements (never read as entries)

and, outside every run directory, the teacher cache that runs and suites share:

    $BENCHBED_CACHE/teachers/<key>/teacher.pt|json   (``~/.cache/benchbed`` when unset)
"""
from __future__ import annotations

import fcntl
import hashlib
import os
import socket
import sys
from contextlib import contextmanager
from pathlib import Path
from typing import IO, Any, Callable, Iterator

from benchbed.config import Suite
from benchbed.errors import BenchbedError
from benchbed.files import read_json, write_json
from benchbed.run import provenance

# An entry is done when its record says one of these (and, when ok, its checkpoint is beside it).
FINISHED = ("ok", "over_budget")
# What every entry record holds; one without them is redone.
REQUIRED = {"entry", "status", "fingerprint", "seed", "method", "budget"}
STANDARD_TEACHER = "standard"


# The lock files this process holds open: a forked entry closes its copies (an flock lives as long as any
# copy of its file is open, and a child must not keep the directory locked after its parent is gone).
_HELD: set[int] = set()


def release_inherited_locks() -> None:
    """In a forked child: close the copies of the parent's lock files (the parent keeps its lock)."""
    for fd in list(_HELD):
        try:
            os.close(fd)
        except OSError:
            pass
    _HELD.clear()


def entry_id(method: str, budget: int | None, seed: int, level: str | None = None) -> str:
    """``snl__600__s0``; with several compute levels ``snl__600__e8__s0``."""
    return f"{method}__{'all' if budget is None else budget}{f'__{level}' if level else ''}__s{seed}"


class RunDir:
    def __init__(self, path: str | Path):
        self.path = Path(path)

    # -- the files --------------------------------------------------------------------------------
    @property
    def entries(self) -> Path:
        return self.path / "entries"

    @property
    def suite_file(self) -> Path:
        return self.path / "suite.json"

    @property
    def data_file(self) -> Path:
        return self.path / "data.json"

    @property
    def plan_file(self) -> Path:
        return self.path / "plan.json"

    def record_path(self, entry: str) -> Path:
        return self.entries / f"{entry}.json"

    def checkpoint_path(self, entry: str) -> Path:
        return self.entries / f"{entry}.pt"

    def work_dir(self, entry: str) -> Path:
        return self.path / "work" / entry

    def teacher_files(self, variant: str = STANDARD_TEACHER) -> tuple[Path, Path]:
        """The checkpoint and the record of a teacher variant."""
        stem = "teacher" if variant == STANDARD_TEACHER else f"teacher-{variant}"
        return self.path / f"{stem}.pt", self.path / f"{stem}.json"

    def teacher_partial(self, variant: str = STANDARD_TEACHER) -> Path:
        """Where a teacher's training state is kept while it trains, so that an interrupted one resumes."""
        return self.teacher_files(variant)[0].with_suffix(".partial.pt")

    def measurement_path(self, entry: str, protocol_name: str) -> Path:
        return self.path / "secure_infer" / f"{entry}.{protocol_name}.json"

    # -- reading ----------------------------------------------------------------------------------
    def meta(self) -> dict[str, Any]:
        """The suite metadata of the run, with its data and teacher records where they are readable."""
        if not self.suite_file.exists():
            raise BenchbedError(f"{self.path} is not a benchbed run directory (no suite.json); pass the --out "
                                "of `benchbed run`")
        try:
            meta = read_json(self.suite_file)
            if not {"suite", "fingerprint"} <= set(meta):
                raise ValueError("no suite or fingerprint")
        except (OSError, ValueError, TypeError) as exc:
            raise BenchbedError(f"{self.suite_file} is torn or not a run's ({type(exc).__name__}); run the suite "
                                "again with this --out to rewrite it") from None
        meta["run_dir"] = str(self.path)
        for name, path in (("data", self.data_file), ("teacher", self.teacher_files()[1])):
            try:
                meta[name] = read_json(path)
            except (OSError, ValueError):  # absent or torn: the board says "?" where it would quote it
                pass
        meta["planned"] = self.planned()
        meta["in_use"] = self.in_use()
        return meta

    def records(self, warn: Callable[[str], None] | None = None) -> list[dict]:
        """The readable entry records; each unreadable one is reported through ``warn`` (stderr by
        default) and left out, and ``benchbed run`` redoes it."""
        warn = warn or (lambda message: print(f"benchbed: warning: {message}", file=sys.stderr))
        records = []
        for path in sorted(self.entries.glob("*.json")):
            try:
                record = read_json(path)
                if not isinstance(record, dict) or not REQUIRED <= set(record):
                    raise ValueError("not a whole entry record")
                if record["entry"] != path.stem or (record["status"] == "ok"
                                                    and record.get("checkpoint") != f"{path.stem}.pt"):
                    raise ValueError("it names another entry's files")  # never a path out of the run
            except (OSError, ValueError) as exc:
                warn(f"{path} is unreadable ({type(exc).__name__}), left out; `benchbed run` on the suite redoes it")
                continue
            records.append(record)
        return records

    def record(self, entry: str) -> dict:
        return read_json(self.record_path(entry))

    def finished(self, entry: str) -> dict | None:
        """The entry's record when it is done: readable, complete, finished, and for an ``ok`` entry its
        checkpoint beside it with the bytes the record's hash says (a truncated or swapped one is not)."""
        try:
            record = read_json(self.record_path(entry))
        except (OSError, ValueError):
            return None
        if not isinstance(record, dict) or not REQUIRED <= set(record) or record.get("status") not in FINISHED:
            return None
        if record["status"] == "ok":
            if record.get("checkpoint") != f"{entry}.pt":  # never a path out of the run directory
                return None
            path = self.checkpoint_path(entry)
            try:
                if hashlib.sha256(path.read_bytes()).hexdigest() != record.get("checkpoint_sha256"):
                    return None
            except OSError:
                return None
        return record

    def checked_checkpoint(self, entry: str) -> Path:
        """The checkpoint of a finished entry, refused unless its bytes are those its record's hash names."""
        record = self.finished(entry)
        if record is None or record["status"] != "ok":
            raise BenchbedError(f"{self.checkpoint_path(entry)} is no finished entry's checkpoint: its record is "
                                "missing or unfinished, or the file is not the one the record's sha256 names; run "
                                "the suite again to redo the entry")
        return self.checkpoint_path(entry)

    def is_finished(self, entry: str) -> bool:
        return self.finished(entry) is not None

    @classmethod
    def of_entry(cls, target: str | Path) -> tuple["RunDir", str]:
        """The run directory and entry id of ``RUN_DIR/ENTRY`` (or of the entry's own files)."""
        path = Path(target)
        entry = path.name.removesuffix(".json").removesuffix(".pt")
        run_dir = cls(path.parent.parent if path.parent.name == "entries" else path.parent)
        if not run_dir.checkpoint_path(entry).exists():
            raise BenchbedError(f"no finished entry {entry!r} in {run_dir.path}; pass RUN_DIR/ENTRY as listed in "
                                "RUN_DIR/entries")
        return run_dir, entry

    # -- writing ----------------------------------------------------------------------------------
    def write_data(self, description: dict) -> None:
        write_json(self.data_file, description)

    def write_plan(self, entries: list[str]) -> None:
        write_json(self.plan_file, {"entries": entries})

    def planned(self) -> list[str] | None:
        """The entry ids the suite asks for, as the last run planned them (None before any run)."""
        try:
            plan = read_json(self.plan_file)
            return [str(e) for e in plan["entries"]]
        except (OSError, ValueError, KeyError, TypeError):
            return None

    def in_use(self) -> bool:
        """Whether a run holds the directory's lock now."""
        try:
            with open(self.path / "run.lock", "a+") as handle:
                fcntl.flock(handle, fcntl.LOCK_EX | fcntl.LOCK_NB)
                fcntl.flock(handle, fcntl.LOCK_UN)
        except BlockingIOError:
            return True
        except OSError:
            return False
        return False

    def write_measurement(self, entry: str, protocol_name: str, result: dict) -> Path:
        path = self.measurement_path(entry, protocol_name)
        path.parent.mkdir(exist_ok=True)
        write_json(path, result)
        return path

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
            _HELD.add(handle.fileno())
            yield
        finally:
            _HELD.discard(handle.fileno())
            handle.close()

    def claim(self, suite: Suite, suite_path: str, options: dict) -> None:
        """Bind the directory to ``suite``'s configuration, or check that it already is."""
        meta_path = self.suite_file
        fingerprint = suite.fingerprint()
        if meta_path.exists():
            try:
                meta = read_json(meta_path)
                same = meta.get("fingerprint") == fingerprint and meta.get("seeds") == suite.seeds
            except (OSError, ValueError, AttributeError):
                if any(r.get("fingerprint") != fingerprint for r in self.records(warn=lambda m: None)):
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


def teacher_cache_files(key: str) -> tuple[Path, Path]:
    """The checkpoint and the record of the cached teacher with cache key ``key``."""
    root = Path(os.environ.get("BENCHBED_CACHE") or Path.home() / ".cache" / "benchbed") / "teachers" / key
    return root / "teacher.pt", root / "teacher.json"
