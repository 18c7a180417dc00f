"""A job's record: what was asked for, and what became of it.

One JSON file per job, ``<jobs>/<name>.json`` (0600 in a 0700 folder),
written when the job is queued and updated, under the folder's lock, by the
worker that starts it and by ``kill``. The state a user sees is derived from
the record, the queue and the process record (see :mod:`.queue`).
"""

from __future__ import annotations

import json
from dataclasses import asdict, dataclass, fields
from datetime import datetime
from pathlib import Path

from dvc_task.exceptions import DvcTaskError
from dvc_task.files import FileLock, NotARegularFileError, read_regular, write_atomic
from dvc_task.proc.info import utc_now

QUEUED = "queued"
STARTING = "starting"
RUNNING = "running"
SUCCEEDED = "succeeded"
FAILED = "failed"
KILLED = "killed"
LOST = "lost"
FAILED_TO_START = "failed to start"
#: Every state, in the order a job goes through them.
STATES = (
    QUEUED,
    STARTING,
    RUNNING,
    SUCCEEDED,
    FAILED,
    KILLED,
    LOST,
    FAILED_TO_START,
)
#: States a job never leaves.
FINAL_STATES = frozenset({SUCCEEDED, FAILED, KILLED, LOST, FAILED_TO_START})
#: What a record says before a worker has taken the job, and after.
NOT_STARTED = "not started"
STARTED = "started"

#: Exit codes of a command that could not be started, as shells have them.
NOT_FOUND_EXIT = 127
NOT_EXECUTABLE_EXIT = 126


_OPTIONAL_STR = (str, type(None))
_OPTIONAL_INT = (int, type(None))
_TYPES: dict[str, tuple[type, ...]] = {
    "name": (str,),
    "seq": (int,),
    "command": (list,),
    "cwd": (str,),
    "env": (dict,),
    "submitted_at": (str,),
    "task_id": (str,),
    "progress": (str,),
    "worker": _OPTIONAL_STR,
    "worker_pid": _OPTIONAL_INT,
    "worker_create_time": (float, int, type(None)),
    "worker_start_id": _OPTIONAL_STR,
    "started_at": _OPTIONAL_STR,
    "finished_at": _OPTIONAL_STR,
    "returncode": _OPTIONAL_INT,
    "error": _OPTIONAL_STR,
    "kill_signal": _OPTIONAL_INT,
}


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
    #: ``not started``, ``started`` or one of :data:`FINAL_STATES`.
    progress: str = NOT_STARTED
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
        try:
            raw = json.loads(data)
        except ValueError as exc:
            raise InvalidJobRecordError(str(path), f"not JSON ({exc})") from None
        if not isinstance(raw, dict):
            raise InvalidJobRecordError(str(path), "not a JSON object")
        known = {f.name for f in fields(cls)}
        try:
            record = cls(**{k: v for k, v in raw.items() if k in known})
        except TypeError as exc:
            raise InvalidJobRecordError(str(path), str(exc)) from None
        problem = record._problem()
        if problem:
            raise InvalidJobRecordError(str(path), problem)
        return record

    def _problem(self) -> str | None:
        for name, types in _TYPES.items():
            value = getattr(self, name)
            if isinstance(value, bool) or not isinstance(value, types):
                return f"field '{name}' has a bad value {value!r:.80}"
        if not all(isinstance(arg, str) for arg in self.command):
            return "'command' is not a list of strings"
        if not all(isinstance(v, str) for v in (*self.env, *self.env.values())):
            return "'env' is not a mapping of strings"
        if self.progress not in (NOT_STARTED, STARTED, *FINAL_STATES):
            return f"unknown progress {self.progress!r:.80}"
        for when in (self.submitted_at, self.started_at, self.finished_at):
            try:
                if when is not None:
                    datetime.fromisoformat(when)
            except ValueError:
                return f"{when!r:.80} is not a time"
        return None

    def finish(
        self,
        progress: str,
        returncode: int | None = None,
        error: str | None = None,
        finished_at: str | None = None,
    ) -> None:
        """Record how the job ended (at ``finished_at``, default now)."""
        self.progress = progress
        self.returncode = returncode
        if error is not None:
            self.error = error
        self.finished_at = finished_at or utc_now()

    def dump(self, path: Path) -> None:
        """Write the record atomically and durably (0600)."""
        write_atomic(path, json.dumps(asdict(self)).encode("utf-8"))


def folder_lock(folder: Path) -> FileLock:
    """Exclusive lock of ``folder`` (its ``.lock`` file), to use in ``with``."""
    return FileLock(folder / ".lock")
