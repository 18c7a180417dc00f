"""The job API that the command line, ``status`` and Python programs share.

:class:`JobQueue` is a facade: what happens to a job is
:mod:`~dvc_task.jobs.lifecycle`'s, how jobs look is
:mod:`~dvc_task.jobs.reading`'s, and where everything is kept is its
backend's (a folder, :class:`~dvc_task.jobs.folder.FolderBackend`, or a
Redis server, :class:`~dvc_task.jobs.redisqueue.RedisBackend`).
"""

from __future__ import annotations

import os
from collections.abc import Iterable, Iterator, Mapping, Sequence
from datetime import datetime, timezone
from pathlib import Path
from typing import TYPE_CHECKING, Any

from dvc_task import lazy
from dvc_task.jobs import lifecycle, submission
from dvc_task.jobs.defaults import IDLE_TIMEOUT_S, LOCAL, WORKER_NAME
from dvc_task.jobs.folder import FolderBackend
from dvc_task.jobs.options import JobOptions
from dvc_task.jobs.store import Waiter
from dvc_task.jobs.view import Job, WorkerInfo
from dvc_task.utils import StrPath

if TYPE_CHECKING:
    from dvc_task.jobs import control, reading, scheduler, schedules, slots
    from dvc_task.jobs import workers as worker_ops
else:
    # Used by some methods only: a job queued from the command line does
    # not load them.
    control = lazy.module("dvc_task.jobs.control")
    reading = lazy.module("dvc_task.jobs.reading")
    scheduler = lazy.module("dvc_task.jobs.scheduler")
    schedules = lazy.module("dvc_task.jobs.schedules")
    slots = lazy.module("dvc_task.jobs.slots")
    worker_ops = lazy.module("dvc_task.jobs.workers")


class JobQueue:
    """The jobs of one queue: queue them, list, follow, kill, remove."""

    def __init__(self, folder: StrPath, backend: FolderBackend | None = None) -> None:
        """The jobs in ``folder`` (created when the first job is queued).

        ``backend`` keeps them elsewhere (a Redis server); ``folder`` then
        holds only this host's processes and logs.

        Raises:
            UnsafeFolderError: it exists but is not private to its owner.
        """
        self.backend = backend if backend is not None else FolderBackend(folder)

    @property
    def folder(self) -> Path:
        """The folder of the queue on this host."""
        return self.backend.folder

    @property
    def shared(self) -> bool:
        """Whether the jobs are on a server that workers of many hosts share."""
        return self.backend.shared

    @property
    def broker_url(self) -> str | None:
        """The URL of the Redis server that holds the jobs (None: the folder)."""
        return self.backend.broker_url

    @property
    def location(self) -> str:
        """Where the jobs are, for messages."""
        return self.backend.location

    def exists(self) -> bool:
        """Whether a job was ever queued here."""
        return self.backend.exists()

    def changes(self) -> Waiter:
        """A waiter woken when a job record is written (for loops that wait)."""
        return self.backend.changes()

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
        start_at: datetime | None = None,
        start_by: datetime | None = None,
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
            start_at: it starts no earlier than this (a naive time is
                local); it is ``queued`` until then.
            start_by: it is ``late`` if it has not started by then.

        Raises:
            ValueError: an empty command, an invalid name or option.
            JobError: the name is taken, ``cwd`` is not a folder, a job in
                ``after`` does not exist or waits for this one, or more
                GPUs than any live worker offers or this machine has.
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
            start_at=start_at,
            start_by=start_by,
        )
        return submission.submit(
            self.backend,
            command,
            name=name,
            cwd=cwd,
            env=env,
            options=options,
            replace=replace,
            offers=self.offers,
        )

    def submit_many(
        self,
        commands: Sequence[Sequence[str]],
        names: Sequence[str | None] | None = None,
        cwd: StrPath | None = None,
        env: Mapping[str, str] | None = None,
        **options: Any,
    ) -> list[str]:
        """Queue every command of ``commands``, all or none; their job names.

        ``names`` (one per command; None: the next free number), ``cwd``,
        ``env`` and the keyword ``options`` are as for :meth:`submit`, the
        same for each job. Nothing is queued if one of them is refused.

        Raises:
            ValueError: an empty command or a bad name (``"command N: ..."``,
                counting from 1), or a bad option.
            JobError: a name taken or given twice, ``cwd`` not a folder, a
                job in ``after`` that does not exist.
        """
        return submission.submit_many(
            self.backend,
            commands,
            names=names,
            cwd=cwd,
            env=env,
            job_options=JobOptions(**options),
            offers=self.offers,
        )

    # --- listing -------------------------------------------------------------

    def jobs(self, states: Iterable[str] | None = None) -> list[Job]:
        """Every job, in submission order (only those in ``states`` if given)."""
        return reading.jobs(self.backend, states)

    def job(self, name: str) -> Job:
        """Job ``name`` as it is now (as :meth:`jobs` lists it).

        Raises:
            UnknownJobError: no such job.
            InvalidJobRecordError: its record cannot be read.
            ValueError: an invalid name.
        """
        return reading.job(self.backend, name)

    def describe(self, name: str) -> dict[str, Any]:
        """Job ``name`` in full, as JSON-ready data (``status NAME``).

        :meth:`Job.asdict`, with the names of its environment variables, its
        earlier attempts, its time limit, retries and ``creates`` paths.

        Raises:
            UnknownJobError: no such job.
            InvalidJobRecordError: its record cannot be read.
        """
        return reading.describe(self.backend, name)

    def left_queue(self, name: str) -> bool:
        """Whether job ``name`` is past waiting: started, ended, lost or gone."""
        return reading.left_queue(self.backend, name)

    def wait(self, name: str, timeout: float | None = None) -> Job:
        """Wait until job ``name`` has finished; the job then.

        Raises:
            UnknownJobError: no such job.
            TimeoutError: it has not finished within ``timeout`` seconds.
        """
        if not reading.wait_ended(self.backend, name, timeout):
            raise TimeoutError(f"job {name!r} is still {self.job(name).state}")
        return self.job(name)

    # --- control -------------------------------------------------------------

    def kill(self, name: str, force: bool = False, sig: int | None = None) -> str:
        """Stop job ``name``: SIGTERM (SIGKILL with ``force``) to its whole job.

        ``sig`` is another signal to send (e.g. ``signal.SIGINT``). A queued
        or starting job is taken off the queue and never runs. Returns what
        was done, in words.

        Raises:
            UnknownJobError: no such job.
            JobError: it has finished, or its record cannot be read.
        """
        return control.kill(self.backend, name, force, sig)

    def pause(self, name: str) -> str:
        """Stop running job ``name`` (SIGSTOP to its tree) until :meth:`resume`.

        Its time limit stops with it. Returns what was done, in words.

        Raises:
            UnknownJobError: no such job.
            JobError: it is not running, or runs on another host.
        """
        return control.pause(self.backend, name)

    def resume(self, name: str) -> str:
        """Let paused job ``name`` go on (SIGCONT); what was done, in words.

        Raises:
            UnknownJobError: no such job.
            JobError: it is not paused, or runs on another host.
        """
        return control.resume(self.backend, name)

    def retry(self, names: Iterable[str]) -> list[str]:
        """Queue finished jobs again, as they were submitted; their names.

        Raises:
            UnknownJobError: no such job.
            JobError: a job has not finished.
        """
        return lifecycle.retry(self.backend, names)

    def hold(self, name: str) -> bool:
        """Keep queued job ``name`` from starting; False if it was held already.

        Raises:
            UnknownJobError: no such job.
            JobError: it has started or finished.
        """
        return lifecycle.hold(self.backend, name)

    def release(self, name: str) -> None:
        """Let held job ``name`` start (once the jobs it waits for are done).

        Raises:
            UnknownJobError: no such job.
            JobError: it is not held.
        """
        lifecycle.release(self.backend, name)

    def promote(self) -> list[str]:
        """Queue waiting jobs that are ready now; their names (workers call it)."""
        return lifecycle.promote(self.backend)

    def remove(self, name: str, force: bool = False) -> None:
        """Forget job ``name``: its record, output, message and result.

        Raises:
            UnknownJobError: no such job.
            JobNotFinishedError: it has not finished and ``force`` is false.
        """
        control.remove(self.backend, name, force)

    def cleanup(
        self, older_than: float | None = None, successful: bool = False
    ) -> list[Job]:
        """Remove finished jobs (finished over ``older_than`` seconds ago).

        With ``successful``, only those that succeeded (or were skipped).
        Their processed messages and results go too, and those of jobs removed
        earlier. Returns the jobs removed.
        """
        return control.cleanup(self.backend, older_than, successful)

    # --- output --------------------------------------------------------------

    def read_output(self, name: str, tail: int | None = None) -> bytes:
        """Job ``name``'s output so far (its last ``tail`` lines if given)."""
        return self.backend.read_output(name, tail)

    def copy_output(self, name: str, fd: int, tail: int | None = None) -> None:
        """Write job ``name``'s output so far to file descriptor ``fd``."""
        self.backend.copy_output(name, fd, tail)

    def follow_output(self, name: str, tail: int | None = None) -> Iterator[bytes]:
        """Yield job ``name``'s output as it is written, until the job ends.

        A queued job is waited for. The bytes are passed through unchanged.

        Raises:
            UnknownJobError: no such job.
        """
        return self.backend.follow_output(name, tail)

    # --- workers -------------------------------------------------------------

    def workers(self, jobs: Iterable[Job] | None = None) -> list[WorkerInfo]:
        """The live workers and the jobs each runs."""
        return self.backend.workers(jobs)

    def offers(self) -> list[slots.Offer]:
        """What the live workers offer jobs (those whose offer is known)."""
        return [w.offer for w in self.workers([]) if w.offer is not None]

    # --- schedules ---------------------------------------------------------

    def schedule(
        self,
        name: str,
        command: Sequence[str],
        *,
        cron: str | None = None,
        every: float | None = None,
        tz: str = LOCAL,
        start: datetime | None = None,
        end: datetime | None = None,
        catch_up: str = "last",
        overlap: str = "skip",
        sla: float | None = None,
        cwd: StrPath | None = None,
        env: Mapping[str, str] | None = None,
        replace: bool = False,
        **job_options: Any,
    ) -> schedules.Schedule:
        """Add a recurring job: ``command`` at each tick of its rule.

        The rule is ``cron`` (an expression in time zone ``tz``) or ``every``
        seconds from ``start`` (default: now); no tick after ``end``. Each
        fire is a job named ``<name>@<tick>`` with ``job_options`` (as
        :meth:`submit` takes them). ``catch_up`` (``none``, ``last``,
        ``all``) says which ticks missed while no scheduler was awake fire;
        ``overlap`` (``skip``, ``queue``, ``allow``) what a tick does while
        the last fire's job has not ended; ``sla``: seconds after its tick
        by which a fire's job should have started (else it is late).

        Raises:
            ScheduleError: a bad rule, zone, option or name, or one in use.
        """
        now = datetime.now(timezone.utc)
        workdir = os.path.abspath(os.fspath(cwd) if cwd is not None else os.getcwd())
        found = schedules.Schedule(
            name=name,
            command=[str(arg) for arg in command],
            cwd=workdir,
            env=dict(os.environ if env is None else env),
            cron=cron,
            every=every,
            tz=tz,
            start=(start or now.replace(microsecond=0))
            .astimezone(timezone.utc)
            .isoformat(),
            end=None if end is None else end.astimezone(timezone.utc).isoformat(),
            catch_up=catch_up,
            overlap=overlap,
            sla=sla,
            options=dict(job_options),
        )
        self.backend.prepare()
        scheduler.add(self.backend.schedules, found, replace)
        return found

    def schedules(self) -> list[dict[str, Any]]:
        """Every schedule: rule, zone, next tick, last fire and its job's state."""
        now = datetime.now(timezone.utc)
        store = self.backend.schedules
        found = []
        for name in store.names():
            try:
                found.append(scheduler.describe(store.load(name), self, now))
            except schedules.ScheduleError as exc:
                found.append({"name": name, "error": str(exc)})
        return found

    def pause_schedule(self, name: str) -> None:
        """Fire nothing of schedule ``name`` until :meth:`resume_schedule`."""
        now = datetime.now(timezone.utc)
        scheduler.set_paused(self.backend.schedules, name, True, now)

    def resume_schedule(self, name: str) -> None:
        """Fire schedule ``name`` again from its next tick."""
        now = datetime.now(timezone.utc)
        scheduler.set_paused(self.backend.schedules, name, False, now)

    def remove_schedule(self, name: str) -> list[str]:
        """Forget schedule ``name``; the jobs it fired stay.

        Those it held back to run one after another (``overlap="queue"``)
        are killed (nobody would release them); their names are returned.
        """
        return scheduler.remove(self.backend.schedules, self, name)

    def run_schedule(self, name: str) -> str:
        """Fire schedule ``name`` once, now; the job's name."""
        now = datetime.now(timezone.utc)
        return scheduler.run_now(self.backend.schedules, self, name, now)

    def tick(self, interval: float = 60.0) -> list[str] | None:
        """Fire what is due (``schedule tick``); the jobs queued.

        ``interval``: the seconds until the next call. None if a scheduler
        (a worker started with ``beat``) holds the lock and fires them.
        """
        if not self.backend.exists():
            return []
        now = datetime.now(timezone.utc)
        return scheduler.tick(self.backend.schedules, self, now, interval)

    def start_workers(
        self,
        count: int = 1,
        timeout: float = IDLE_TIMEOUT_S,
        concurrency: int = 1,
        offer: slots.Offer | None = None,
        beat: bool = False,
    ) -> list[str]:
        """Start ``count`` detached workers (see :func:`worker_ops.start_workers`).

        With ``beat`` they check the schedules (one at a time) and run until
        stopped.
        """
        return worker_ops.start_workers(
            self.backend, count, timeout, concurrency, offer, beat=beat
        )

    def ensure_worker(self) -> str | None:
        """Start a detached worker unless one serves the queue; its name, or None."""
        return self.backend.ensure_worker()

    def stop_workers(self, kill: bool = False) -> list[WorkerInfo]:
        """Stop every live worker after its running jobs (kill them with ``kill``)."""
        return worker_ops.stop_workers(self.backend, kill)

    def work(
        self,
        name: str = WORKER_NAME,
        timeout: float = IDLE_TIMEOUT_S,
        concurrency: int = 1,
        loglevel: str = "WARNING",
        *,
        offer: slots.Offer | None = None,
        beat: bool = False,
    ) -> bool:
        """Run a worker in this process until the queue stays empty.

        Its jobs run on the GPUs and resources of ``offer`` (default: every
        GPU of the machine). With ``beat`` it is also the scheduler (while
        it holds the beat lock: one worker of all at a time) and runs until
        it is stopped. Returns False at once if a worker called ``name``
        already runs.
        """
        return worker_ops.work(
            self.backend,
            name,
            timeout,
            concurrency,
            loglevel,
            offer=offer,
            beat=scheduler.Beat(self.backend.schedules, self) if beat else None,
        )
