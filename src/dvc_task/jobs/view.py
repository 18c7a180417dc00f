"""What a job looks like to its users: one state, read from its phase.

Read only. A job's record holds its phase (see
:mod:`~dvc_task.jobs.lifecycle`); what a user sees adds two things to it:
for a queued job, whether its message waits (``queued``), was claimed by a
live worker (``starting``) or is nowhere to be found (``lost``); for a
started one, its process record (``running`` until a return code is
recorded, ``lost`` if its worker died).
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime, timezone
from typing import Any

from dvc_task.jobs.listing import UNREADABLE
from dvc_task.jobs.record import (
    FAILED,
    FINAL_STATES,
    KILLED,
    LOST,
    PAUSED,
    QUEUED,
    RETRY_WAIT,
    RUNNING,
    SKIPPED,
    STARTING,
    SUCCEEDED,
    TIMED_OUT,
    WAITING,
    WAITING_FOR_JOBS,
    WAITING_FOR_SLOTS,
    JobRecord,
)
from dvc_task.jobs.slots import Offer
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
    attempt: int = 1
    max_attempts: int = 1
    after: tuple[str, ...] = ()
    priority: int = 0
    gpus: tuple[str, ...] = ()
    resources: tuple[tuple[str, int], ...] = ()
    #: The host of the worker that ran it (None before it started).
    host: str | None = None
    #: What a ``waiting`` job waits for, in words (``'jobs a, b'``).
    waiting_for: str | None = None
    #: A job queued for later starts no earlier than this (UTC).
    not_before: str | None = None
    #: GPUs it needs (``gpus`` are those it got).
    gpus_needed: int = 0
    #: It should have started by then (UTC; a schedule's SLA), if set.
    start_by: str | None = None

    @property
    def late(self) -> bool:
        """Whether it started after ``start_by``, or has not started and it passed."""
        if self.start_by is None:
            return False
        deadline = parse_time(self.start_by)
        if self.started_at:
            return parse_time(self.started_at) > deadline
        return not self.finished and datetime.now(timezone.utc) > deadline

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
        """The exit code a shell would give: 128 + N for a signal N, 1 if lost.

        A skipped job (its outputs existed) counts as a success: 0.
        """
        if self.state == SKIPPED:
            return 0
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
            "host": self.host,
            "error": self.error,
            "output": self.output,
            "attempt": self.attempt,
            "max_attempts": self.max_attempts,
            "after": list(self.after),
            "priority": self.priority,
            "gpus": list(self.gpus),
            "resources": dict(self.resources),
            "waiting_for": self.waiting_for,
            "not_before": self.not_before,
            "gpus_needed": self.gpus_needed,
            "start_by": self.start_by,
            "late": self.late,
        }


def parse_time(text: str) -> datetime:
    """A recorded UTC time; a naive one counts as UTC."""
    when = datetime.fromisoformat(text)
    return when if when.tzinfo else when.replace(tzinfo=timezone.utc)


def final_state(
    returncode: int, kill_signal: int | None, timed_out: bool = False
) -> str:
    """The state of a job whose command exited with ``returncode``."""
    if returncode == 0:
        return SUCCEEDED
    if timed_out:
        return TIMED_OUT
    if returncode < 0 or kill_signal is not None:
        return KILLED
    return FAILED


def derive(
    record: JobRecord,
    view: dict[str, str],
    info: ProcessInfo | None,
    output: str | None,
) -> Job:
    """The job's state from its record, the queue and its process record.

    ``info`` is the process record (None if there is none), read after the
    job record; ``view`` is the backend's ``message_states()``, read before it.
    """
    state = record.phase
    returncode = record.returncode
    finished_at = record.finished_at
    pid = info.pid if info is not None else None
    if record.phase in (WAITING_FOR_JOBS, WAITING_FOR_SLOTS):
        state = WAITING
    elif record.phase == RETRY_WAIT and due_later(record):
        state = QUEUED  # a retry that a worker keeps until it is due
    elif record.phase in (QUEUED, RETRY_WAIT):
        state = view.get(record.task_id) or _missing(record)
    elif record.runs:
        state, returncode, finished_at = _started_state(record, info)
        if state == RUNNING and record.phase == PAUSED:
            state = PAUSED
    if state == LOST and record.attempt < record.max_attempts:
        state = QUEUED  # its message goes back to the queue: a retry follows
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
        attempt=record.attempt,
        max_attempts=record.max_attempts,
        after=tuple(record.after),
        priority=record.priority,
        gpus=tuple(record.assigned_gpus),
        resources=tuple(sorted(record.resources.items())),
        host=record.host,
        not_before=record.not_before,
        gpus_needed=record.gpus,
        start_by=record.start_by,
    )


def _worker_alive(record: JobRecord) -> bool:
    return record.worker_pid is not None and process_alive(
        record.worker_pid, record.worker_create_time, record.worker_start_id
    )


def _started_state(
    record: JobRecord, info: ProcessInfo | None
) -> tuple[str, int | None, str | None]:
    """State, return code and end of a job its worker marked started."""
    if info is None:
        return (STARTING if _worker_alive(record) else LOST), None, None
    if info.returncode is None:
        # Its worker waits for the command and records how it ended:
        # without it the job is lost, even if a leftover command runs on.
        return (RUNNING if info.runner_alive() else LOST), None, None
    if (record.retries or record.timeout is not None) and _worker_alive(record):
        # Its worker is about to record a time-out, or to queue a retry.
        return RUNNING, None, None
    returncode = info.returncode
    if returncode == LOST_RETURNCODE and not info.runner_alive():
        return LOST, returncode, info.finished_at
    state = final_state(returncode, record.kill_signal, record.timed_out)
    return state, returncode, info.finished_at


def due_later(record: JobRecord) -> bool:
    """Whether ``record`` is a retry whose delay has not passed yet."""
    try:
        return record.retry_at is not None and parse_time(
            record.retry_at
        ) > datetime.now(timezone.utc)
    except ValueError:
        return False


def being_queued(record: JobRecord) -> bool:
    """Whether ``record`` is so young that its message may not be sent yet."""
    age = datetime.now(timezone.utc) - parse_time(
        record.queued_at or record.submitted_at
    )
    return age.total_seconds() < YOUNG_RECORD_S


def _missing(record: JobRecord) -> str:
    # Neither waiting nor claimed, and no worker has marked it started.
    return QUEUED if being_queued(record) else LOST


def unreadable(name: str, error: str) -> Job:
    """A job whose record cannot be read (listed last, its error kept)."""
    return Job(name, UNREADABLE, [], None, None, error=error, seq=1 << 62)


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


@dataclass(frozen=True)
class WorkerInfo:
    """A live worker of a job folder."""

    name: str
    node: str
    pid: int | None
    started_at: str | None
    running: tuple[str, ...]
    idle_since: str | None
    #: Jobs at once (known for detached workers).
    concurrency: int | None = None
    #: Its host (known for workers on a broker server).
    host: str | None = None
    #: The GPUs and resources it runs jobs on (None: not known).
    offer: Offer | None = None

    @property
    def label(self) -> str:
        """How listings name it: ``name@host`` where the host is known."""
        return self.name if self.host is None else f"{self.name}@{self.host}"

    def asdict(self) -> dict[str, Any]:
        """As JSON-ready data."""
        return {
            "name": self.name,
            "node": self.node,
            "pid": self.pid,
            "started": self.started_at,
            "running": list(self.running),
            "idle_since": self.idle_since,
            "concurrency": self.concurrency,
            "host": self.host,
            "gpus": None if self.offer is None else list(self.offer.gpus),
            "resources": None if self.offer is None else dict(self.offer.resources),
        }
