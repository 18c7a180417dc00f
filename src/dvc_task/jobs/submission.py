"""Queueing new jobs: their names and records made, checked, and placed.

What :meth:`~dvc_task.jobs.queue.JobQueue.submit` and ``submit_many`` do,
on a backend: the first phase of each record is the lifecycle's
(:func:`~dvc_task.jobs.lifecycle.submit`).
"""

from __future__ import annotations

import os
from collections.abc import Callable, Mapping, Sequence
from typing import TYPE_CHECKING

from dvc_task import lazy
from dvc_task.jobs import lifecycle
from dvc_task.jobs.lifecycle import phases
from dvc_task.jobs.listing import UNREADABLE
from dvc_task.jobs.record import (
    QUEUED,
    InvalidJobRecordError,
    JobError,
    JobRecord,
    check_job_name,
)
from dvc_task.jobs.view import Job, derive
from dvc_task.proc.info import utc_now
from dvc_task.utils import StrPath

if TYPE_CHECKING:
    from dvc_task.jobs import dependencies, reading, slots
    from dvc_task.jobs.backend import Backend
    from dvc_task.jobs.options import JobOptions

    #: What the live workers offer (asked only for a job that needs GPUs).
    Offers = Callable[[], list[slots.Offer]]
else:
    # Needed by some jobs only (names taken, --after, --gpus): a plain job
    # queued from the command line does not load them.
    dependencies = lazy.module("dvc_task.jobs.dependencies")
    reading = lazy.module("dvc_task.jobs.reading")
    slots = lazy.module("dvc_task.jobs.slots")


def submit(
    backend: Backend,
    command: Sequence[str],
    *,
    name: str | None,
    cwd: StrPath | None,
    env: Mapping[str, str] | None,
    options: JobOptions,
    replace: bool,
    offers: Offers,
) -> Job:
    """Queue ``command`` as one job (see ``JobQueue.submit``)."""
    command = [str(arg) for arg in command]
    if not command or not command[0]:
        raise ValueError("empty command: give the program to run and its arguments")
    if name is not None:
        check_job_name(name)
    workdir = _workdir(cwd)
    if options.gpus:
        slots.check_gpus(options.gpus, offers())
    backend.prepare()  # the queue's folders, before the lock
    with backend.locked():
        seq = backend.store.next_seq()
        if name is None:
            name = _free_name(backend, seq)
        if options.after:
            dependencies.check_after(backend, name, options.after)
        if _in_use(backend, name):
            _take_name(backend, name, replace)
        record = _new_record(
            name, seq, command, workdir=workdir, env=_environment(env), options=options
        )
        lifecycle.submit(backend, record, options.held)
    if record.parked:
        lifecycle.promote(backend)  # the jobs it waits for may have ended
        return reading.job(backend, name)
    # Queued, as of now: no need to read every waiting message to say so.
    return derive(
        record, {record.task_id: QUEUED}, None, str(backend.output_path(name))
    )


def submit_many(
    backend: Backend,
    commands: Sequence[Sequence[str]],
    *,
    names: Sequence[str | None] | None,
    cwd: StrPath | None,
    env: Mapping[str, str] | None,
    job_options: JobOptions,
    offers: Offers,
) -> list[str]:
    """Queue every command, all or none (see ``JobQueue.submit_many``)."""
    chosen = list(names) if names is not None else [None] * len(commands)
    if len(chosen) != len(commands):
        raise ValueError("give one name per command, or none")
    argvs = []
    for number, (command, name) in enumerate(zip(commands, chosen), start=1):
        argv = [str(arg) for arg in command]
        try:
            if not argv or not argv[0]:
                raise ValueError("empty command")
            if name is not None:
                check_job_name(name)
        except ValueError as exc:
            raise ValueError(f"command {number}: {exc}") from None
        argvs.append(argv)
    given = [name for name in chosen if name is not None]
    twice = sorted({name for name in given if given.count(name) > 1})
    if twice:
        raise JobError(f"job name {twice[0]!r} is given twice")
    workdir = _workdir(cwd)
    if job_options.gpus:
        slots.check_gpus(job_options.gpus, offers())
    environment = _environment(env)
    backend.prepare()
    with backend.locked(), backend.batch():
        records = []
        first = backend.store.next_seq(len(argvs))
        for number, (argv, given_name) in enumerate(zip(argvs, chosen), start=1):
            seq = first + number - 1
            name = given_name or _free_name(backend, seq)
            if given_name is not None and _in_use(backend, name):
                raise JobError(
                    f"command {number}: job {name!r} exists: choose other names"
                )
            if job_options.after:
                dependencies.check_after(backend, name, job_options.after)
            records.append(
                _new_record(
                    name,
                    seq,
                    argv,
                    workdir=workdir,
                    env=environment,
                    options=job_options,
                )
            )
        lifecycle.submit_all(backend, records, job_options.held)
    if any(record.parked for record in records):
        lifecycle.promote(backend)
    return [record.name for record in records]


def _workdir(cwd: StrPath | None) -> str:
    """The absolute folder a job runs in (default: this process's)."""
    workdir = os.path.abspath(os.fspath(cwd) if cwd is not None else os.getcwd())
    if not os.path.isdir(workdir):
        raise JobError(f"working directory '{workdir}' is not a folder")
    return workdir


def _environment(env: Mapping[str, str] | None) -> dict[str, str]:
    """A job's whole environment (default: this process's)."""
    return dict(os.environ if env is None else env)


def _new_record(
    name: str,
    seq: int,
    command: list[str],
    *,
    workdir: str,
    env: dict[str, str],
    options: JobOptions,
) -> JobRecord:
    """The record of a job about to be queued."""
    record = JobRecord(
        name=name,
        seq=seq,
        command=command,
        cwd=workdir,
        env=env,
        submitted_at=utc_now(),
        task_id="",
    )
    options.apply(record)
    return record


def _in_use(backend: Backend, name: str) -> bool:
    return backend.has_record(name) or (backend.procs_dir / name).exists()


def _free_name(backend: Backend, seq: int) -> str:
    name = str(seq)
    while _in_use(backend, name):
        name = f"{seq}-{phases.task_id()[:6]}"
    return name


def _take_name(backend: Backend, name: str, replace: bool) -> None:
    try:
        job = reading.job(backend, name)
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
    if backend.has_record(name):
        lifecycle.replace(backend, name)
    else:
        backend.manager.remove(name)  # a process of an older dvc-task
