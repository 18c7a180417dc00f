"""How jobs and workers look in a terminal: escaped text, times, tables."""

from __future__ import annotations

import re
import shlex
from collections.abc import Iterable
from datetime import datetime, timezone
from typing import Any

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
#: The columns of every job listing; PRIORITY, SLOTS and HOST are added
#: before COMMAND when a job has them (see :func:`job_header`).
JOB_HEADER = ["NAME", "STATE", "EXIT", "SUBMITTED", "STARTED", "DURATION", "COMMAND"]
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
    """``'running'``; ``'waiting for job a'``, ``'queued until 14:05:00'``.

    A job that started (or is still to start) past its deadline is
    ``'(late)'``.
    """
    words = _state_words(job)
    return f"{words} (late)" if job.late else words


def _state_words(job: Job) -> str:
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


def job_header(jobs: Iterable[Job], hosts: bool = False) -> list[str]:
    """The columns for ``jobs``: :data:`JOB_HEADER`, and the extra ones needed.

    PRIORITY and SLOTS (GPUs and resources) when a job has them, HOST with
    ``hosts``.
    """
    jobs = list(jobs)
    extra = [
        column
        for column, shown in (
            ("PRIORITY", any(job.priority for job in jobs)),
            ("SLOTS", any(slots_text(job) for job in jobs)),
            ("HOST", hosts),
        )
        if shown
    ]
    return [*JOB_HEADER[:-1], *extra, JOB_HEADER[-1]]


def slots_text(job: Job) -> str:
    """``'gpu 0,1 mem=8'`` (GPUs it got, or ``'2 gpus'`` it needs)."""
    parts = []
    if job.gpus:
        parts.append(f"gpu {','.join(job.gpus)}")
    elif job.gpus_needed:
        parts.append(f"{job.gpus_needed} gpu{'s' if job.gpus_needed > 1 else ''}")
    parts += [f"{name}={count}" for name, count in job.resources]
    return printable(" ".join(parts))


def job_row(job: Job, now: datetime, header: list[str]) -> list[str]:
    """The cells of ``job`` under ``header`` (see :func:`job_header`)."""
    cells = {
        "NAME": printable(job.name),
        "STATE": state_text(job),
        "EXIT": "" if job.returncode is None else str(job.returncode),
        "SUBMITTED": ago(job.submitted_at, now),
        "STARTED": ago(job.started_at, now),
        "DURATION": duration(job.duration),
        "PRIORITY": str(job.priority) if job.priority else "",
        "SLOTS": slots_text(job),
        "HOST": printable(job.host or ""),
        "COMMAND": printable(shlex.join(job.command)),
    }
    return [cells[column] for column in header]


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


def detail_lines(data: dict[str, Any], now: datetime) -> list[tuple[str, str]]:
    """``(label, text)`` lines of a job in full (``JobQueue.describe``'s data).

    Only what the job has: no empty lines for options it was not given.
    """
    state = str(data["state"])
    if data.get("waiting_for"):
        state += f" for {data['waiting_for']}"
    if data.get("max_attempts", 1) > 1:
        state += f", attempt {data['attempt']}/{data['max_attempts']}"
    worker = data.get("worker") or ""
    if worker and data.get("host"):
        worker += f" on {data['host']}"
    slots = []
    if data.get("gpus"):
        slots.append(f"gpu {','.join(data['gpus'])}")
    elif data.get("gpus_needed"):
        slots.append(f"{data['gpus_needed']} gpu(s)")
    slots += [f"{k}={v}" for k, v in sorted((data.get("resources") or {}).items())]
    retries = data.get("retries") or 0
    env = data.get("env_keys") or []
    lines = [
        ("name", data["name"]),
        ("state", state),
        ("exit code", "" if data.get("returncode") is None else data["returncode"]),
        ("error", data.get("error") or ""),
        ("command", shlex.join(data.get("command") or [])),
        ("cwd", data.get("cwd") or ""),
        ("env", f"{len(env)} variables: {', '.join(env)}" if env else ""),
        ("submitted", _when(data.get("submitted"), now)),
        ("starts at", _when(data.get("not_before"), now)),
        ("started", _when(data.get("started"), now)),
        ("finished", _when(data.get("finished"), now)),
        ("duration", duration(data.get("duration"))),
        ("paused", duration(data.get("paused_s")) if data.get("paused_s") else ""),
        ("worker", worker),
        ("pid", data.get("pid") or ""),
        ("priority", data.get("priority") or ""),
        ("after", ", ".join(data.get("after") or [])),
        ("slots", " ".join(slots)),
        ("time limit", f"{data['timeout']:g} s" if data.get("timeout") else ""),
        (
            "retries",
            f"{retries} (first after {data.get('retry_delay', 0):g} s, each later "
            f"x{data.get('retry_backoff', 1):g})"
            if retries
            else "",
        ),
        ("creates", ", ".join(data.get("creates") or [])),
        ("output", data.get("output") or ""),
    ]
    for attempt in data.get("attempts") or []:
        code = attempt.get("returncode")
        where = attempt.get("worker") or ""
        if attempt.get("host"):
            where += f" on {attempt['host']}"
        text = f"{attempt.get('state')}" + ("" if code is None else f" (exit {code})")
        text += (
            f", {_when(attempt.get('started_at'), now)}"
            if attempt.get("started_at")
            else ""
        )
        text += f", {where}" if where else ""
        lines.append((f"attempt {attempt.get('attempt')}", text))
    return [(label, printable(str(text))) for label, text in lines if text != ""]


def _when(text: str | None, now: datetime) -> str:
    """``'2026-12-04 14:05:00 (3 min ago)'`` in local time; '' for none."""
    if not text:
        return ""
    when = parse_time(text)
    relative = ago(text, now) if when <= now else "later"
    return f"{when.astimezone():%Y-%m-%d %H:%M:%S} ({relative})"
