"""Every entry in a process of its own. An entry's plugin code may exit, kill itself, crash the
interpreter or leave global state behind (grad mode off, another default dtype, hooks on a teacher it
found with ``gc``): none of it reaches the run, the other entries or the shared teacher. The parent
waits for each child, reads the one file the child wrote (its record and checkpoint payload, loaded
with ``weights_only=True``), and turns any other ending into that entry's error.

On a CPU the children are forked: they start with the parent's data and plugins in memory (plugins a
test registered by hand included), one torch thread each — OpenMP's thread pool does not survive a
fork, so a child that used more threads would hang in it — and as many run side by side as there are
cores. CUDA cannot be forked once the parent has used it, so a GPU run spawns its children one at a
time, and each rebuilds the run from the validated suite
(``EntryTask``). The measuring process's jobs are children of a fork server (``benchbed.run.measurer``)
that share the same pool of slots (``Pool``); the parent reads each direct child's CPU time from the
kernel as it ends (``Finished.cpu_seconds``)."""
from __future__ import annotations

import ctypes
import io
import json
import multiprocessing
import os
import signal
import sys
from collections import deque
from dataclasses import dataclass
from multiprocessing.connection import wait
from pathlib import Path
from typing import Callable, Hashable, Iterable, Iterator

import torch

from benchbed.errors import BenchbedError, first_line
from benchbed.files import atomic_write
from benchbed.run.rundir import release_inherited_locks

Result = tuple[dict, dict | None]
FAILURE = "failure"  # a child's message: the error that ended it
Send = Callable[..., None]
Work = Callable[[Send], Result]  # the work gets ``send(kind, *args)``: messages for the parent (log lines, progress)


def start_method() -> str:
    """``fork`` where the platform has it and CUDA is untouched in this process; ``spawn`` otherwise.
    The threads a fork would strand are kept out of this process instead: JAX never starts here in a
    run (SPU's pricing and a dry run's export run in the measuring process, and an entry's child never
    uses JAX), and OpenMP's pool is not used by a child (one torch thread each)."""
    if "fork" in multiprocessing.get_all_start_methods() and not torch.cuda.is_initialized():
        return "fork"
    return "spawn"


def default_workers(method: str) -> int:
    """Processes side by side: one per core for forked CPU children (and the measuring process's),
    one for spawned (GPU) ones."""
    return max(1, os.cpu_count() or 1) if method in ("fork", "forkserver") else 1


def _die_with(parent: int | None) -> None:
    """Linux: the child is killed when its parent dies, so a killed run leaves no entry running (a
    forkserver's child dies with the server, which ends with the run: ``parent`` None)."""
    try:
        ctypes.CDLL(None).prctl(1, signal.SIGKILL)  # PR_SET_PDEATHSIG
    except (OSError, AttributeError):  # not Linux: the child finishes its entry on its own
        return
    if parent is not None and os.getppid() != parent:  # the parent died before the request took
        os._exit(1)


def _child(work: Work, out: str, forked: bool, threads: int | None, parent: int | None, messages) -> None:
    _die_with(parent)
    if forked:
        release_inherited_locks()
        torch.set_num_threads(1)
    elif threads:
        torch.set_num_threads(threads)
    try:
        record, payload = work(lambda kind, *args: messages.send((kind, args)))
        # JSON-plain record (numpy scalars and the like become plain numbers): what weights_only loads back
        plain = json.loads(json.dumps(record, default=lambda v: v.item() if hasattr(v, "item") else str(v)))
        buffer = io.BytesIO()
        torch.save({"record": plain, "payload": payload}, buffer)
        atomic_write(Path(out), lambda f: f.write(buffer.getvalue()))
    except BaseException as exc:  # the last error reaches the entry's record, not only its exit code
        try:
            plain = first_line(exc) if isinstance(exc, BenchbedError) else None
            messages.send((FAILURE, (f"{type(exc).__name__}: {first_line(exc)}", plain)))
        except (OSError, ValueError):
            pass
        raise
    sys.stdout.flush()
    sys.stderr.flush()


def _ending(code: int | None) -> str:
    if code is not None and code < 0:
        try:
            return f"was killed by {signal.Signals(-code).name}"
        except ValueError:
            return f"was killed by signal {-code}"
    if code == 0:
        return "ended without recording a result (did the method call os._exit?)"
    return f"exited with code {code}"


def _collect(out: Path, code: int | None) -> tuple[Result | None, str]:
    if not out.exists():
        return None, f"the entry's process {_ending(code)}"
    try:
        saved = torch.load(out, map_location="cpu", weights_only=True)
        result = saved["record"], saved["payload"]
    except Exception as exc:  # a torn or foreign file: the child did not finish writing it
        return None, f"the entry's process left an unreadable result ({first_line(exc)})"
    finally:
        out.unlink(missing_ok=True)
    if code not in (0, None):
        return None, f"the entry's process {_ending(code)} after recording a result"
    return result, ""


@dataclass(frozen=True)
class Job:
    """One process's work: ``work(send)`` returns a record and payload, written to ``out``; ``method`` is
    how its process starts (``fork``, ``spawn``, or ``forkserver``: a fork of a fresh server process
    that never ran plugin code); ``threads`` its torch threads where it does not start as a fork."""

    key: Hashable
    work: Work
    out: Path
    method: str
    threads: int | None = None


@dataclass(frozen=True)
class Finished:
    """A job's end: its result, or None and why; and the CPU seconds its process used (all its
    threads, as the kernel counted them), None where they cannot be read (off Linux, a forkserver's child)."""

    key: Hashable
    result: Result | None
    why: str
    cpu_seconds: float | None
    error: str | None = None  # the one-line message of a ``BenchbedError`` that ended the job


def cpu_seconds(pid: int) -> float | None:
    """The user + system CPU seconds of process ``pid`` and of the children it waited for, read from
    ``/proc`` (an exited child not yet reaped still has its entry there)."""
    try:
        fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    except (OSError, IndexError):
        return None
    return sum(int(v) for v in fields[11:15]) / os.sysconf("SC_CLK_TCK")


class Pool:
    """Jobs in processes of their own, ``workers`` at a time; ``add`` queues one (a finished job's
    follow-up included), ``finished()`` yields each as it ends. What a job's work sends reaches
    ``relay(kind, args)`` here."""

    def __init__(self, workers: int, relay: Callable[[str, tuple], None] = lambda kind, args: None):
        self.workers, self.relay = max(1, workers), relay
        self.pending: deque[Job] = deque()
        self.running: dict[int, tuple[Job, multiprocessing.process.BaseProcess]] = {}
        self.inboxes: dict = {}
        self.failures: dict[int, tuple[str, str | None]] = {}  # by child: the error it reported before it ended
        self.cpu: dict[int, float] = {}  # by child: its CPU seconds when last read

    def add(self, job: Job) -> None:
        self.pending.append(job)

    def _read_cpu(self) -> None:
        """Every running child's CPU seconds now: starting a process reaps the others that ended, and a
        reaped child's figures are gone."""
        for sentinel, (_, child) in self.running.items():
            seconds = cpu_seconds(child.pid) if child.pid else None
            if seconds is not None:
                self.cpu[sentinel] = seconds

    def _launch(self) -> bool:
        if not self.pending:
            return False
        job = self.pending.popleft()
        job.out.parent.mkdir(parents=True, exist_ok=True)
        job.out.unlink(missing_ok=True)
        context = multiprocessing.get_context(job.method)
        inbox, outbox = context.Pipe(duplex=False)
        child = context.Process(target=_child, args=(job.work, str(job.out), job.method == "fork", job.threads,
                                                     None if job.method == "forkserver" else os.getpid(), outbox),
                                daemon=False)
        self._read_cpu()
        child.start()
        outbox.close()
        self.running[child.sentinel] = (job, child)
        self.inboxes[inbox] = child.sentinel
        return True

    def _drain(self, inbox) -> None:
        try:
            while inbox.poll():
                kind, args = inbox.recv()
                if kind == FAILURE:
                    self.failures[self.inboxes[inbox]] = args
                else:
                    self.relay(kind, args)
        except (EOFError, OSError):  # the child is gone: nothing more will come
            self.inboxes.pop(inbox, None)
            inbox.close()

    def _end(self, sentinel: int) -> Finished:
        for inbox in [i for i, s in self.inboxes.items() if s == sentinel]:
            self._drain(inbox)
            self.inboxes.pop(inbox, None)
        job, child = self.running.pop(sentinel)
        seconds = cpu_seconds(child.pid)
        seconds = seconds if seconds is not None else self.cpu.get(sentinel)
        self.cpu.pop(sentinel, None)
        child.join()
        result, why = _collect(job.out, child.exitcode)
        failure, plain = self.failures.pop(sentinel, (None, None))
        if result is None and failure:
            why = f"{why}: {failure}"
        return Finished(job.key, result, why, None if job.method == "forkserver" else seconds,
                        plain if result is None else None)

    def finished(self) -> Iterator[Finished]:
        try:
            while self.pending or self.running:
                while len(self.running) < self.workers and self._launch():
                    pass
                for ready in wait(list(self.running) + list(self.inboxes)):
                    if ready in self.inboxes:
                        self._drain(ready)
                    elif ready in self.running:
                        yield self._end(ready)
        finally:  # Ctrl-C, or the caller stopped: no child outlives the run
            for _, child in self.running.values():
                child.kill()
                child.join()
            self.running.clear()


def run_isolated(jobs: Iterable[Job], workers: int | None = None,
                 relay: Callable[[str, tuple], None] = lambda kind, args: None) -> Iterator[Finished]:
    """Every job in a process of its own, ``workers`` at a time (one per core for forked CPU children
    unless given); each ``Finished`` as it ends."""
    jobs = list(jobs)
    pool = Pool(workers or min((default_workers(j.method) for j in jobs), default=1), relay)
    for job in jobs:
        pool.add(job)
    yield from pool.finished()
