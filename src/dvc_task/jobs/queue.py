"""The job API that the command line, ``status`` and Python programs share.

A :class:`JobQueue` owns one folder::

    <folder>/app/      the FSApp queue (broker messages, results)
    <folder>/jobs/     one record per job, <name>.json, from the moment it is queued
    <folder>/procs/    one process folder per job that ran: <name>.json, .out ...
    <folder>/workers/  the detached workers' own process folders (their logs)
"""

from __future__ import annotations

import dataclasses
import functools
import logging
import os
import socket
import time
from collections.abc import Collection, Iterable, Iterator, Mapping, Sequence
from contextlib import contextmanager
from pathlib import Path
from typing import TYPE_CHECKING

from shortuuid import uuid

from dvc_task.app.taskindex import TaskIndex
from dvc_task.files import check_name
from dvc_task.folders import check_private, make_private_folder
from dvc_task.jobs import control, lifecycle, output, slots
from dvc_task.jobs import workers as worker_ops
from dvc_task.jobs.backend import LOST_ATTEMPT, AttemptLink
from dvc_task.jobs.dependencies import (
    Outcomes,
    check_after,
    failure_text,
    show_failed_dependencies,
)
from dvc_task.jobs.listing import UNREADABLE, folders
from dvc_task.jobs.options import JobOptions
from dvc_task.jobs.record import (
    DEPENDENCY_FAILED,
    QUEUED,
    STARTED,
    STARTING,
    WAITING,
    WAITING_FOR_JOBS,
    InvalidJobRecordError,
    JobError,
    JobRecord,
    UnknownJobError,
    check_job_name,
)
from dvc_task.jobs.store import FolderStore, JobStore, Waiter
from dvc_task.jobs.view import (
    Job,
    WorkerInfo,
    being_queued,
    derive,
    from_process,
    unreadable,
)
from dvc_task.proc import ProcessManager
from dvc_task.proc.info import utc_now
from dvc_task.utils import StrPath

if TYPE_CHECKING:
    from contextlib import AbstractContextManager

    from dvc_task.app.filesystem import FSApp

logger = logging.getLogger(__name__)

#: The Celery task that runs a job (see :mod:`dvc_task.jobs.tasks`).
JOB_TASK = "dvc_task.jobs.run"
#: The modules of the tasks that a job queue's app runs.
TASK_MODULES = ["dvc_task.proc.tasks", "dvc_task.jobs.tasks"]
#: Where a Celery app made by a job queue keeps that queue.
QUEUE_KEY = "dvc_task_queue"
#: Tasks whose processed messages a cleanup may delete: ours.
OUR_TASKS = frozenset({JOB_TASK, "dvc_task.proc.tasks.run"})


_warned: set[str] = set()


def _warn_once(key: str, reason: str) -> None:
    if key not in _warned:
        _warned.add(key)
        logger.warning("%s", reason)


def this_host() -> str:
    """The name of this host in job records: ``DVC_TASK_HOST``, or the host name."""
    return os.environ.get("DVC_TASK_HOST") or socket.gethostname()


class JobQueue:
    """The jobs kept in one folder: queue them, list, follow, kill, remove.

    A facade: what happens to a job is :mod:`~dvc_task.jobs.lifecycle`'s;
    this class is also the folder's :class:`~dvc_task.jobs.backend.Backend`.
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
        self.workers_dir = self.folder / "workers"
        self.app_dir = self.folder / "app"
        if self.folder.is_dir():
            check_private(self.folder)
        self.store: JobStore = FolderStore(self.jobs_dir, self.folder)
        #: This host's name, as recorded for the jobs its workers run.
        self.host = this_host()

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

    # --- records -------------------------------------------------------------

    def output_path(self, name: str) -> Path:
        """Path of job ``name``'s output (stdout and stderr) on this host."""
        check_name(name, "job")
        return self.procs_dir / name / f"{name}.out"

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

    # --- messages ------------------------------------------------------------

    def publish(self, record: JobRecord, countdown: float | None = None) -> None:
        """Queue the message of ``record``'s current task id."""
        self.app.send_task(
            JOB_TASK,
            kwargs={"name": record.name, "folder": str(self.folder)},
            task_id=record.task_id,
            priority=self._message_priority(record.priority),
            countdown=countdown or None,
        )

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

    # --- queueing ------------------------------------------------------------

    def submit(
        self,
        command: Sequence[str],
        name: str | None = None,
        cwd: StrPath | None = None,
        env: Mapping[str, str] | None = None,
        replace: bool = False,
        *,
        retries: int = 0,
        retry_delay: float = 0.0,
        retry_backoff: float = 1.0,
        timeout: float | None = None,
        after: Sequence[str] = (),
        priority: int = 0,
        held: bool = False,
        creates: Sequence[str] = (),
        gpus: int = 0,
        resources: Mapping[str, int] | None = None,
    ) -> Job:
        """Queue ``command`` as a job; its record exists once this returns.

        Arguments:
            command: the program and its arguments.
            name: the job name (default: the next free number).
            cwd: where it runs (default: the current directory).
            env: its whole environment (default: this process's).
            replace: remove a finished job of that name first.
            retries: run a failed, timed-out or lost attempt again, this
                many more times at most.
            retry_delay: seconds before the first retry.
            retry_backoff: factor of each later retry's delay.
            timeout: seconds an attempt may run; then its whole process
                tree gets SIGTERM, and SIGKILL a few seconds later.
            after: jobs that must succeed (or be skipped) first; if one
                does not, this one ends ``dependency failed``.
            priority: higher starts first; FIFO within one priority.
            held: queue it held, until :meth:`release`.
            creates: paths (relative to ``cwd``); if all exist when it
                would start, it is ``skipped``.
            gpus: GPUs it needs (it gets ``CUDA_VISIBLE_DEVICES``).
            resources: other units it needs, e.g. ``{"mem": 16}``, out of
                what the worker offers.

        Raises:
            ValueError: an empty command, an invalid name or option.
            JobError: the name is taken, ``cwd`` is not a folder, a job in
                ``after`` does not exist or waits for this one, or more
                GPUs than the machine has.
        """
        options = JobOptions(
            retries=retries,
            retry_delay=retry_delay,
            retry_backoff=retry_backoff,
            timeout=timeout,
            after=after,
            priority=priority,
            held=held,
            creates=creates,
            gpus=gpus,
            resources=dict(resources or {}),
        )
        command = [str(arg) for arg in command]
        if not command or not command[0]:
            raise ValueError("empty command: give the program to run and its arguments")
        if name is not None:
            check_job_name(name)
        workdir = os.path.abspath(os.fspath(cwd) if cwd is not None else os.getcwd())
        if not os.path.isdir(workdir):
            raise JobError(f"working directory '{workdir}' is not a folder")
        if gpus:
            slots.check_gpus(gpus)
        self.app  # noqa: B018 - the queue's folders, before the lock
        with self.locked():
            seq = self.store.next_seq()
            if name is None:
                name = self._free_name(seq)
            check_after(self, name, options.after)
            if self._in_use(name):
                self._take_name(name, replace)
            record = JobRecord(
                name=name,
                seq=seq,
                command=command,
                cwd=workdir,
                env=dict(os.environ if env is None else env),
                submitted_at=utc_now(),
                task_id="",
            )
            options.apply(record)
            lifecycle.submit(self, record, held)
        if record.parked:
            lifecycle.promote(self)  # the jobs it waits for may have ended
            return self.job(name)
        # Queued, as of now: no need to read every waiting message to say so.
        return derive(
            record, {record.task_id: QUEUED}, None, str(self.output_path(name))
        )

    def _in_use(self, name: str) -> bool:
        return self.has_record(name) or (self.procs_dir / name).exists()

    def _free_name(self, seq: int) -> str:
        name = str(seq)
        while self._in_use(name):
            name = f"{seq}-{uuid()[:6]}"
        return name

    def _take_name(self, name: str, replace: bool) -> None:
        try:
            job = self.job(name)
        except InvalidJobRecordError:
            state = UNREADABLE
        else:
            state = job.state
            if not job.finished:
                raise JobError(
                    f"job {name!r} is {state}: choose another name, or kill it first"
                )
        if not replace:
            raise JobError(
                f"job {name!r} exists ({state}): choose another name, or replace "
                "it (--replace) to remove it and run it again"
            )
        if self.has_record(name):
            lifecycle.replace(self, name)
        else:
            self.manager.remove(name)  # a process of an older dvc-task

    # --- listing -------------------------------------------------------------

    def jobs(self, states: Iterable[str] | None = None) -> list[Job]:
        """Every job, in submission order (only those in ``states`` if given)."""
        wanted = set(states) if states is not None else None
        view = self.message_states()
        found: list[Job] = []
        entries = self.store.entries()
        for name, entry in entries.items():
            if isinstance(entry, InvalidJobRecordError):
                _warn_once(name, f"{entry}; remove the job with 'rm'")
                found.append(unreadable(name, str(entry)))
            else:
                found.append(self.job_from_record(entry, view))
        found.extend(self.processes_without_record(entries))
        found.sort(key=lambda job: (job.seq, job.submitted_at or ""))
        found = show_failed_dependencies(found)
        return [job for job in found if wanted is None or job.state in wanted]

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
        info = self.manager.get(record.name) if record.phase == STARTED else None
        return derive(record, view or {}, info, str(self.output_path(record.name)))

    def job(self, name: str) -> Job:
        """Job ``name`` as it is now (as :meth:`jobs` lists it).

        Raises:
            UnknownJobError: no such job.
            InvalidJobRecordError: its record cannot be read.
            ValueError: an invalid name.
        """
        if not self.has_record(name):
            info = self.manager.get(name)
            if info is None:
                raise UnknownJobError(name)
            return from_process(name, info, str(self.output_path(name)))
        record = self.load(name)
        view = self.message_states() if record.not_started else {}
        job = self.job_from_record(record, view)
        if job.state != WAITING or record.phase != WAITING_FOR_JOBS:
            return job
        failed = Outcomes(self).failed(record)
        if failed is None:
            return job
        return dataclasses.replace(
            job, state=DEPENDENCY_FAILED, error=failure_text(*failed)
        )

    # --- control -------------------------------------------------------------

    def kill(self, name: str, force: bool = False) -> str:
        """Stop job ``name``: SIGTERM (SIGKILL with ``force``) to its whole job.

        A queued or starting job is taken off the queue and never runs.
        Returns what was done, in words.

        Raises:
            UnknownJobError: no such job.
            JobError: it has finished, or its record cannot be read.
        """
        return control.kill(self, name, force)

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
        """Kept up while worker ``node`` of this queue runs (nothing here)."""
        del node
        yield

    def worker_env(self) -> dict[str, str] | None:
        """The environment of a detached worker (None: this one)."""
        return None

    def signal_job(self, name: str, sig: int) -> None:
        """Send ``sig`` to job ``name``'s whole process group, if it has one.

        Raises:
            ProcessLookupError: it has no process (yet, or any more).
        """
        self.manager.send_signal(name, sig, group=True)

    def wait(self, name: str, timeout: float | None = None) -> Job:
        """Wait until job ``name`` has finished; the job then.

        Raises:
            UnknownJobError: no such job.
            TimeoutError: it has not finished within ``timeout`` seconds.
        """
        deadline = None if timeout is None else time.monotonic() + timeout
        # The worker's last word on a job is its record, written.
        waiter = self.changes()
        try:
            while not self.ended(name):
                if deadline is not None and time.monotonic() > deadline:
                    raise TimeoutError(f"job {name!r} is still {self.job(name).state}")
                waiter.wait(0.2)
        finally:
            waiter.close()
        return self.job(name)

    def ended(self, name: str) -> bool:
        """Whether job ``name`` has finished (or is gone); cheaper than :meth:`job`.

        It reads the queue (every waiting message) only for a queued job
        whose record is old enough for its message to be lost.
        """
        try:
            record = self.load(name)
        except UnknownJobError:
            return self.manager.get(name) is None or self.job(name).finished
        except InvalidJobRecordError:
            return True
        if record.finished:
            return True
        if record.phase == WAITING_FOR_JOBS:
            return Outcomes(self).failed(record) is not None
        if record.not_started:
            return self._lost_before_start(record)
        return self.job_from_record(record).finished

    def left_queue(self, name: str) -> bool:
        """Whether job ``name`` is past waiting: started, ended, lost or gone.

        Cheap for a job that waits: its record, and only once it is old
        enough to be lost, the queue.
        """
        try:
            record = self.load(name)
        except (UnknownJobError, InvalidJobRecordError):
            return True
        return not record.not_started or self._lost_before_start(record)

    def _lost_before_start(self, record: JobRecord) -> bool:
        # Its message is looked for (with every other waiting one) only once
        # the record is old enough for the message to be missing for good.
        return (
            not record.parked
            and not being_queued(record)
            and self.job(record.name).finished
        )

    def retry(self, names: Iterable[str]) -> list[str]:
        """Queue finished jobs again, as they were submitted; their names.

        Raises:
            UnknownJobError: no such job.
            JobError: a job has not finished.
        """
        return lifecycle.retry(self, names)

    def hold(self, name: str) -> bool:
        """Keep queued job ``name`` from starting; False if it was held already.

        Raises:
            UnknownJobError: no such job.
            JobError: it has started or finished.
        """
        return lifecycle.hold(self, name)

    def release(self, name: str) -> None:
        """Let held job ``name`` start (once the jobs it waits for are done).

        Raises:
            UnknownJobError: no such job.
            JobError: it is not held.
        """
        lifecycle.release(self, name)

    def promote(self) -> list[str]:
        """Queue waiting jobs that are ready now; their names (workers call it)."""
        return lifecycle.promote(self)

    def remove(self, name: str, force: bool = False) -> None:
        """Forget job ``name``: its record, output, message and result.

        Raises:
            UnknownJobError: no such job.
            JobNotFinishedError: it has not finished and ``force`` is false.
        """
        control.remove(self, name, force)

    def cleanup(self, older_than: float | None = None) -> list[Job]:
        """Remove finished jobs (finished over ``older_than`` seconds ago).

        Their processed messages and results go too, and those of jobs removed
        earlier. Returns the jobs removed.
        """
        return control.cleanup(self, older_than)

    # --- output --------------------------------------------------------------

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

    # --- workers -------------------------------------------------------------

    def workers(self, jobs: Iterable[Job] | None = None) -> list[WorkerInfo]:
        """The live workers of this folder and the jobs each runs."""
        return worker_ops.live_workers(self, jobs)

    def start_workers(
        self,
        count: int = 1,
        timeout: float = worker_ops.IDLE_TIMEOUT_S,
        concurrency: int = 1,
        offer: slots.Offer | None = None,
    ) -> list[str]:
        """Start ``count`` detached workers (see :func:`worker_ops.start_workers`)."""
        return worker_ops.start_workers(self, count, timeout, concurrency, offer)

    def ensure_worker(self) -> str | None:
        """Start a detached worker unless one serves the queue; its name, or None."""
        return worker_ops.ensure_worker(self)

    def ask_to_stop(self, worker: WorkerInfo) -> None:
        """Ask live ``worker`` to stop after its running jobs."""
        worker_ops.ask_to_stop(worker)

    def stop_workers(self, kill: bool = False) -> list[WorkerInfo]:
        """Stop every live worker after its running jobs (kill them with ``kill``)."""
        return worker_ops.stop_workers(self, kill)

    def work(
        self,
        name: str = worker_ops.WORKER_NAME,
        timeout: float = worker_ops.IDLE_TIMEOUT_S,
        concurrency: int = 1,
        loglevel: str = "WARNING",
        offer: slots.Offer | None = None,
    ) -> bool:
        """Run a worker in this process until the queue stays empty.

        Its jobs run on the GPUs and resources of ``offer`` (default: every
        GPU of the machine). Returns False at once if a worker called
        ``name`` already runs.
        """
        return worker_ops.work(self, name, timeout, concurrency, loglevel, offer=offer)
