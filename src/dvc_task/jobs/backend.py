"""The seam between what a job queue does and where it keeps things.

:mod:`~dvc_task.jobs.lifecycle`, :mod:`~dvc_task.jobs.control`,
:mod:`~dvc_task.jobs.dependencies`, :mod:`~dvc_task.jobs.output` and
:mod:`~dvc_task.jobs.workers` see a queue only through :class:`Backend`:
records and their lock (its ``store``), messages (send, unqueue, forget),
processes and output on this host, and the judgement of a redelivered
message. A folder (:class:`~dvc_task.jobs.folder.FolderBackend`) and a
Redis server (:class:`~dvc_task.jobs.redisqueue.RedisBackend`) implement
it; the facade, :class:`~dvc_task.jobs.queue.JobQueue`, holds one.
"""

from __future__ import annotations

from collections.abc import Collection, Iterable, Iterator
from contextlib import AbstractContextManager
from pathlib import Path
from typing import TYPE_CHECKING, Protocol

if TYPE_CHECKING:
    from celery import Celery

    from dvc_task.jobs.record import JobRecord
    from dvc_task.jobs.scheduler import ScheduleStore
    from dvc_task.jobs.store import JobStore, Waiter
    from dvc_task.jobs.view import Job, WorkerInfo
    from dvc_task.proc import ProcessManager

#: The Celery task that runs a job (see :mod:`dvc_task.jobs.tasks`).
JOB_TASK = "dvc_task.jobs.run"
#: What :meth:`Backend.redelivered` says of a started job's message.
RUNS_ELSEWHERE = "runs elsewhere"
TAKE_OVER = "take over"
LOST_ATTEMPT = "lost"


class AttemptLink:
    """What a worker keeps up while a job's attempt runs (nothing for a folder).

    A queue on a broker server sends the job's output and liveness to the
    server and listens for kill requests while the attempt runs.
    """

    def started(self) -> None:
        """The job's command has started."""

    def close(self) -> None:
        """The command has ended: its last output goes out now."""


class Backend(Protocol):
    """Where a queue keeps its jobs, messages, processes and output."""

    host: str
    folder: Path
    procs_dir: Path
    workers_dir: Path
    flows_dir: Path
    app_dir: Path
    shared: bool

    @property
    def schedules(self) -> ScheduleStore:
        """Where its schedules are kept, and its scheduler's lock."""

    @property
    def store(self) -> JobStore:
        """The records, their lock and what goes with them."""

    @property
    def app(self) -> Celery:
        """The Celery app that carries the jobs' messages."""

    @property
    def manager(self) -> ProcessManager:
        """The process manager of the jobs' commands on this host."""

    @property
    def locks_dir(self) -> Path:
        """Where this host's workers of the queue hold their name locks."""

    @property
    def broker_url(self) -> str | None:
        """The URL of the server that holds the jobs (None: a folder)."""

    @property
    def location(self) -> str:
        """Where the jobs are, for messages."""

    def exists(self) -> bool:
        """Whether a job was ever queued here."""

    def load(self, name: str) -> JobRecord:
        """The record of job ``name`` (UnknownJobError, InvalidJobRecordError)."""

    def save(self, record: JobRecord) -> None:
        """Write ``record`` (holding :meth:`locked`)."""

    def has_record(self, name: str) -> bool:
        """Whether job ``name`` has a record."""

    def locked(self) -> AbstractContextManager[object]:
        """The lock that every change of a record is made under."""

    def changes(self) -> Waiter:
        """A waiter woken when a record is written."""

    def batch(self) -> AbstractContextManager[None]:
        """Write many records and messages, made durable together at the end."""

    def prepare(self) -> None:
        """Make what the queue needs before its first job is queued."""

    def publish(self, record: JobRecord, countdown: float | None = None) -> None:
        """Queue the message of ``record``'s current task id."""

    def unqueue(self, task_id: str) -> None:
        """Take the message of ``task_id`` off the queue, if it still waits."""

    def forget_messages(self, task_ids: Collection[str]) -> None:
        """Remove what is left of these tasks' messages and results."""

    def forget_orphans(self) -> None:
        """Remove processed messages and results of jobs no record has."""

    def forget_output(self, name: str) -> None:
        """Remove job ``name``'s output kept outside its process folder."""

    def output_path(self, name: str) -> Path:
        """Where job ``name``'s output is written on this host."""

    def message_states(self) -> dict[str, str]:
        """``task id -> queued | starting`` of the messages waiting or claimed."""

    def job_from_record(
        self, record: JobRecord, view: dict[str, str] | None = None
    ) -> Job:
        """The job of ``record`` as users see it."""

    def processes_without_record(self, names: Collection[str]) -> list[Job]:
        """Jobs of this host's processes that have no record (dvc-task 0.40's)."""

    def read_output(self, name: str, tail: int | None = None) -> bytes:
        """Job ``name``'s output so far (its last ``tail`` lines if given)."""

    def copy_output(self, name: str, fd: int, tail: int | None = None) -> None:
        """Write job ``name``'s output so far to file descriptor ``fd``."""

    def follow_output(self, name: str, tail: int | None = None) -> Iterator[bytes]:
        """Yield job ``name``'s output as it is written, until the job ends."""

    def redelivered(self, record: JobRecord) -> str:
        """:data:`LOST_ATTEMPT`, :data:`RUNS_ELSEWHERE` or :data:`TAKE_OVER`."""

    def signal_job(self, name: str, sig: int) -> None:
        """Send ``sig`` to job ``name``'s process group (ProcessLookupError)."""

    def worker_env(self) -> dict[str, str] | None:
        """The environment of a detached worker (None: this one)."""

    def workers(self, jobs: Iterable[Job] | None = None) -> list[WorkerInfo]:
        """The live workers and the jobs each runs."""

    def ask_to_stop(self, worker: WorkerInfo) -> None:
        """Ask live ``worker`` to stop after its running jobs."""

    def worker_session(self, node: str) -> AbstractContextManager[None]:
        """Kept up while worker ``node`` of this queue runs."""

    def has_queued(self) -> bool:
        """Whether a message waits in the queue."""

    def ensure_worker(self) -> str | None:
        """Start a detached worker unless one serves the queue; its name."""

    def is_outage(self, exc: Exception) -> bool:
        """Whether ``exc`` says that the server of the jobs is away."""

    def before_start(self, name: str) -> None:
        """Called by a worker before it judges a message of job ``name``."""

    def attempt_link(self, name: str) -> AbstractContextManager[AttemptLink]:
        """Kept up by the worker while an attempt of job ``name`` runs."""
