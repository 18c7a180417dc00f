"""The Celery task that runs a queued job, and the one log line per job.

The message carries only the job's name and folder; what to run, where and
with which environment is in the job record. The task is acked late: a
worker killed before it marked the job started leaves the message to be
delivered again, and a delivery of a job already started (its worker died
mid-run) never runs it a second time.
"""

from __future__ import annotations

import logging
import os
import signal
import time
from typing import Any

from celery import Task, shared_task

from dvc_task.files import open_regular
from dvc_task.jobs.queue import JOB_TASK, JobQueue
from dvc_task.jobs.record import (
    FAILED_TO_START,
    FINAL_STATES,
    KILLED,
    LOST,
    NOT_EXECUTABLE_EXIT,
    NOT_FOUND_EXIT,
    NOT_STARTED,
    STARTED,
    InvalidJobRecordError,
    JobRecord,
    UnknownJobError,
)
from dvc_task.jobs.view import derive, final_state
from dvc_task.proc import ManagedProcess
from dvc_task.proc.exceptions import ProcessNotTerminatedError
from dvc_task.proc.info import process_create_time, process_start_id, utc_now
from dvc_task.proc.tree import signal_job, wait_gone
from dvc_task.utils import makedirs

logger = logging.getLogger(__name__)

#: How long a worker waits for a dead worker's leftover command to go.
_STOP_WAIT_S = 10.0


@shared_task(bind=True, name=JOB_TASK, acks_late=True, ignore_result=True)
def run(self: Task, name: str, folder: str) -> None:
    """Run job ``name`` of the jobs in ``folder``; its record says how."""
    queue = JobQueue(folder)
    record = _mark_started(queue, name, str(self.request.hostname or ""))
    if record is None:
        return
    begun = time.monotonic()
    proc = ManagedProcess(
        record.command,
        env=record.env,
        cwd=record.cwd,
        wdir=queue.procs_dir / name,
        name=name,
    )
    try:
        _check_cwd(record.cwd)
        proc.run()
    except (OSError, ProcessNotTerminatedError) as exc:
        _record_failed_start(queue, name, proc, exc)
        return
    with queue.locked():
        kill_signal = queue.kill_requested(name)
    if kill_signal is not None:
        # Killed while it was starting: stop it now that it exists.
        try:
            queue.manager.send_signal(name, kill_signal, group=True)
        except ProcessLookupError:
            pass  # it has ended already
    returncode = proc.wait()
    assert returncode is not None
    with queue.locked():
        try:
            record = queue.load(name)
        except (UnknownJobError, InvalidJobRecordError) as exc:
            logger.warning("job %s: its record is gone: %s", name, exc)
            return
        record.finish(final_state(returncode, record.kill_signal), returncode)
        queue.save(record)
    _log_end(name, record.progress, returncode, time.monotonic() - begun)


def _mark_started(queue: JobQueue, name: str, worker: str) -> JobRecord | None:
    """Mark the job started by this worker; None if it must not run."""
    with queue.locked():
        try:
            record = queue.load(name)
        except (UnknownJobError, InvalidJobRecordError) as exc:
            logger.warning("job %s: not run: %s", name, exc)
            return None
        if record.progress in FINAL_STATES:
            logger.info("job %s: not run: it is %s", name, record.progress)
            return None
        if record.progress != NOT_STARTED:
            _record_redelivered(queue, record)
            return None
        kill_signal = queue.kill_requested(name)
        if kill_signal is not None:
            record.kill_signal = kill_signal
            record.finish(KILLED, error="killed while starting: it never ran")
            queue.save(record)
            _log_end(name, KILLED, None, None)
            return None
        record.progress = STARTED
        record.worker = worker
        record.worker_pid = os.getpid()
        record.worker_create_time = process_create_time(os.getpid())
        record.worker_start_id = process_start_id(os.getpid())
        record.started_at = utc_now()
        queue.save(record)
    return record


def _record_redelivered(queue: JobQueue, record: JobRecord) -> None:
    # Its worker died after it started the job: that attempt is over, and a
    # command it left running, which nobody waits for, is stopped.
    info = queue.manager.get(record.name)
    if info is not None and info.returncode is None and info.command_alive():
        logger.warning("job %s: stopping the command its dead worker left", record.name)
        try:
            wait_gone(signal_job(info.pid, signal.SIGKILL, group=True), _STOP_WAIT_S)
        except ProcessLookupError:
            pass
    job = derive(record, {}, queue.manager.get(record.name), None)
    if job.finished and job.state != LOST:
        record.finish(job.state, job.returncode, finished_at=job.finished_at)
    else:
        record.finish(
            LOST,
            job.returncode,
            "its worker died while it ran; it was not run again",
            job.finished_at,
        )
    queue.save(record)
    _log_end(record.name, record.progress, record.returncode, None)


def _check_cwd(cwd: str) -> None:
    if not os.path.isdir(cwd):
        raise NotADirectoryError(f"working directory '{cwd}' is not a folder")


def _record_failed_start(
    queue: JobQueue, name: str, proc: ManagedProcess, exc: Exception
) -> None:
    returncode = (
        NOT_FOUND_EXIT
        if isinstance(exc, (FileNotFoundError, NotADirectoryError))
        else NOT_EXECUTABLE_EXIT
    )
    message = f"dvc-task: cannot run {proc.args[0]!r}: {exc}"
    makedirs(queue.procs_dir / name, exist_ok=True, mode=0o700)
    fd = open_regular(proc.stdout_path, os.O_WRONLY | os.O_CREAT | os.O_APPEND)
    try:
        os.write(fd, f"{message}\n".encode(errors="backslashreplace"))
    finally:
        os.close(fd)
    with queue.locked():
        record = queue.load(name)
        record.finish(FAILED_TO_START, returncode, message)
        queue.save(record)
    _log_end(name, FAILED_TO_START, returncode, None)


def _log_end(name: str, state: str, returncode: int | None, took: float | None) -> None:
    details: list[Any] = []
    if returncode not in (None, 0):
        assert returncode is not None
        details.append(
            f"signal {signal.Signals(-returncode).name}"
            if returncode < 0 and -returncode in signal.valid_signals()
            else f"exit {returncode}"
        )
    if took is not None:
        details.append(f"{took:.1f}s")
    suffix = f" ({', '.join(details)})" if details else ""
    logger.info("job %s %s%s", name, state, suffix)
