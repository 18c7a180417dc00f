"""How jobs and workers look in a terminal: escaped text, times, tables."""

from __future__ import annotations

import re
import shlex
from collections.abc import Iterable
from datetime import datetime, timezone

from dvc_task.jobs.listing import UNREADABLE
from dvc_task.jobs.record import (
    DEPENDENCY_FAILED,
    FAILED,
    FAILED_TO_START,
    HELD,
    KILLED,
    LOST,
    PAUSED,
    QUEUED,
    RUNNING,
    SKIPPED,
    STARTING,
    SUCCEEDED,
    TIMED_OUT,
    WAITING,
)
from dvc_task.jobs.view import Job, WorkerInfo, parse_time

#: Colour of each state (names as click and Textual know them).
COLOURS = {
    QUEUED: "blue",
    STARTING: "cyan",
    RUNNING: "yellow",
    PAUSED: "bright_yellow",
    SUCCEEDED: "green",
    FAILED: "red",
    FAILED_TO_START: "red",
    LOST: "red",
    KILLED: "magenta",
    UNREADABLE: "red",
    HELD: "bright_black",
    WAITING: "blue",
    SKIPPED: "green",
    TIMED_OUT: "red",
    DEPENDENCY_FAILED: "red",
}
JOB_HEADER = ["NAME", "STATE", "EXIT", "SUBMITTED", "STARTED", "DURATION", "COMMAND"]
#: The same with the host that ran each job (jobs on a server).
JOB_HEADER_HOSTS = [*JOB_HEADER[:-1], "HOST", JOB_HEADER[-1]]
WORKER_HEADER = ["WORKER", "PID", "RUNNING", "IDLE SINCE"]
_CONTROL = re.compile(r"[\x00-\x1f\x7f-\x9f]")


def printable(text: str) -> str:
    r"""``text`` with control characters escaped (``\n``, ``\x1b``...)."""
    return _CONTROL.sub(lambda m: m.group().encode("unicode_escape").decode(), text)


def ago(when: str | None, now: datetime) -> str:
    """``'3 min ago'`` for a recorded UTC time."""
    if not when:
        return ""
    seconds = (now - parse_time(when)).total_seconds()
    if seconds < 1:
        return "just now"
    for unit, size in (("d", 86400), ("h", 3600), ("min", 60)):
        if seconds >= size:
            return f"{int(seconds // size)} {unit} ago"
    return f"{int(seconds)} s ago"


def duration(seconds: float | None) -> str:
    """``'0.4s'``, ``'2m05s'``, ``'1h02m'``."""
    if seconds is None:
        return ""
    if seconds < 60:
        return f"{seconds:.1f}s"
    minutes, secs = divmod(int(seconds), 60)
    if minutes < 60:
        return f"{minutes}m{secs:02d}s"
    hours, minutes = divmod(minutes, 60)
    return f"{hours}h{minutes:02d}m"


def state_words(job: Job) -> str:
    """``'running'``; ``'waiting for job a'``, ``'queued until 14:05:00'``."""
    if job.waiting_for:
        return f"{job.state} for {printable(job.waiting_for)}"
    if job.state == QUEUED and job.not_before:
        when = parse_time(job.not_before)
        now = datetime.now(timezone.utc)
        if when > now:
            local = when.astimezone()
            shown = f"{local:%H:%M:%S}"
            if local.date() != now.astimezone().date():
                shown = f"{local:%Y-%m-%d} {shown}"
            return f"{job.state} until {shown}"
    return job.state


def state_text(job: Job) -> str:
    """:func:`state_words`; ``'failed, attempt 3/3'`` for a job with retries."""
    if job.max_attempts > 1:
        return f"{state_words(job)}, attempt {job.attempt}/{job.max_attempts}"
    return state_words(job)


def job_row(job: Job, now: datetime, hosts: bool = False) -> list[str]:
    """The cells of ``job`` under :data:`JOB_HEADER` (``JOB_HEADER_HOSTS``)."""
    return [
        printable(job.name),
        state_text(job),
        "" if job.returncode is None else str(job.returncode),
        ago(job.submitted_at, now),
        ago(job.started_at, now),
        duration(job.duration),
        *([printable(job.host or "")] if hosts else []),
        printable(shlex.join(job.command)),
    ]


def worker_row(worker: WorkerInfo, now: datetime) -> list[str]:
    """The cells of ``worker`` under :data:`WORKER_HEADER`."""
    return [
        printable(worker.label),
        str(worker.pid or ""),
        printable(", ".join(worker.running)) or "-",
        ago(worker.idle_since, now),
    ]


def table(rows: list[list[str]], shown: Iterable[list[str]] | None = None) -> list[str]:
    """Lines of ``rows`` in aligned columns.

    ``shown`` are the cells to print instead (e.g. coloured): the same text
    with invisible additions.
    """
    widths = [max(len(cells[i]) for cells in rows) for i in range(len(rows[0]))]
    lines = []
    for cells, styled in zip(rows, shown if shown is not None else rows):
        padded = [s + " " * (w - len(c)) for c, s, w in zip(cells, styled, widths)]
        lines.append("  ".join(padded).rstrip())
    return lines
