"""Stopping and forgetting jobs: kill, remove, cleanup (see :class:`JobQueue`).

A job is deleted whole, holding the jobs lock so that no worker writes its
record back: record, kill request, process folder (output), result, and its
processed message.
"""

from __future__ import annotations

import os
import signal
from datetime import datetime, timezone
from pathlib import Path
from typing import TYPE_CHECKING

from dvc_task.app.broker import list_messages
from dvc_task.jobs.listing import UNREADABLE, folders
from dvc_task.jobs.record import (
    FINAL_STATES,
    KILLED,
    LOST,
    NOT_STARTED,
    InvalidJobRecordError,
    JobError,
    JobNotFinishedError,
    JobRecord,
    UnknownJobError,
)
from dvc_task.jobs.view import Job, message_task_id, parse_time
from dvc_task.proc import ProcessManager
from dvc_task.proc.exceptions import ProcessNotTerminatedError
from dvc_task.proc.tree import descendants, wait_gone
from dvc_task.utils import remove as remove_path

if TYPE_CHECKING:
    from dvc_task.jobs.queue import JobQueue

#: Tasks whose processed messages :func:`cleanup` may delete: ours, the job
#: task (``dvc_task.jobs.run``) and the process task.
OUR_TASKS = frozenset({"dvc_task.jobs.run", "dvc_task.proc.tasks.run"})
#: How long ``remove(force=True)`` waits for a killed job to finish.
KILL_WAIT_S = 15.0


def kill(queue: JobQueue, name: str, force: bool = False) -> str:
    """Stop job ``name``: SIGTERM (SIGKILL with ``force``) to its whole job.

    A queued or starting job is taken off the queue and never runs.
    Returns what was done, in words.

    Raises:
        UnknownJobError: no such job.
        JobError: it has finished, or its record cannot be read.
    """
    sig = signal.SIGKILL if force else signal.SIGTERM
    if not queue.has_record(name):
        return _kill_process(queue, name, sig)
    job = queue.job(name)
    if job.state == LOST:
        # Its worker died; its command may still run, with nobody to wait.
        return _kill_process(queue, name, sig)
    if job.finished:
        raise JobError(f"job {name!r} has finished ({job.state})")
    # The request is stored before the lock is taken: a worker that is
    # about to start the job sees it under the lock and does not start it.
    queue.store.request_kill(name, int(sig))
    with queue.locked():
        record = queue.load(name)
        # Killed before it ran, by us now or by the worker that saw the request.
        never_ran = record.progress == NOT_STARTED or (
            record.progress == KILLED and record.returncode is None
        )
        if record.progress == NOT_STARTED:
            record.finish(KILLED, error=f"killed while {job.state}: it never ran")
            unqueue(queue, record.task_id)
        elif record.progress in FINAL_STATES and not never_ran:
            raise JobError(f"job {name!r} has finished ({record.progress})")
        if not never_ran or record.kill_signal is None:
            record.kill_signal = int(sig)
            queue.save(record)
    if never_ran:
        queue.promote()  # the jobs that wait for it fail
        return f"job {name} will not run (killed while {job.state})"
    try:
        queue.signal_job(name, sig)
    except ProcessLookupError:
        # Not started yet: the worker sends the signal once it has.
        pass
    return f"sent {signal.Signals(sig).name} to job {name}"


def _kill_process(queue: JobQueue, name: str, sig: int) -> str:
    # A process without a job record (started by an older dvc-task).
    try:
        queue.manager.send_signal(name, sig, group=True)
    except ProcessLookupError:
        if queue.manager.get(name) is None:
            raise UnknownJobError(name) from None
        raise JobError(f"job {name!r} has finished") from None
    return f"sent {signal.Signals(sig).name} to job {name}"


def unqueue(queue: JobQueue, task_id: str) -> None:
    """Delete the waiting message of ``task_id``; one claimed meanwhile stays."""
    inbox = queue.broker_folders.inbox
    for msg in list_messages(inbox):
        if message_task_id(inbox / msg) == task_id:
            try:
                os.unlink(inbox / msg)
            except FileNotFoundError:
                pass  # claimed meanwhile: the worker sees it was killed


def remove(queue: JobQueue, name: str, force: bool = False) -> None:
    """Forget job ``name``: its record, output, message and result.

    Raises:
        UnknownJobError: no such job.
        JobError: it has not finished and ``force`` is false.
    """
    if not queue.has_record(name):
        if queue.manager.get(name) is None:
            raise UnknownJobError(name)
        try:
            queue.manager.remove(name, force)
        except ProcessNotTerminatedError:
            raise JobNotFinishedError(name, "running") from None
        return
    try:
        job = queue.job(name)
    except InvalidJobRecordError:
        with queue.locked():
            delete(queue, name)
        return
    if not job.finished:
        if not force:
            raise JobNotFinishedError(name, job.state)
        local = job.pid and job.host in (None, queue.host)
        pids = [job.pid, *descendants(job.pid)] if local and job.pid else []
        try:
            kill(queue, name, force=True)
        except JobError:
            pass  # it finished meanwhile
        wait_gone(pids, KILL_WAIT_S)
        queue.wait(name, KILL_WAIT_S)
    with queue.locked():
        delete(queue, name)


def delete(queue: JobQueue, name: str, task_ids: dict[str, Path] | None = None) -> None:
    """Delete everything of job ``name``; call it holding the jobs lock.

    ``task_ids`` maps task ids to processed messages (found if not given).
    """
    try:
        task_id: str | None = queue.load(name).task_id
    except (UnknownJobError, InvalidJobRecordError):
        task_id = None
    remove_path(queue.procs_dir / name)
    if task_id is not None:
        queue.forget_message(task_id, task_ids)
    queue.forget_output(name)
    queue.store.delete(name)


def forget_message(
    queue: JobQueue, task_id: str, task_ids: dict[str, Path] | None = None
) -> None:
    """Remove the processed message and the result of ``task_id``."""
    remove_path(queue.app_dir / "result" / f"celery-task-meta-{task_id}")
    paths = task_ids if task_ids is not None else _processed(queue)
    if task_id in paths:
        remove_path(paths[task_id])


def _processed(queue: JobQueue) -> dict[str, Path]:
    processed = queue.broker_folders.processed
    found: dict[str, Path] = {}
    for msg in list_messages(processed):
        task_id = message_task_id(processed / msg, OUR_TASKS)
        if task_id is not None:
            found[task_id] = processed / msg
    return found


def cleanup(queue: JobQueue, older_than: float | None = None) -> list[Job]:
    """Remove finished jobs (finished over ``older_than`` seconds ago).

    Their processed messages and results go too, and those of jobs removed
    earlier. Returns the jobs removed.
    """
    now = datetime.now(timezone.utc)
    removed = []
    for job in queue.jobs():
        if not job.finished and job.state != UNREADABLE:
            continue
        if older_than is not None and (
            not job.finished_at
            or (now - parse_time(job.finished_at)).total_seconds() < older_than
        ):
            continue
        removed.append(job)
    processed = _processed(queue)
    with queue.locked():
        for job in removed:
            delete(queue, job.name, processed)
    kept = {
        entry.task_id
        for entry in queue.store.entries().values()
        if isinstance(entry, JobRecord)
    }
    for task_id, path in processed.items():
        if task_id not in kept:
            remove_path(path)
    if older_than is None:
        workers = ProcessManager(queue.workers_dir)
        for name in folders(queue.workers_dir):
            info = workers.get(name)
            if info is not None and info.returncode is not None:
                remove_path(queue.workers_dir / name)
    return removed
