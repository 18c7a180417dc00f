"""Stopping and forgetting jobs: kill, remove, cleanup.

What each does to a job's record is a transition of
:mod:`~dvc_task.jobs.lifecycle`; this module adds the signals to running
commands and the waiting that a forced removal needs.
"""

from __future__ import annotations

import signal
from datetime import datetime, timedelta, timezone
from typing import TYPE_CHECKING

from dvc_task.jobs import lifecycle, reading
from dvc_task.jobs.listing import UNREADABLE, folders
from dvc_task.jobs.record import (
    LOST,
    PAUSED,
    RUNNING,
    SUCCESS_STATES,
    InvalidJobRecordError,
    JobError,
    JobNotFinishedError,
    UnknownJobError,
)
from dvc_task.proc import ProcessManager
from dvc_task.proc.exceptions import ProcessNotTerminatedError
from dvc_task.proc.tree import descendants, wait_gone
from dvc_task.utils import remove as remove_path

if TYPE_CHECKING:
    from dvc_task.jobs.backend import Backend
    from dvc_task.jobs.view import Job

#: How long ``remove(force=True)`` waits for a killed job to finish.
KILL_WAIT_S = 15.0


def kill(
    backend: Backend, name: str, force: bool = False, sig: int | None = None
) -> str:
    """Stop job ``name``: SIGTERM (SIGKILL with ``force``) to its whole job.

    ``sig`` is another signal to send. A queued or starting job is taken
    off the queue and never runs. A paused job is let go on (SIGCONT) to
    get the signal. Returns what was done, in words.

    Raises:
        UnknownJobError: no such job.
        JobError: it has finished, or its record cannot be read.
    """
    if sig is None:
        sig = signal.SIGKILL if force else signal.SIGTERM
    if not backend.has_record(name):
        return _kill_process(backend, name, sig)
    job = reading.job(backend, name)
    if job.state == LOST:
        # Its worker died; its command may still run, with nobody to wait.
        return _kill_process(backend, name, sig)
    if job.finished:
        raise JobError(f"job {name!r} has finished ({job.state})")
    if lifecycle.kill(backend, name, sig):
        return f"job {name} will not run (killed while {job.state})"
    try:
        backend.signal_job(name, sig)
        if job.state == PAUSED:
            _signal_here(backend, job, signal.SIGCONT)
    except ProcessLookupError:
        pass  # not started yet: the worker sends the signal once it has
    return f"sent {signal.Signals(sig).name} to job {name}"


def pause(backend: Backend, name: str) -> str:
    """Stop running job ``name``'s whole tree (SIGSTOP) until :func:`resume`.

    Its time limit stops with it. Returns what was done, in words.

    Raises:
        UnknownJobError: no such job.
        JobError: it is not running, or runs on another host.
    """
    job = reading.job(backend, name)
    if job.state != RUNNING:
        raise JobError(f"job {name!r} is not running (it is {job.state})")
    _check_here(backend, job, "pause")
    lifecycle.pause(backend, name)
    try:
        _signal_here(backend, job, signal.SIGSTOP)
    except ProcessLookupError:
        lifecycle.resume(backend, name)
        raise JobError(f"job {name!r} has just ended") from None
    return f"paused job {name}"


def resume(backend: Backend, name: str) -> str:
    """Let paused job ``name`` go on (SIGCONT to its whole tree).

    Raises:
        UnknownJobError: no such job.
        JobError: it is not paused, or runs on another host.
    """
    job = reading.job(backend, name)
    if job.state != PAUSED:
        raise JobError(f"job {name!r} is not paused (it is {job.state})")
    _check_here(backend, job, "resume")
    lifecycle.resume(backend, name)
    try:
        _signal_here(backend, job, signal.SIGCONT)
    except ProcessLookupError:
        pass  # it has ended: its worker records how
    return f"resumed job {name}"


def _check_here(backend: Backend, job: Job, verb: str) -> None:
    """Refuse to signal a job whose command runs on another host."""
    if job.host not in (None, backend.host):
        raise JobError(
            f"job {job.name!r} runs on host {job.host}: {verb} it from there"
        )


def _signal_here(backend: Backend, job: Job, sig: int) -> None:
    """``sig`` to job ``job``'s command and everything it started, here."""
    backend.manager.send_signal(job.name, sig, group=True)


def _kill_process(backend: Backend, name: str, sig: int) -> str:
    # A process without a job record (started by an older dvc-task).
    try:
        backend.manager.send_signal(name, sig, group=True)
    except ProcessLookupError:
        if backend.manager.get(name) is None:
            raise UnknownJobError(name) from None
        raise JobError(f"job {name!r} has finished") from None
    return f"sent {signal.Signals(sig).name} to job {name}"


def remove(backend: Backend, name: str, force: bool = False) -> None:
    """Forget job ``name``: its record, output, message and result.

    Raises:
        UnknownJobError: no such job.
        JobNotFinishedError: it has not finished and ``force`` is false.
    """
    if not backend.has_record(name):
        if backend.manager.get(name) is None:
            raise UnknownJobError(name)
        try:
            backend.manager.remove(name, force)
        except ProcessNotTerminatedError:
            raise JobNotFinishedError(name, "running") from None
        return
    try:
        job = reading.job(backend, name)
    except InvalidJobRecordError:
        lifecycle.forget(backend, [name])
        return
    if not job.finished:
        if not force:
            raise JobNotFinishedError(name, job.state)
        local = job.pid and job.host in (None, backend.host)
        pids = [job.pid, *descendants(job.pid)] if local and job.pid else []
        try:
            kill(backend, name, force=True)
        except JobError:
            pass  # it finished meanwhile
        wait_gone(pids, KILL_WAIT_S)
        reading.wait_ended(backend, name, KILL_WAIT_S)
    if not lifecycle.forget(backend, [name], force=force):
        # Queued again meanwhile (``retry``, ``run --replace``): it stays.
        raise JobNotFinishedError(name, reading.job(backend, name).state)


def cleanup(
    backend: Backend, older_than: float | None = None, successful: bool = False
) -> list[Job]:
    """Remove finished jobs (finished over ``older_than`` seconds ago).

    With ``successful``, only those that succeeded (or were skipped). Their
    processed messages and results go too, and those of jobs removed
    earlier. A job queued again while this runs stays. Returns the jobs
    removed.
    """
    now = datetime.now(timezone.utc)
    chosen = {
        job.name: job
        for job in reading.jobs(backend)
        if (job.state in SUCCESS_STATES)
        or (not successful and (job.finished or job.state == UNREADABLE))
    }
    before = None if older_than is None else now - timedelta(seconds=older_than)
    gone = lifecycle.forget(
        backend, list(chosen), finished_before=before, messages=False
    )
    backend.forget_orphans()  # theirs, and those of jobs removed earlier
    if older_than is None:
        workers = ProcessManager(backend.workers_dir)
        for name in folders(backend.workers_dir):
            info = workers.get(name)
            if info is not None and info.returncode is not None:
                remove_path(backend.workers_dir / name)
    return [chosen[name] for name in gone]
