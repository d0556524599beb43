"""Every entry in a process of its own. An entry's plugin code may exit, kill itself, crash the
interpreter or leave global state behind (grad mode off, another default dtype, hooks on a teacher it
found with ``gc``): none of it reaches the run, the other entries or the shared teacher. The parent
waits for each child, reads the one file the child wrote (its record and checkpoint payload, loaded
with ``weights_only=True``), and turns any other ending into that entry's error.

On a CPU the children are forked: they start with the parent's data and plugins in memory (plugins a
test registered by hand included), one torch thread each — OpenMP's thread pool does not survive a
fork, so a child that used more threads would hang in it — and as many run side by side as there are
cores. CUDA cannot be forked once the parent has used it, so a GPU run spawns its children one at a
time, and each rebuilds the run from the validated suite (``EntryTask``)."""
from __future__ import annotations

import ctypes
import io
import json
import multiprocessing
import os
import signal
import sys
from multiprocessing.connection import wait
from pathlib import Path
from typing import Callable, Hashable, Iterable, Iterator

import torch

from benchbed.errors import first_line
from benchbed.files import atomic_write
from benchbed.run.rundir import release_inherited_locks

Result = tuple[dict, dict | None]
FAILURE = "failure"  # a child's message: the error that ended it
Send = Callable[..., None]
Work = Callable[[Send], Result]  # the work gets ``send(kind, *args)``: messages for the parent (log lines, progress)


def start_method() -> str:
    """``fork`` where the platform has it and CUDA is untouched in this process; ``spawn`` otherwise."""
    if "fork" in multiprocessing.get_all_start_methods() and not torch.cuda.is_initialized():
        return "fork"
    return "spawn"


def default_workers(method: str) -> int:
    """Entries side by side: one per core for forked CPU children, one for spawned (GPU) ones."""
    return max(1, os.cpu_count() or 1) if method == "fork" else 1


def _die_with(parent: int) -> None:
    """Linux: the child is killed when its parent dies, so a killed run leaves no entry running."""
    try:
        ctypes.CDLL(None).prctl(1, signal.SIGKILL)  # PR_SET_PDEATHSIG
    except (OSError, AttributeError):  # not Linux: the child finishes its entry on its own
        return
    if os.getppid() != parent:  # the parent died before the request took
        os._exit(1)


def _child(work: Work, out: str, forked: bool, parent: int, messages) -> None:
    _die_with(parent)
    if forked:
        release_inherited_locks()
        torch.set_num_threads(1)
    try:
        record, payload = work(lambda kind, *args: messages.send((kind, args)))
        # JSON-plain record (numpy scalars and the like become plain numbers): what weights_only loads back
        plain = json.loads(json.dumps(record, default=lambda v: v.item() if hasattr(v, "item") else str(v)))
        buffer = io.BytesIO()
        torch.save({"record": plain, "payload": payload}, buffer)
        atomic_write(Path(out), lambda f: f.write(buffer.getvalue()))
    except BaseException as exc:  # the last error reaches the entry's record, not only its exit code
        try:
            messages.send((FAILURE, (f"{type(exc).__name__}: {first_line(exc)}",)))
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


def run_isolated(jobs: Iterable[tuple[Hashable, Work, Path]], method: str | None = None, workers: int | None = None,
                 relay: Callable[[str, tuple], None] = lambda kind, args: None
                 ) -> Iterator[tuple[Hashable, Result | None, str]]:
    """Run every job's work — which returns an entry's record and checkpoint payload — in a child
    process of its own, ``workers`` at a time; yield (key, result, "") as each finishes, or (key, None,
    why) when its process gave no result. A job's child writes its result to the job's path; what its
    work sends reaches ``relay(kind, args)`` here."""
    method = method or start_method()
    context = multiprocessing.get_context(method)
    workers = workers or default_workers(method)
    pending = iter(jobs)
    running: dict[int, tuple[Hashable, Path, multiprocessing.process.BaseProcess]] = {}
    inboxes: dict = {}
    failures: dict[int, str] = {}  # by child: the error it reported before it ended

    def launch() -> bool:
        job = next(pending, None)
        if job is None:
            return False
        key, work, out = job
        out.parent.mkdir(parents=True, exist_ok=True)
        out.unlink(missing_ok=True)
        inbox, outbox = context.Pipe(duplex=False)
        child = context.Process(target=_child, args=(work, str(out), method == "fork", os.getpid(), outbox),
                                daemon=False)
        child.start()
        outbox.close()
        running[child.sentinel] = (key, out, child)
        inboxes[inbox] = child.sentinel
        return True

    def drain(inbox) -> None:
        try:
            while inbox.poll():
                kind, args = inbox.recv()
                if kind == FAILURE:
                    failures[inboxes[inbox]] = args[0]
                else:
                    relay(kind, args)
        except (EOFError, OSError):  # the child is gone: nothing more will come
            inboxes.pop(inbox, None)
            inbox.close()

    try:
        while len(running) < workers and launch():
            pass
        while running:
            for ready in wait(list(running) + list(inboxes)):
                if ready in inboxes:
                    drain(ready)
                    continue
                if ready not in running:
                    continue
                for inbox in [i for i, s in inboxes.items() if s == ready]:
                    drain(inbox)
                    inboxes.pop(inbox, None)
                key, out, child = running.pop(ready)
                child.join()
                result, why = _collect(out, child.exitcode)
                failure = failures.pop(ready, None)
                if result is None and failure:
                    why = f"{why}: {failure}"
                launch()
                yield key, result, why
    finally:  # Ctrl-C, or the caller stopped: no child outlives the run
        for _, _, child in running.values():
            child.kill()
            child.join()
