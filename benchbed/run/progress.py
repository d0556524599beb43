"""Progress output: rich bars on a terminal, plain lines with ``--quiet`` (CI logs)."""
from __future__ import annotations

import sys
import time
from contextlib import contextmanager
from typing import Callable, Iterator

from rich.console import Console
from rich.progress import BarColumn, Progress, TaskID, TextColumn, TimeElapsedColumn

LINE_EVERY_S = 30.0


class Reporter:
    def __init__(self, quiet: bool = False):
        self.quiet = quiet
        self.console = Console(stderr=True, log_path=False)
        self._progress: Progress | None = None
        self._stage: TaskID | None = None
        self._last: tuple[str, float] = ("", 0.0)

    def log(self, message: str) -> None:
        if self._progress is not None:
            self._progress.console.log(message)
        elif self.quiet:
            print(message, file=sys.stderr, flush=True)
        else:
            self.console.log(message)

    def progress(self, label: str, done: float, total: float) -> None:
        """Where the current stage (training, evaluation) stands: a second bar under the entries' bar, or,
        without one (the teacher, ``--quiet``), a line when a stage starts and every LINE_EVERY_S after."""
        if self._progress is None:
            now = time.monotonic()
            if label != self._last[0] or now - self._last[1] >= LINE_EVERY_S:
                self._last = (label, now)
                self.log(f"{label}: {100 * done / total:.0f}%" if total else label)
            return
        if self._stage is None:
            self._stage = self._progress.add_task(label, total=total)
        self._progress.update(self._stage, description=label, completed=done, total=total)

    @contextmanager
    def entries(self, total: int) -> Iterator[Callable[[str], None]]:
        if self.quiet or not self.console.is_terminal:
            yield self.log
            return
        columns = (TextColumn("{task.description}"), BarColumn(), TextColumn("{task.percentage:>3.0f}%"),
                   TimeElapsedColumn())
        with Progress(*columns, console=self.console, transient=False) as progress:
            self._progress = progress
            task = progress.add_task("entries", total=total)

            def advance(message: str) -> None:
                progress.console.log(message)
                progress.advance(task)

            try:
                yield advance
            finally:
                self._progress, self._stage = None, None


class Relay:
    """A reporter for an entry's own process: its log lines and progress go to the run's reporter in the
    parent, which shows them as its own."""

    def __init__(self, send: Callable[..., None]):
        self.send = send

    def log(self, message: str) -> None:
        self.send("log", message)

    def progress(self, label: str, done: float, total: float) -> None:
        self.send("progress", label, done, total)
