"""The backend of a job queue in a folder (see :mod:`dvc_task.jobs.backend`)."""

from __future__ import annotations

import functools
import os
from collections.abc import Collection, Iterable, Iterator
from contextlib import contextmanager
from datetime import datetime, timedelta, timezone
from pathlib import Path
from typing import TYPE_CHECKING

from dvc_task import lazy
from dvc_task.app.broker import BrokerFolders, app_folders
from dvc_task.app.folderqueue import FolderQueue
from dvc_task.app.message import DEFAULT_QUEUE, task_message
from dvc_task.app.taskindex import TaskIndex
from dvc_task.files import check_name
from dvc_task.folders import check_private, make_private_folder
from dvc_task.jobs.backend import JOB_TASK, LOST_ATTEMPT, AttemptLink
from dvc_task.jobs.listing import folders
from dvc_task.jobs.liveworkers import live_workers, serving
from dvc_task.jobs.record import STARTING, JobRecord, UnknownJobError
from dvc_task.jobs.store import FolderStore, JobStore, Waiter
from dvc_task.jobs.view import Job, WorkerInfo, derive, from_process
from dvc_task.proc import ProcessManager
from dvc_task.utils import StrPath
from dvc_task.worker.locks import remove_info, write_info

if TYPE_CHECKING:
    from dvc_task.jobs import output, slots
    from dvc_task.jobs import workers as worker_ops
else:
    # For workers and for reading output only: queueing a job does not
    # load them.
    output = lazy.module("dvc_task.jobs.output")
    slots = lazy.module("dvc_task.jobs.slots")
    worker_ops = lazy.module("dvc_task.jobs.workers")

if TYPE_CHECKING:
    from contextlib import AbstractContextManager

    from dvc_task.app.filesystem import FSApp
    from dvc_task.jobs.scheduler import ScheduleStore

#: The modules of the tasks that a job queue's app runs.
TASK_MODULES = ["dvc_task.proc.tasks", "dvc_task.jobs.tasks"]
#: Where a Celery app made by a job queue keeps that queue's backend.
QUEUE_KEY = "dvc_task_queue"
#: Tasks whose processed messages a cleanup may delete: ours.
OUR_TASKS = frozenset({JOB_TASK, "dvc_task.proc.tasks.run"})


def this_host() -> str:
    """The name of this host in job records: ``DVC_TASK_HOST``, or the host name."""
    return os.environ.get("DVC_TASK_HOST") or os.uname().nodename


class FolderBackend:
    """A job queue's jobs, messages, processes and output in one folder.

    The :class:`~dvc_task.jobs.backend.Backend` of a folder::

        <folder>/app/      the FSApp queue (broker messages, results)
        <folder>/jobs/     one record per job, <name>.json, from the moment it is queued
        <folder>/procs/    one process folder per job that ran: <name>.json, .out ...
        <folder>/workers/  the detached workers' own process folders (their logs)
        <folder>/flows/    the process folders of detached flows (their logs)
        <folder>/schedules/ the schedules (see ``schedulestore``)
    """

    #: Whether the jobs are on a server that workers of many hosts share.
    shared = False

    def __init__(self, folder: StrPath) -> None:
        """Use ``folder`` (created when the first job is queued).

        Raises:
            UnsafeFolderError: it exists but is not private to its owner.
        """
        self.folder = Path(os.path.abspath(os.fspath(folder)))
        self.jobs_dir = self.folder / "jobs"
        self.procs_dir = self.folder / "procs"
        self._procs = str(self.procs_dir)
        self.workers_dir = self.folder / "workers"
        self.flows_dir = self.folder / "flows"
        self.app_dir = self.folder / "app"
        if self.folder.is_dir():
            check_private(self.folder)
        self._records = FolderStore(self.jobs_dir, self.folder)
        self.store: JobStore = self._records
        #: This host's name, as recorded for the jobs its workers run.
        self.host = this_host()
        self._fsync = True

    @property
    def locks_dir(self) -> Path:
        """Where this host's workers of the queue hold their name locks."""
        return self.app_dir / "broker"

    @functools.cached_property
    def schedules(self) -> ScheduleStore:
        """The queue's schedules (``<folder>/schedules/``)."""
        from dvc_task.jobs.schedulestore import FolderScheduleStore  # noqa: PLC0415

        return FolderScheduleStore(self.folder / "schedules")

    @property
    def broker_url(self) -> str | None:
        """The URL of the server that holds the jobs (None: this folder)."""
        return None

    @property
    def location(self) -> str:
        """Where the jobs are, for messages: the folder."""
        return str(self.folder)

    def exists(self) -> bool:
        """Whether a job was ever queued here."""
        return self.jobs_dir.is_dir() or self.app_dir.is_dir()

    @functools.cached_property
    def app(self) -> FSApp:
        """The Celery app of the queue (its folders are created)."""
        # Imported here: `logs` and `status` need no Celery.
        from dvc_task.app.filesystem import FSApp  # noqa: PLC0415

        make_private_folder(self.folder)
        return FSApp(
            "dvc-task",
            wdir=self.app_dir,
            mkdir=True,
            include=TASK_MODULES,
        )

    @functools.cached_property
    def manager(self) -> ProcessManager:
        """The process manager of the jobs' processes."""
        return ProcessManager(self.procs_dir)

    @functools.cached_property
    def tasks(self) -> TaskIndex:
        """The queue's messages by task id."""
        return TaskIndex(self.app_dir)

    def output_path(self, name: str) -> Path:
        """Path of job ``name``'s output (stdout and stderr) on this host."""
        return Path(self._output_file(name))

    def _output_file(self, name: str) -> str:
        """:meth:`output_path`, as a string (a listing makes thousands)."""
        check_name(name, "job")
        return f"{self._procs}/{name}/{name}.out"

    def load(self, name: str) -> JobRecord:
        """The record of job ``name``.

        Raises:
            UnknownJobError: no such job.
            InvalidJobRecordError: its record cannot be read.
        """
        check_name(name, "job")
        return self.store.load(name)

    def save(self, record: JobRecord) -> None:
        """Write ``record`` (call it holding :meth:`locked`)."""
        self.store.save(record)

    def has_record(self, name: str) -> bool:
        """Whether job ``name`` has a record (``ValueError`` for a bad name)."""
        return self.store.has(check_name(name, "job"))

    def locked(self) -> AbstractContextManager[object]:
        """The lock that every change of a job record is made under."""
        return self.store.locked()

    def changes(self) -> Waiter:
        """A waiter woken when a job record is written (for loops that wait)."""
        return self.store.changes()

    @contextmanager
    def batch(self) -> Iterator[None]:
        """Write many records and messages, then make them durable at once.

        Each write skips its own ``fsync``; the file system is synced when
        the block ends (a thousand jobs queued take one sync, not 3,000).
        """
        self._records.fsync = self._fsync = False
        try:
            yield
        finally:
            self._records.fsync = self._fsync = True
            os.sync()

    @functools.cached_property
    def _broker_folders(self) -> BrokerFolders:
        """The queue's broker folders (checked once, not at every message)."""
        return app_folders(self.app_dir)[0]

    def prepare(self) -> None:
        """Make the queue's folders (0700), before the first job is queued."""
        make_private_folder(self.folder)
        app_folders(self.app_dir, mkdir=True)

    def publish(self, record: JobRecord, countdown: float | None = None) -> None:
        """Queue the message of ``record``'s current task id.

        Written as ``app.send_task`` would, without Celery (see
        :mod:`dvc_task.app.message`): queueing a job stays cheap.
        """
        eta = (
            datetime.now(timezone.utc) + timedelta(seconds=countdown)
            if countdown
            else None
        )
        message = task_message(
            JOB_TASK,
            record.task_id,
            {"name": record.name, "folder": str(self.folder)},
            priority=self._message_priority(record.priority) or 0,
            eta=eta,
        )
        FolderQueue(self._broker_folders, fsync=self._fsync).put(DEFAULT_QUEUE, message)

    def _message_priority(self, priority: int) -> int | None:
        """The message priority of a job's ``priority`` (higher: sooner)."""
        return priority or None

    def unqueue(self, task_id: str) -> None:
        """Take the message of ``task_id`` off the queue, if it still waits."""
        self.tasks.unqueue(task_id)

    def message_states(self) -> dict[str, str]:
        """``task id -> queued | starting`` of the messages waiting or claimed."""
        return self.tasks.states()

    def forget_messages(self, task_ids: Collection[str]) -> None:
        """Remove the processed messages and results of ``task_ids``."""
        processed = self.tasks.processed(OUR_TASKS)
        for task_id in task_ids:
            self.tasks.forget(task_id, processed)

    def forget_orphans(self) -> None:
        """Remove processed messages and results of jobs no record has."""
        kept = {
            entry.task_id
            for entry in self.store.entries().values()
            if isinstance(entry, JobRecord)
        }
        processed = self.tasks.processed(OUR_TASKS)
        for task_id in [t for t in processed if t not in kept]:
            self.tasks.forget(task_id, processed)

    def forget_output(self, name: str) -> None:
        """Remove job ``name``'s output kept outside its process folder (none)."""

    def has_queued(self) -> bool:
        """Whether a message waits in the queue (or in a dead worker's claim)."""
        return any(state != STARTING for state in self.message_states().values())

    def processes_without_record(self, names: Collection[str]) -> list[Job]:
        """Jobs of process folders not in ``names`` (started by dvc-task 0.40)."""
        found = []
        for name in folders(self.procs_dir):
            if name not in names:
                info = self.manager.get(name)
                if info is not None:
                    found.append(from_process(name, info, str(self.output_path(name))))
        return found

    def job_from_record(
        self, record: JobRecord, view: dict[str, str] | None = None
    ) -> Job:
        """The job of ``record`` (``view``: :meth:`message_states`, read before it)."""
        # Only a job that has started has a process record worth reading.
        info = self.manager.get(record.name) if record.runs else None
        return derive(record, view or {}, info, self._output_file(record.name))

    @contextmanager
    def attempt_link(self, name: str) -> Iterator[AttemptLink]:
        """Kept up by the worker while an attempt of job ``name`` runs."""
        del name
        yield AttemptLink()

    def is_outage(self, exc: Exception) -> bool:
        """Whether ``exc`` says that the server of the jobs is away (never here)."""
        del exc
        return False

    def before_start(self, name: str) -> None:
        """Called by a worker before it judges a message of job ``name`` (nothing)."""
        del name

    def redelivered(self, record: JobRecord) -> str:
        """What to do with a message of a job that a worker marked started.

        A folder's workers share a host: the attempt of a dead one is over
        (:data:`~dvc_task.jobs.backend.LOST_ATTEMPT`).
        """
        del record
        return LOST_ATTEMPT

    @contextmanager
    def worker_session(self, node: str) -> Iterator[None]:
        """Kept up while worker ``node`` of this queue runs: what it offers."""
        offer = self.app.conf.get(slots.OFFER_KEY)
        info = offer.asdict() if isinstance(offer, slots.Offer) else {}
        write_info(self.locks_dir, node, info)
        try:
            yield
        finally:
            remove_info(self.locks_dir, node)

    def worker_env(self) -> dict[str, str] | None:
        """The environment of a detached worker (None: this one)."""
        return None

    def signal_job(self, name: str, sig: int) -> None:
        """Send ``sig`` to job ``name``'s whole process group, if it has one.

        Raises:
            ProcessLookupError: it has no process (yet, or any more).
        """
        self.manager.send_signal(name, sig, group=True)

    def read_output(self, name: str, tail: int | None = None) -> bytes:
        """Job ``name``'s output so far (its last ``tail`` lines if given)."""
        return output.read(self.output_path(name), tail)

    def copy_output(self, name: str, fd: int, tail: int | None = None) -> None:
        """Write job ``name``'s output so far to file descriptor ``fd``."""
        output.copy(self.output_path(name), fd, tail)

    def follow_output(self, name: str, tail: int | None = None) -> Iterator[bytes]:
        """Yield job ``name``'s output as it is written, until the job ends.

        A queued job is waited for. The bytes are passed through unchanged.

        Raises:
            UnknownJobError: no such job.
        """
        # An unknown name raises here, not at the first next().
        try:
            self.load(name)
        except UnknownJobError:
            if self.manager.get(name) is None:
                raise
        return output.follow(self, name, tail)

    def workers(self, jobs: Iterable[Job] | None = None) -> list[WorkerInfo]:
        """The live workers of this folder and the jobs each runs."""
        return live_workers(self, jobs)

    def ensure_worker(self) -> str | None:
        """Start a detached worker unless one serves the queue; its name, or None."""
        # Whether one serves is read here: only starting one loads workers.
        if serving(self):
            return None
        return worker_ops.start_workers(self, 1)[0]

    def ask_to_stop(self, worker: WorkerInfo) -> None:
        """Ask live ``worker`` to stop after its running jobs."""
        worker_ops.ask_to_stop(worker)
