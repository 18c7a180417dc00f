"""The primitive moves of a job's phase: the only code that writes one.

Each says what becomes of the job's message: :func:`send` sends a new one,
:func:`park` and :func:`end` take a waiting one off the queue. The
transitions in :mod:`.queueing` and :mod:`.running` are made of these.
Call them holding the jobs lock.
"""

from __future__ import annotations

import copy
import os
import uuid
from typing import TYPE_CHECKING

from dvc_task.jobs.record import (
    HELD,
    LOST,
    PAUSED,
    QUEUED,
    RETRY_WAIT,
    STARTED,
    WAITING_FOR_JOBS,
    WAITING_FOR_SLOTS,
    JobRecord,
    UnknownJobError,
)
from dvc_task.proc.info import process_create_time, process_start_id, utc_now
from dvc_task.utils import remove as remove_path

if TYPE_CHECKING:
    from dvc_task.jobs.backend import Backend
    from dvc_task.jobs.slots import Slots


#: The digits of a task id: a random uuid written in base 57, without the
#: letters and digits that look alike (``0``, ``1``, ``I``, ``O``, ``l``).
_ID_DIGITS = "23456789ABCDEFGHJKLMNPQRSTUVWXYZabcdefghijkmnopqrstuvwxyz"
#: Base-57 digits of the largest 128-bit number: every id is this long.
_ID_LENGTH = 22


def task_id() -> str:
    """A new Celery task id: a short uuid, as dvc-task has always made them.

    Made here rather than with ``shortuuid``: it would import ``secrets`` and
    ``hashlib`` (5 ms) into every command that queues a job.
    """
    number = uuid.uuid4().int
    digits = []
    for _ in range(_ID_LENGTH):
        number, digit = divmod(number, len(_ID_DIGITS))
        digits.append(_ID_DIGITS[digit])
    return "".join(reversed(digits))


def send(backend: Backend, record: JobRecord, countdown: float = 0.0) -> None:
    """Queued (or waiting to retry): a new task id, saved, then its message.

    The message waits ``countdown`` seconds, or until the job's own start
    time (``not_before``) if that is later than now.

    If the message cannot be sent, the record is written back as it was.
    """
    before = copy.copy(record)  # send only sets fields of plain values
    if not countdown and record.not_before is not None:
        # A job queued for later waits out its start as a retry its delay.
        countdown = record.seconds_to_start()
        if countdown:
            record.retry_at = record.not_before
    record.task_id = task_id()
    record.queued_at = utc_now()
    record.phase = RETRY_WAIT if countdown else QUEUED
    record.has_message = True
    backend.save(record)
    try:
        backend.publish(record, countdown or None)
    except BaseException:
        backend.save(before)
        raise
    if record.waiting_since is None:
        backend.store.unmark_waiting(record.name)


def taken(record: JobRecord) -> None:
    """A worker holds the job's message now: none waits for it any more."""
    record.has_message = False


def park(backend: Backend, record: JobRecord, phase: str) -> None:
    """Keep ``record`` out of the queue in ``phase``; its message goes."""
    if record.has_message:
        # A worker that claimed it meanwhile finds it parked and drops it.
        backend.unqueue(record.task_id)
        record.has_message = False
    record.phase = phase
    if phase == WAITING_FOR_SLOTS and record.waiting_since is None:
        record.waiting_since = utc_now()
    elif phase == HELD:
        record.waiting_since = None  # held: no longer first in line for slots
    backend.store.mark_waiting(record.name)
    backend.save(record)


def end(
    backend: Backend,
    record: JobRecord,
    state: str,
    *,
    returncode: int | None = None,
    error: str | None = None,
    finished_at: str | None = None,
) -> None:
    """A final phase, saved; its message, if one was out, goes."""
    if record.has_message and not record.parked:
        backend.unqueue(record.task_id)
    record.has_message = False
    record.waiting_since = None
    record.phase = state
    record.returncode = returncode
    if error is not None:
        record.error = error
    record.finished_at = finished_at or utc_now()
    backend.store.unmark_waiting(record.name)
    backend.save(record)


def place(backend: Backend, record: JobRecord, held: bool) -> None:
    """Where a job that has not started belongs: held, waiting, or queued."""
    if held:
        park(backend, record, HELD)
    elif record.after:
        park(backend, record, WAITING_FOR_JOBS)
    else:
        send(backend, record)


def existing(backend: Backend, name: str) -> JobRecord:
    """The record of job ``name``, read before the lock is taken.

    An unknown name must not create the queue's folders (as the lock would).

    Raises:
        UnknownJobError: no such job.
        InvalidJobRecordError: its record cannot be read.
    """
    if not backend.has_record(name):
        raise UnknownJobError(name)
    return backend.load(name)


def mark_started(backend: Backend, record: JobRecord, worker: str, held: Slots) -> None:
    """Started by ``worker`` of this process, holding the slots ``held``."""
    name = record.name
    if record.attempt > 1 or record.attempts:
        # The last attempt's process record would stand for this one.
        remove_path(backend.procs_dir / name / f"{name}.json")
    pid = os.getpid()
    record.phase = STARTED
    record.worker = worker
    record.host = backend.host
    record.worker_pid = pid
    record.worker_create_time = process_create_time(pid)
    record.worker_start_id = process_start_id(pid)
    record.started_at = utc_now()
    record.assigned_gpus = held.gpus
    if record.waiting_since is not None:
        # It no longer holds younger slot jobs back (see promote).
        record.waiting_since = None
        backend.store.unmark_waiting(name)
    backend.save(record)


def archive_attempt(record: JobRecord, state: str, error: str | None) -> None:
    """Keep the attempt that ended ``state`` in the record's ``attempts``."""
    record.attempts.append(
        {
            "attempt": record.attempt,
            "state": state,
            "returncode": record.returncode,
            "started_at": record.started_at,
            "finished_at": record.finished_at or utc_now(),
            "worker": record.worker,
            "host": record.host,
            "gpus": record.assigned_gpus,
            "error": error if error is not None else record.error,
        }
    )


def reset(record: JobRecord) -> None:
    """Forget what the last attempt recorded, before the next one."""
    record.worker = record.worker_start_id = record.started_at = None
    record.worker_pid = None
    record.worker_create_time = None
    record.finished_at = record.error = None
    record.returncode = record.kill_signal = None
    record.timed_out = False
    record.assigned_gpus = []
    record.retry_at = None
    record.host = None
    record.paused_at = None
    record.paused_s = 0.0


def pause(backend: Backend, record: JobRecord) -> None:
    """Paused: its command is stopped (the caller stops it) from now."""
    record.phase = PAUSED
    record.paused_at = utc_now()
    backend.save(record)


def unpause(backend: Backend, record: JobRecord) -> None:
    """Started again: the time it was paused is added to its pauses."""
    record.paused_s = record.paused_for()
    record.paused_at = None
    record.phase = STARTED
    backend.save(record)


def take_over(record: JobRecord) -> None:
    """Queued again here: the run of a worker that died is kept as lost.

    It does not use up one of the job's retries.
    """
    archive_attempt(record, LOST, "its worker died while it ran; another one took over")
    reset(record)
    record.phase = QUEUED
    record.handovers += 1
