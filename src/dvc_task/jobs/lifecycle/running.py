"""Transitions of a job that a worker takes: take, pause, resume, its end."""

from __future__ import annotations

import logging
import os
import signal
from dataclasses import dataclass
from datetime import datetime, timedelta, timezone
from pathlib import Path
from typing import TYPE_CHECKING, Callable

from dvc_task.jobs import slots
from dvc_task.jobs.backend import LOST_ATTEMPT, RUNS_ELSEWHERE
from dvc_task.jobs.lifecycle import phases
from dvc_task.jobs.lifecycle.phases import (
    archive_attempt,
    end,
    mark_started,
    park,
    reset,
    send,
    take_over,
    taken,
)
from dvc_task.jobs.lifecycle.queueing import overtakes_a_patient_job
from dvc_task.jobs.record import (
    FAILED,
    KILLED,
    LOST,
    PAUSED,
    SKIPPED,
    STARTED,
    TIMED_OUT,
    WAITING_FOR_SLOTS,
    InvalidJobRecordError,
    JobError,
    JobRecord,
    UnknownJobError,
)
from dvc_task.jobs.view import final_state
from dvc_task.proc.info import utc_now
from dvc_task.proc.tree import signal_job, wait_gone

if TYPE_CHECKING:
    from dvc_task.jobs.backend import Backend

logger = logging.getLogger(__name__)

#: States of an attempt that a retry follows, while attempts are left.
RETRIED_STATES = frozenset({FAILED, TIMED_OUT, LOST})
#: How long a worker waits for a dead worker's leftover command to go.
STOP_WAIT_S = 10.0


@dataclass
class Taken:
    """What a worker does with a message: run the job, or not (and why)."""

    record: JobRecord | None = None
    held: slots.Slots | None = None
    #: The job ended without running: the jobs that wait for it move on.
    ended: bool = False


def take(
    backend: Backend,
    name: str,
    task_id: str,
    *,
    worker: str,
    offer: slots.Offer,
    slot_folder: Path,
) -> Taken:
    """Start job ``name`` for the message ``task_id`` a worker holds.

    It is marked started by this worker with the slots it needs; or parked
    to wait for them; or ended (killed while it started, skipped, its dead
    worker's attempt lost); or the message is dropped: not the job's
    current one, a job held meanwhile, or one a live worker runs.
    """
    with backend.locked():
        try:
            record = backend.load(name)
        except (UnknownJobError, InvalidJobRecordError) as exc:
            logger.warning("job %s: not run: %s", name, exc)
            return Taken()
        reason = _reason_not_to_run(record, task_id)
        if reason is not None:
            logger.info("job %s: not run: %s", name, reason)
            return Taken()
        if record.runs and not _redelivered(backend, record):
            return Taken(ended=record.finished)
        taken(record)
        if _ends_before_start(backend, record):
            return Taken(ended=True)
        held = None
        if not (record.gpus or record.resources) or not overtakes_a_patient_job(
            backend, record, offer.patience
        ):
            held = slots.take(record, offer, slot_folder)
        if held is None:
            park(backend, record, WAITING_FOR_SLOTS)
            logger.info("job %s waits for its slots", name)
            return Taken()
        try:
            mark_started(backend, record, worker, held)
        except BaseException:
            held.release()
            raise
    return Taken(record, held)


def _reason_not_to_run(record: JobRecord, task_id: str) -> str | None:
    if record.task_id != task_id:
        return "the message is an old one (it was queued again since)"
    if record.finished:
        return f"it is {record.phase}"
    if record.parked:
        return f"it is {record.phase}"  # release or promote queues it again
    return None


def _ends_before_start(backend: Backend, record: JobRecord) -> bool:
    """Record a job killed while starting, or one to skip; whether it ended."""
    kill_signal = backend.store.kill_requested(record.name)
    if kill_signal is not None:
        record.kill_signal = kill_signal
        end(backend, record, KILLED, error="killed while starting: it never ran")
    elif record.creates and all(
        os.path.exists(os.path.join(record.cwd, path)) for path in record.creates
    ):
        end(backend, record, SKIPPED, error="everything it creates exists")
    else:
        return False
    logger.info("job %s %s", record.name, record.phase)
    return True


def _redelivered(backend: Backend, record: JobRecord) -> bool:
    """A message of a started job: whether to run it here (a take-over).

    Otherwise the attempt of its dead worker is recorded as over (a retry
    may follow), or the message is a duplicate of a job a live worker runs.
    """
    verdict = backend.redelivered(record)
    if verdict == RUNS_ELSEWHERE:
        logger.info("job %s: not run: it runs on %s", record.name, record.worker)
        return False
    stop_leftover(backend, record.name)
    if verdict == LOST_ATTEMPT:
        # Its end, if its process record has it; else lost with its worker.
        job = backend.job_from_record(record)
        lost = not job.finished or job.state == LOST
        end_attempt(
            backend,
            record,
            LOST if lost else job.state,
            returncode=job.returncode,
            error="its worker died while it ran" if lost else None,
            finished_at=job.finished_at,
        )
        return False
    logger.warning("job %s: its worker died: taking it over", record.name)
    take_over(record)
    return True


def stop_leftover(backend: Backend, name: str) -> None:
    """Stop job ``name``'s command that nobody waits for any more (this host)."""
    info = backend.manager.get(name)
    if info is not None and info.returncode is None and info.command_alive():
        logger.warning("job %s: stopping the command its dead worker left", name)
        try:
            wait_gone(signal_job(info.pid, signal.SIGKILL, group=True), STOP_WAIT_S)
        except ProcessLookupError:
            pass


def end_attempt(
    backend: Backend,
    record: JobRecord,
    state: str,
    *,
    returncode: int | None = None,
    error: str | None = None,
    finished_at: str | None = None,
) -> bool:
    """Record how an attempt ended (under the jobs lock); whether it is final.

    A failed, timed-out or lost attempt of a job with attempts left is queued
    again after its delay instead; a killed one never is.
    """
    if (
        state not in RETRIED_STATES
        or record.attempt >= record.max_attempts
        or record.kill_signal is not None
    ):
        end(
            backend,
            record,
            state,
            returncode=returncode,
            error=error,
            finished_at=finished_at,
        )
        return True
    delay = record.retry_delay * record.retry_backoff ** (record.attempt - 1)
    record.returncode = returncode
    record.finished_at = finished_at or utc_now()
    archive_attempt(record, state, error)
    reset(record)
    record.attempt += 1
    record.retry_at = (
        datetime.now(timezone.utc) + timedelta(seconds=delay)
    ).isoformat()
    logger.info(
        "job %s %s: attempt %d/%d in %.1fs",
        record.name,
        state,
        record.attempt,
        record.max_attempts,
        delay,
    )
    send(backend, record, countdown=delay)
    return False


def end_running(
    backend: Backend, name: str, returncode: int, timed_out: bool
) -> JobRecord | None:
    """Record the end of job ``name``'s command; its record (None if gone)."""
    with backend.locked():
        record = _load_still_there(backend, name)
        if record is not None and record.runs:
            record.timed_out = timed_out
            state = final_state(returncode, record.kill_signal, timed_out)
            end_attempt(backend, record, state, returncode=returncode)
    return record  # (one killed and recorded meanwhile is as it was)


def end_not_started(
    backend: Backend, name: str, state: str, returncode: int, error: str
) -> None:
    """Record that job ``name``'s command could not be started."""
    with backend.locked():
        record = _load_still_there(backend, name)
        if record is not None and record.runs:
            end_attempt(backend, record, state, returncode=returncode, error=error)


def end_abandoned(backend: Backend, name: str, error: str) -> None:
    """Record that this worker gave up job ``name``'s attempt (its own failure).

    A command it started is stopped, and the attempt ends ``lost`` (a retry
    follows if attempts are left), so the job is never left running with
    nobody to record its end.
    """
    stop_leftover(backend, name)
    with backend.locked():
        record = _load_still_there(backend, name)
        if record is not None and record.runs and record.worker_pid == os.getpid():
            end_attempt(backend, record, LOST, error=error)


def pause(backend: Backend, name: str) -> JobRecord:
    """Started -> paused (the caller then stops its command); its record.

    Raises:
        UnknownJobError: no such job.
        JobError: it is not running (or paused already).
    """
    return _between_runs(backend, name, STARTED, phases.pause, "running")


def resume(backend: Backend, name: str) -> JobRecord:
    """Paused -> started (the caller lets its command go on); its record.

    Raises:
        UnknownJobError: no such job.
        JobError: it is not paused.
    """
    return _between_runs(backend, name, PAUSED, phases.unpause, "paused")


def _between_runs(
    backend: Backend,
    name: str,
    phase: str,
    move: Callable[[Backend, JobRecord], None],
    wanted: str,
) -> JobRecord:
    """``move`` job ``name`` out of ``phase`` (a job ``wanted``, in words)."""
    phases.existing(backend, name)
    with backend.locked():
        record = backend.load(name)
        if record.phase != phase:
            raise JobError(f"job {name!r} is not {wanted} (it is {record.phase})")
        move(backend, record)
    return record


def _load_still_there(backend: Backend, name: str) -> JobRecord | None:
    """Job ``name``'s record, or None (said) if it was removed meanwhile."""
    try:
        return backend.load(name)
    except (UnknownJobError, InvalidJobRecordError) as exc:
        logger.warning("job %s: its record is gone: %s", name, exc)
        return None
