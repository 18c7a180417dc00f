"""A job's record: what was asked for, and what became of it.

One record per job, written when the job is queued. Its :attr:`JobRecord.phase`
is the job's one true place in its life, changed only by
:mod:`dvc_task.jobs.lifecycle`, under the jobs lock; ``has_message`` says
whether a message of its current task id was sent and not yet taken. The
state a user sees is derived from the phase and, for a started job, its
process record (see :mod:`dvc_task.jobs.view`).
"""

from __future__ import annotations

import json
from collections.abc import Iterable, Iterator
from dataclasses import MISSING, dataclass, field, fields
from datetime import datetime, timezone
from pathlib import Path
from typing import Any

from dvc_task.exceptions import DvcTaskError
from dvc_task.files import (
    FileLock,
    NotARegularFileError,
    check_name,
    read_regular,
    write_atomic,
)

QUEUED = "queued"
STARTING = "starting"
RUNNING = "running"
SUCCEEDED = "succeeded"
FAILED = "failed"
KILLED = "killed"
LOST = "lost"
FAILED_TO_START = "failed to start"
HELD = "held"
WAITING = "waiting"
TIMED_OUT = "timed out"
DEPENDENCY_FAILED = "dependency failed"
SKIPPED = "skipped"
#: Stopped (SIGSTOP) by ``pause`` until ``resume``: a phase and a state.
PAUSED = "paused"
#: Every state, in the order a job goes through them.
STATES = (
    HELD,
    WAITING,
    QUEUED,
    STARTING,
    RUNNING,
    PAUSED,
    SUCCEEDED,
    SKIPPED,
    FAILED,
    TIMED_OUT,
    KILLED,
    LOST,
    FAILED_TO_START,
    DEPENDENCY_FAILED,
)
#: States a job never leaves.
FINAL_STATES = frozenset(
    {
        SUCCEEDED,
        SKIPPED,
        FAILED,
        TIMED_OUT,
        KILLED,
        LOST,
        FAILED_TO_START,
        DEPENDENCY_FAILED,
    }
)
#: Final states that count as success for the jobs that wait for them.
SUCCESS_STATES = frozenset({SUCCEEDED, SKIPPED})
#: The phases of a job that has not started. Queued: its message waits (or
#: a worker holds it); waiting to retry: its message waits out a retry's
#: delay; the three parked phases have no message.
WAITING_FOR_JOBS = "waiting for jobs"
WAITING_FOR_SLOTS = "waiting for slots"
RETRY_WAIT = "waiting to retry"
#: A worker has taken the job and runs it (its process says how far).
STARTED = "started"
#: Phases without a message, left by ``release`` or :func:`promote`.
PARKED_PHASES = frozenset({HELD, WAITING_FOR_JOBS, WAITING_FOR_SLOTS})
#: Phases of a job that has not started.
NOT_STARTED_PHASES = frozenset({QUEUED, RETRY_WAIT, *PARKED_PHASES})
#: Phases of a job a worker runs (its command may be stopped by ``pause``).
RUN_PHASES = frozenset({STARTED, PAUSED})
#: Every phase; the final ones are the final states.
PHASES = (*NOT_STARTED_PHASES, *RUN_PHASES, *FINAL_STATES)

#: Exit codes of a command that could not be started, as shells have them.
NOT_FOUND_EXIT = 127
NOT_EXECUTABLE_EXIT = 126


# The exact types that JSON gives each field (a flag only is a bool: bool is
# not int here, as it is for isinstance).
def _exact(*types: type) -> frozenset[type]:
    return frozenset(types)


_OPTIONAL_STR = _exact(str, type(None))
_OPTIONAL_INT = _exact(int, type(None))
_NUMBER = _exact(float, int)
_TYPES: dict[str, frozenset[type]] = {
    "name": _exact(str),
    "seq": _exact(int),
    "command": _exact(list),
    "cwd": _exact(str),
    "env": _exact(dict),
    "submitted_at": _exact(str),
    "task_id": _exact(str),
    "phase": _exact(str),
    "has_message": _exact(bool),
    "worker": _OPTIONAL_STR,
    "worker_pid": _OPTIONAL_INT,
    "worker_create_time": _exact(float, int, type(None)),
    "worker_start_id": _OPTIONAL_STR,
    "started_at": _OPTIONAL_STR,
    "finished_at": _OPTIONAL_STR,
    "returncode": _OPTIONAL_INT,
    "error": _OPTIONAL_STR,
    "kill_signal": _OPTIONAL_INT,
    "retries": _exact(int),
    "retry_delay": _NUMBER,
    "retry_backoff": _NUMBER,
    "attempt": _exact(int),
    "attempts": _exact(list),
    "retry_at": _OPTIONAL_STR,
    "timeout": _exact(float, int, type(None)),
    "timed_out": _exact(bool),
    "after": _exact(list),
    "priority": _exact(int),
    "queued_at": _OPTIONAL_STR,
    "waiting_since": _OPTIONAL_STR,
    "creates": _exact(list),
    "gpus": _exact(int),
    "resources": _exact(dict),
    "assigned_gpus": _exact(list),
    "host": _OPTIONAL_STR,
    "handovers": _exact(int),
    "paused_at": _OPTIONAL_STR,
    "not_before": _OPTIONAL_STR,
    "start_by": _OPTIONAL_STR,
    "paused_s": _NUMBER,
}


def check_job_name(name: str) -> str:
    """``name`` if a new job may have it (see :func:`check_name`).

    Besides what no file name may be, a job's name may not start with ``.``
    (listings skip such files) or ``-`` (it would read as an option).

    Raises:
        ValueError: saying what is wrong with it.

    """
    check_name(name, "job")
    if name[0] in ".-":
        raise ValueError(
            f"invalid job name {name!r}: it may not start with {name[0]!r}"
        )
    return name


class JobError(DvcTaskError):
    """A job operation cannot be done; the message says why and what to do."""


class UnknownJobError(JobError, KeyError):
    """No job of that name exists."""

    def __init__(self, name: str) -> None:
        self.name = name
        super().__init__(f"no job named {name!r}")

    def __str__(self) -> str:
        return str(self.args[0])


class JobNotFinishedError(JobError):
    """The job has not finished, and the operation needs it finished."""

    def __init__(self, name: str, state: str) -> None:
        self.name = name
        self.state = state
        super().__init__(
            f"job {name!r} is {state}: kill it first, or remove it with force=True"
        )


class InvalidJobRecordError(JobError, ValueError):
    """A job record cannot be read; the job can still be removed."""

    def __init__(self, path: str, reason: str) -> None:
        self.path = path
        super().__init__(f"cannot read job record '{path}': {reason}")


@dataclass
class JobRecord:
    """What is recorded about one job."""

    name: str
    seq: int
    command: list[str]
    cwd: str
    env: dict[str, str]
    submitted_at: str
    task_id: str
    #: One of :data:`PHASES`; only :mod:`dvc_task.jobs.lifecycle` sets it.
    phase: str = QUEUED
    #: Whether a message of ``task_id`` was sent and no worker took it yet.
    has_message: bool = False
    worker: str | None = None
    worker_pid: int | None = None
    worker_create_time: float | None = None
    #: The worker's clock-step-proof identity (see ``process_start_id``).
    worker_start_id: str | None = None
    started_at: str | None = None
    finished_at: str | None = None
    returncode: int | None = None
    error: str | None = None
    #: Signal that ``kill`` sent (or asked the worker to send), if any.
    kill_signal: int | None = None
    #: How many more times a failed attempt is run, the wait before the
    #: first retry, and the factor of each later wait.
    retries: int = 0
    retry_delay: float = 0.0
    retry_backoff: float = 1.0
    #: This attempt's number (1 for the first run) and the earlier ones.
    attempt: int = 1
    attempts: list[dict[str, Any]] = field(default_factory=list)
    #: When a retry waiting in the queue is due.
    retry_at: str | None = None
    #: Seconds an attempt may run before it is stopped (None: no limit).
    timeout: float | None = None
    timed_out: bool = False
    #: Jobs that must succeed first.
    after: list[str] = field(default_factory=list)
    #: Higher first; FIFO within one priority.
    priority: int = 0
    #: When its current message was queued (None: when it was submitted).
    queued_at: str | None = None
    #: Since when it has waited for slots (None: it does not).
    waiting_since: str | None = None
    #: Paths (relative to ``cwd``) that, when all exist, make it skipped.
    creates: list[str] = field(default_factory=list)
    #: GPUs and other resource units it needs, and the GPUs it got.
    gpus: int = 0
    resources: dict[str, int] = field(default_factory=dict)
    assigned_gpus: list[str] = field(default_factory=list)
    #: The host of the worker that ran (or runs) it.
    host: str | None = None
    #: Times a worker died mid-run and another one took the job over.
    handovers: int = 0
    #: Since when it is paused, and the seconds of earlier pauses of this
    #: attempt (its time limit does not count them).
    paused_at: str | None = None
    paused_s: float = 0.0
    #: It starts no earlier than this (``run --in``/``--at``).
    not_before: str | None = None
    #: It is late if it has not started by then (a schedule's SLA).
    start_by: str | None = None

    @classmethod
    def load(cls, path: Path) -> JobRecord:
        """Read the record at ``path``.

        Raises:
            FileNotFoundError: no such record.
            InvalidJobRecordError: the file is not a valid record.
        """
        try:
            data = read_regular(path)
        except NotARegularFileError as exc:
            raise InvalidJobRecordError(str(path), str(exc)) from None
        return cls.parse(data, str(path))

    @classmethod
    def parse(cls, data: bytes, where: str) -> JobRecord:
        """The record in JSON ``data``, read from ``where`` (for errors).

        Raises:
            InvalidJobRecordError: ``data`` is not a valid record.
        """
        try:
            raw = json.loads(data)
        except ValueError as exc:
            raise InvalidJobRecordError(where, f"not JSON ({exc})") from None
        if not isinstance(raw, dict):
            raise InvalidJobRecordError(where, "not a JSON object")
        if "phase" not in raw:
            _upgrade(raw)
        missing = [name for name in _REQUIRED if name not in raw]
        if missing:
            raise InvalidJobRecordError(where, f"field {missing[0]!r} is missing")
        if not raw.keys() <= _KNOWN:  # fields of a later version: ignored
            raw = {k: v for k, v in raw.items() if k in _KNOWN}
        try:
            record = cls(**raw)
        except TypeError as exc:
            raise InvalidJobRecordError(where, str(exc)) from None
        problem = record._problem()
        if problem:
            raise InvalidJobRecordError(where, problem)
        return record

    def _problem(self) -> str | None:
        return next(self._problems(), None)

    def _problems(self) -> Iterator[str]:
        # Checked for every record of every listing: type sets, not loops.
        values = vars(self)
        for name, types in _TYPES.items():
            if type(values[name]) not in types:
                yield f"field '{name}' has a bad value {values[name]!r:.80}"
                return
        for name in ("command", "after", "creates", "assigned_gpus"):
            if not _all_of(str, values[name]):
                yield f"{name!r} is not a list of strings"
        if not (_all_of(str, self.resources) and _all_of(int, self.resources.values())):
            yield "'resources' is not a mapping of names to counts"
        if not _all_of(dict, self.attempts):
            yield "'attempts' is not a list of objects"
        if not (_all_of(str, self.env) and _all_of(str, self.env.values())):
            yield "'env' is not a mapping of strings"
        if self.phase not in PHASES:
            yield f"unknown phase {self.phase!r:.80}"
        for when in (
            self.submitted_at,
            self.started_at,
            self.finished_at,
            self.queued_at,
            self.retry_at,
            self.waiting_since,
            self.paused_at,
            self.not_before,
            self.start_by,
        ):
            try:
                if when is not None:
                    datetime.fromisoformat(when)
            except ValueError:
                yield f"{when!r:.80} is not a time"

    @property
    def not_started(self) -> bool:
        """Whether no worker has taken it yet (and it has not ended)."""
        return self.phase in NOT_STARTED_PHASES

    @property
    def runs(self) -> bool:
        """Whether a worker has started it and it has not ended (maybe paused)."""
        return self.phase in RUN_PHASES

    @property
    def parked(self) -> bool:
        """Whether it is kept out of the queue (held, or waiting for something)."""
        return self.phase in PARKED_PHASES

    @property
    def finished(self) -> bool:
        """Whether it is in a final phase."""
        return self.phase in FINAL_STATES

    def seconds_to_start(self) -> float:
        """Seconds until it may start (``not_before``); 0 if it may now."""
        if self.not_before is None:
            return 0.0
        when = datetime.fromisoformat(self.not_before)
        if when.tzinfo is None:
            when = when.replace(tzinfo=timezone.utc)
        return max(0.0, (when - datetime.now(timezone.utc)).total_seconds())

    def paused_for(self) -> float:
        """Seconds this attempt has been paused so far (its pauses, and this one)."""
        paused = self.paused_s
        if self.paused_at is not None:
            since = datetime.fromisoformat(self.paused_at)
            if since.tzinfo is None:
                since = since.replace(tzinfo=timezone.utc)
            paused += (datetime.now(timezone.utc) - since).total_seconds()
        return max(0.0, paused)

    @property
    def max_attempts(self) -> int:
        """How many attempts it may have in all."""
        return 1 + self.retries

    def dump(self, path: Path, fsync: bool = True) -> None:
        """Write the record atomically (0600); durably unless not ``fsync``."""
        write_atomic(path, self.to_json(), fsync=fsync)

    def to_json(self) -> bytes:
        """The record as JSON (what :meth:`parse` reads)."""
        # Its fields are JSON values already: no deep copy (asdict) needed.
        return json.dumps(vars(self)).encode("utf-8")


#: The fields of a record, and those without a default (read once).
_KNOWN = frozenset(f.name for f in fields(JobRecord))
_REQUIRED = tuple(
    f.name
    for f in fields(JobRecord)
    if f.default is MISSING and f.default_factory is MISSING
)


def _all_of(kind: type, items: Iterable[object]) -> bool:
    """Whether every one of ``items`` is exactly of type ``kind``."""
    return set(map(type, items)) <= {kind}


def _upgrade(raw: dict[str, Any]) -> None:
    """Give a record written before phases existed its phase (in place)."""
    progress = raw.get("progress")
    if progress in FINAL_STATES:
        raw["phase"] = progress
    elif progress == STARTED:
        raw["phase"] = STARTED
    elif raw.get("held") is True:
        raw["phase"] = HELD
    elif raw.get("waiting_for") in ("jobs", "slots"):
        raw["phase"] = f"waiting for {raw['waiting_for']}"
    else:
        raw["phase"] = QUEUED
        raw["has_message"] = True


def jobs_lock(folder: Path) -> FileLock:
    """Exclusive lock of the jobs folder (its ``.lock`` file), to use in ``with``."""
    return FileLock(folder / ".lock")
