r"""What the monitor shows, read from the queue folder (no Textual here).

:class:`JobsReader` keeps the jobs of a queue up to date by reading only
the records that changed since the last look (its store tells which: in a
folder, their size and mtime), so a folder of 10,000 finished jobs costs
one ``scandir`` per refresh.
:class:`Watcher` wakes the monitor when the folders change (inotify where
there is one), and :class:`TermBuffer` turns a job's output into the lines a
terminal would show (``\r`` returns to the start of the line).
"""

from __future__ import annotations

import os
import re
import select
import threading
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Protocol

from dvc_task.files import open_regular
from dvc_task.jobs import JobQueue
from dvc_task.jobs.dependencies import show_failed_dependencies
from dvc_task.jobs.reading import shown, with_reasons
from dvc_task.jobs.record import (
    FINAL_STATES,
    RUNNING,
)
from dvc_task.jobs.store import Entry, RecordCache
from dvc_task.jobs.view import Job
from dvc_task.watch import CHANGED_FILES, FolderWaiter

#: How long the watcher waits at most between two looks (ticking durations).
TICK_S = 1.0
#: While a job is starting (its process record is not watched), or where a
#: folder has no inotify, look this often.
BUSY_S = 0.1
#: Bytes of a job's output shown when it is selected (then followed).
TAIL_BYTES = 256 * 1024


class JobsReader:
    """The jobs of a queue, re-read only where something changed."""

    def __init__(self, queue: JobQueue) -> None:
        self.queue = queue
        #: Records read before (their store tells which changed since).
        self._cache: RecordCache = {}
        #: Names of the jobs that had not finished at the last look.
        self.active: set[str] = set()
        #: Whether one of them was running.
        self.running = False

    def read(self) -> list[Job]:
        """Every job, reading only the records that changed."""
        backend = self.queue.backend
        found = backend.store.entries(cache=self._cache)
        jobs = show_failed_dependencies(shown(backend, found))
        return self._note(self._explained(found, jobs))

    def refresh(self, jobs: list[Job]) -> list[Job]:
        """``jobs`` with those that have not finished looked at again.

        Cheap between two full reads: finished jobs are not touched.
        """
        active = self.active
        if not active:
            return jobs
        found = self.queue.backend.store.entries(names=active, cache=self._cache)
        fresh = {
            job.name: job
            for job in shown(self.queue.backend, found, with_processes=False)
        }
        merged = self._explained(
            found, show_failed_dependencies([fresh.get(job.name, job) for job in jobs])
        )
        if [job for job in merged if job.name in active] == [
            job for job in jobs if job.name in active
        ]:
            return jobs  # the same list: nothing to draw
        return self._note(merged)

    def _explained(self, records: dict[str, Entry], jobs: list[Job]) -> list[Job]:
        """``jobs`` with what the waiting ones among ``records`` wait for."""
        ended = {job.name: job.state for job in jobs if job.finished}
        return with_reasons(self.queue.backend, records, jobs, ended.get)

    def _note(self, jobs: list[Job]) -> list[Job]:
        """Remember which of ``jobs`` have not finished, and whether any runs."""
        self.active = {job.name for job in jobs if job.state not in FINAL_STATES}
        self.running = any(job.state == RUNNING for job in jobs)
        return jobs


@dataclass
class TermBuffer:
    r"""A job's output as a terminal shows it: lines, and the line being drawn.

    ``\n`` ends a line; ``\r`` goes back to its start, so what follows is
    written over it (a progress bar). Only the last ``max_lines`` lines are
    kept.
    """

    max_lines: int = 5000
    lines: list[str] = field(default_factory=list)
    current: str = ""
    _column: int = 0
    _pending: bytes = b""

    def feed(self, data: bytes) -> list[str]:
        """Take more output; the lines it ended (to append to the view)."""
        data = self._pending + data
        cut = _complete_utf8(data)
        self._pending = data[cut:]
        ended: list[str] = []
        for token in _CONTROL.split(data[:cut].decode("utf-8", "replace")):
            if token == "\n":
                ended.append(self.current)
                self.current, self._column = "", 0
            elif token == "\r":
                self._column = 0
            elif token:
                end = self._column + len(token)
                self.current = self.current[: self._column] + token + self.current[end:]
                self._column = end
        self.lines.extend(ended)
        if len(self.lines) > self.max_lines:
            del self.lines[: len(self.lines) - self.max_lines]
        return ended


_CONTROL = re.compile(r"(\r|\n)")


def _complete_utf8(data: bytes) -> int:
    """Where an incomplete UTF-8 sequence at the end of ``data`` starts."""
    for back in range(1, min(4, len(data)) + 1):
        byte = data[-back]
        if byte & 0xC0 == 0x80:
            continue  # a continuation byte: look further back
        needed = 4 if byte >= 0xF0 else 3 if byte >= 0xE0 else 2 if byte >= 0xC0 else 1
        return len(data) - back if back < needed else len(data)
    return len(data)


class OutputFollower:
    """Reads what a job's output file gained since the last look."""

    def __init__(self, path: Path) -> None:
        self.path = path
        self.offset: int | None = None

    def read_new(self) -> bytes:
        """New bytes (at first, the last :data:`TAIL_BYTES`); empty if none."""
        try:
            fd = open_regular(self.path)
        except OSError:
            return b""
        with os.fdopen(fd, "rb") as fobj:
            size = os.fstat(fd).st_size
            if self.offset is None or size < self.offset:
                self.offset = max(0, size - TAIL_BYTES)
            fobj.seek(self.offset)
            data = fobj.read(size - self.offset)
        self.offset += len(data)
        return data


class StreamFollower:
    """Reads what a job's output stream on a server gained since the last look."""

    def __init__(self, queue: SharedOutput, name: str) -> None:
        self.queue = queue
        self.name = name
        self.last: str | None = None

    def read_new(self) -> bytes:
        """New bytes (at first, the last :data:`TAIL_BYTES`); empty if none."""
        pieces = self.queue.output_pieces(self.name, self.last or "-")
        if not pieces:
            return b""
        data = b"".join(piece for _, piece in pieces)
        if self.last is None:
            data = data[-TAIL_BYTES:]
        self.last = pieces[-1][0]
        return data


class SharedOutput(Protocol):
    """A queue whose jobs' output is a stream of pieces on a server."""

    def output_pieces(self, name: str, after: str = "-") -> list[tuple[str, bytes]]:
        """The pieces after ``after`` (``-``: all), with their ids."""


class Watcher:
    """A thread that calls ``on_change(True)`` when the queue folders change.

    It also calls ``on_change(False)`` every :data:`TICK_S` (durations tick),
    or every :data:`BUSY_S` while :attr:`busy` or where a folder has no
    inotify (then a change is only seen by a ``stat``, also reported).
    """

    def __init__(
        self, folders: Iterable[Path], on_change: Callable[[bool], None]
    ) -> None:
        self._folders = list(folders)
        self._on_change = on_change
        self._stop = threading.Event()
        self._extra: FolderWaiter | None = None
        self._extra_lock = threading.Lock()
        self._waiters: list[FolderWaiter] = []
        self._wake_r, self._wake_w = os.pipe()
        os.set_blocking(self._wake_r, False)
        self.busy = False
        self._thread = threading.Thread(
            target=self._run, name="dvc-task-top", daemon=True
        )

    def start(self) -> None:
        """Start watching."""
        for folder in self._folders:
            folder.mkdir(mode=0o700, parents=True, exist_ok=True)
            self._waiters.append(FolderWaiter(folder, TICK_S, events=CHANGED_FILES))
        self._thread.start()

    def follow(self, folder: Path | None) -> None:
        """Also watch ``folder`` (a job's process folder); None: stop that."""
        with self._extra_lock:
            if self._extra is not None:
                self._extra.close()
            self._extra = (
                FolderWaiter(folder, TICK_S, events=CHANGED_FILES)
                if folder is not None and folder.is_dir()
                else None
            )
        self.wake()

    def wake(self) -> None:
        """Look now (safe from any thread)."""
        try:
            os.write(self._wake_w, b"!")
        except OSError:
            pass  # full (a wake-up is pending) or closed

    def stop(self) -> None:
        """Stop the thread and release the watches."""
        self._stop.set()
        self.wake()
        if self._thread.is_alive():
            self._thread.join(timeout=5)
        for waiter in self._waiters:
            waiter.close()
        self.follow(None)
        for fd in (self._wake_r, self._wake_w):
            os.close(fd)

    def _run(self) -> None:
        while not self._stop.is_set():
            with self._extra_lock:
                waiters = [*self._waiters, *([self._extra] if self._extra else [])]
            fds = [w.fileno() for w in waiters]
            poller = select.poll()
            poller.register(self._wake_r, select.POLLIN)
            for fd in fds:
                if fd is not None:
                    poller.register(fd, select.POLLIN)
            polling = any(fd is None for fd in fds)
            timeout = BUSY_S if self.busy or polling else TICK_S
            poller.poll(timeout * 1000)
            try:
                os.read(self._wake_r, 4096)
            except BlockingIOError:
                pass
            if self._stop.is_set():
                return
            changed = False
            with self._extra_lock:
                for waiter in waiters:
                    if waiter is self._extra or waiter in self._waiters:
                        changed = waiter.check() or changed
            self._on_change(changed)
