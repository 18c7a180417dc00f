"""What a job looks like to its users: one state, derived from what is on disk.

A job's state comes from three places that a job moves through in order: its
message in the queue (``queued``, or ``starting`` once a live worker has
claimed it), its record (the worker marks it started, or final), and its
process record (``running`` until a return code is recorded).
"""

from __future__ import annotations

import json
from collections.abc import Collection
from dataclasses import dataclass
from datetime import datetime, timezone
from pathlib import Path
from typing import Any

from dvc_task.app.broker import BrokerFolders, list_messages
from dvc_task.app.folderqueue import FolderQueue
from dvc_task.files import read_regular
from dvc_task.jobs.record import (
    FAILED,
    FINAL_STATES,
    KILLED,
    LOST,
    NOT_STARTED,
    QUEUED,
    RUNNING,
    STARTING,
    SUCCEEDED,
    JobRecord,
)
from dvc_task.proc.info import LOST_RETURNCODE, ProcessInfo, process_alive

#: A record younger than this whose message is not found yet is being queued.
YOUNG_RECORD_S = 10.0


@dataclass(frozen=True)
class Job:
    """A job as the command line, ``status`` and the Python API show it."""

    name: str
    state: str
    command: list[str]
    cwd: str | None
    submitted_at: str | None
    started_at: str | None = None
    finished_at: str | None = None
    returncode: int | None = None
    pid: int | None = None
    worker: str | None = None
    error: str | None = None
    output: str | None = None
    seq: int = 0

    @property
    def finished(self) -> bool:
        """Whether the job is in a state it never leaves."""
        return self.state in FINAL_STATES

    @property
    def duration(self) -> float | None:
        """Seconds it ran (so far, while running); None before it started."""
        if not self.started_at:
            return None
        try:
            start = parse_time(self.started_at)
            end = (
                parse_time(self.finished_at)
                if self.finished_at
                else datetime.now(timezone.utc)
            )
        except ValueError:
            return None  # a process record with a mangled time
        return max(0.0, (end - start).total_seconds())

    @property
    def exit_code(self) -> int:
        """The exit code a shell would give: 128 + N for a signal N, 1 if lost."""
        if self.returncode is None or self.state == LOST:
            return 1
        if self.returncode < 0:
            return 128 - self.returncode
        return self.returncode

    def asdict(self) -> dict[str, Any]:
        """The job as JSON-ready data (``duration`` included)."""
        return {
            "name": self.name,
            "state": self.state,
            "returncode": self.returncode,
            "exit_code": self.exit_code if self.finished else None,
            "command": self.command,
            "cwd": self.cwd,
            "submitted": self.submitted_at,
            "started": self.started_at,
            "finished": self.finished_at,
            "duration": self.duration,
            "pid": self.pid,
            "worker": self.worker,
            "error": self.error,
            "output": self.output,
        }


def parse_time(text: str) -> datetime:
    """A recorded UTC time; a naive one counts as UTC."""
    when = datetime.fromisoformat(text)
    return when if when.tzinfo else when.replace(tzinfo=timezone.utc)


def final_state(returncode: int, kill_signal: int | None) -> str:
    """The state of a job whose command exited with ``returncode``."""
    if returncode == 0:
        return SUCCEEDED
    if returncode < 0 or kill_signal is not None:
        return KILLED
    return FAILED


def message_task_id(path: Path, tasks: Collection[str] | None = None) -> str | None:
    """The Celery task id in message file ``path`` (None if unreadable).

    With ``tasks``, None also for a message of a task not among them.
    """
    try:
        headers = json.loads(read_regular(path))["headers"]
        task_id = headers["id"]
    except (OSError, ValueError, KeyError, TypeError):
        return None
    if tasks is not None and headers.get("task") not in tasks:
        return None
    return task_id if isinstance(task_id, str) else None


def queue_view(folders: BrokerFolders) -> dict[str, str]:
    """``task id -> queued | starting`` of every message waiting or claimed.

    The inbox is read before the claims: a message that a worker claims
    meanwhile moves forward, into a folder read later.
    """
    view: dict[str, str] = {}
    for name in list_messages(folders.inbox):
        task_id = message_task_id(folders.inbox / name)
        if task_id:
            view[task_id] = QUEUED
    for owner, alive in FolderQueue(folders).claims():
        state = STARTING if alive else QUEUED
        for name in list_messages(owner):
            task_id = message_task_id(owner / name)
            if task_id:
                view[task_id] = state
    return view


def derive(
    record: JobRecord,
    view: dict[str, str],
    info: ProcessInfo | None,
    output: str | None,
) -> Job:
    """The job's state from its record, the queue and its process record.

    ``info`` is the process record (None if there is none), read after the
    job record; ``view`` is :func:`queue_view`, read before it.
    """
    state = record.progress
    returncode = record.returncode
    finished_at = record.finished_at
    pid = info.pid if info is not None else None
    if record.progress == NOT_STARTED:
        state = view.get(record.task_id) or _missing(record)
    elif record.progress not in FINAL_STATES:
        if info is None:
            worker_alive = record.worker_pid is not None and process_alive(
                record.worker_pid, record.worker_create_time, record.worker_start_id
            )
            state = STARTING if worker_alive else LOST
        elif info.returncode is None:
            # Its worker waits for the command and records how it ended:
            # without it the job is lost, even if a leftover command runs on.
            state = RUNNING if info.runner_alive() else LOST
        else:
            returncode = info.returncode
            finished_at = info.finished_at
            lost = returncode == LOST_RETURNCODE and not info.runner_alive()
            state = LOST if lost else final_state(returncode, record.kill_signal)
    return Job(
        name=record.name,
        state=state,
        command=record.command,
        cwd=record.cwd,
        submitted_at=record.submitted_at,
        started_at=(info.started_at if info is not None else None) or record.started_at,
        finished_at=finished_at,
        returncode=returncode,
        pid=pid,
        worker=record.worker,
        error=record.error,
        output=output,
        seq=record.seq,
    )


def being_queued(record: JobRecord) -> bool:
    """Whether ``record`` is so young that its message may not be sent yet."""
    age = datetime.now(timezone.utc) - parse_time(record.submitted_at)
    return age.total_seconds() < YOUNG_RECORD_S


def _missing(record: JobRecord) -> str:
    # Neither waiting nor claimed, and no worker has marked it started.
    return QUEUED if being_queued(record) else LOST


def from_process(name: str, info: ProcessInfo, output: str | None) -> Job:
    """A process started without a job record (e.g. by an older dvc-task)."""
    if info.returncode is None:
        state = RUNNING
    elif info.returncode == LOST_RETURNCODE:
        state = LOST
    else:
        state = final_state(info.returncode, None)
    return Job(
        name=name,
        state=state,
        command=info.args or [],
        cwd=None,
        submitted_at=info.started_at,
        started_at=info.started_at,
        finished_at=info.finished_at,
        returncode=info.returncode,
        pid=info.pid,
        output=output,
    )
