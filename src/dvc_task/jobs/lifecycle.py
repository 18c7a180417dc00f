"""The one owner of a job's life: every change of its phase is made here.

A job's record holds its phase (see :mod:`~dvc_task.jobs.record`) and
whether a message of its current task id is out (``has_message``). Each
transition below checks its precondition under the jobs lock, writes the
new phase, and says what becomes of the message::

    submit    -> queued (send) | held | waiting for jobs          (no message)
    hold      queued, waiting for ... -> held                     (unqueue)
    release   held -> queued (send) | waiting for jobs
    promote   waiting for jobs -> queued (send) | dependency failed
              waiting for slots -> queued (send), once slots were freed
    take      queued, waiting to retry -> started | waiting for slots
              | killed | skipped (the worker holds the message: taken)
              started, its worker dead -> queued again here (take over),
              or the attempt ends lost
    end       started -> a final state | waiting to retry (send, delayed)
    retry     final -> queued (send) | held | waiting for jobs
    kill      not started -> killed (unqueue); started: signal recorded
    forget    final -> gone (record, output, message, result)

Nothing else writes a phase: the worker's task (:mod:`~dvc_task.jobs.tasks`),
the command line and the Python API call these.
"""

from __future__ import annotations

import logging
import os
import signal
from collections.abc import Iterable
from dataclasses import dataclass
from datetime import datetime, timedelta, timezone
from pathlib import Path
from typing import TYPE_CHECKING

from shortuuid import uuid

from dvc_task.jobs import reading, slots
from dvc_task.jobs.backend import LOST_ATTEMPT, RUNS_ELSEWHERE
from dvc_task.jobs.dependencies import Outcomes, failure_text
from dvc_task.jobs.record import (
    DEPENDENCY_FAILED,
    FAILED,
    HELD,
    KILLED,
    LOST,
    QUEUED,
    RETRY_WAIT,
    SKIPPED,
    STARTED,
    TIMED_OUT,
    WAITING_FOR_JOBS,
    WAITING_FOR_SLOTS,
    InvalidJobRecordError,
    JobError,
    JobNotFinishedError,
    JobRecord,
    UnknownJobError,
)
from dvc_task.jobs.view import final_state, parse_time
from dvc_task.proc.info import process_create_time, process_start_id, utc_now
from dvc_task.proc.tree import signal_job, wait_gone
from dvc_task.utils import remove as remove_path

if TYPE_CHECKING:
    from dvc_task.jobs.backend import Backend

logger = logging.getLogger(__name__)

#: States of an attempt that a retry follows, while attempts are left.
RETRIED_STATES = frozenset({FAILED, TIMED_OUT, LOST})
#: How long a worker waits for a dead worker's leftover command to go.
STOP_WAIT_S = 10.0


# --- messages and parking -----------------------------------------------------


def _send(backend: Backend, record: JobRecord, countdown: float = 0.0) -> None:
    """Queued (or waiting to retry): a new task id, saved, then its message."""
    record.task_id = uuid()
    record.queued_at = utc_now()
    record.phase = RETRY_WAIT if countdown else QUEUED
    record.has_message = True
    backend.save(record)
    backend.publish(record, countdown or None)
    if record.waiting_since is None:
        backend.store.unmark_waiting(record.name)


def _park(backend: Backend, record: JobRecord, phase: str) -> None:
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


def _end(
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
    record.phase = state
    record.returncode = returncode
    if error is not None:
        record.error = error
    record.finished_at = finished_at or utc_now()
    backend.store.unmark_waiting(record.name)
    backend.save(record)


def _place(backend: Backend, record: JobRecord, held: bool) -> None:
    """Where a job that has not started belongs: held, waiting, or queued."""
    if held:
        _park(backend, record, HELD)
    elif record.after:
        _park(backend, record, WAITING_FOR_JOBS)
    else:
        _send(backend, record)


def _existing(backend: Backend, name: str) -> JobRecord:
    # Before the lock: an unknown name must not create the queue's folders.
    if not backend.has_record(name):
        raise UnknownJobError(name)
    return backend.load(name)


# --- submit, hold, release ----------------------------------------------------


def submit(backend: Backend, record: JobRecord, held: bool) -> None:
    """Give a new ``record`` its first phase (under the jobs lock).

    Its record is written before its message, and deleted if the message
    cannot be sent.
    """
    try:
        _place(backend, record, held)
    except BaseException:
        backend.store.delete(record.name)
        raise


def hold(backend: Backend, name: str) -> bool:
    """Keep job ``name`` from starting until :func:`release`; False if held.

    Raises:
        UnknownJobError: no such job.
        JobError: it has started or finished.

    """
    _existing(backend, name)
    with backend.locked():
        record = backend.load(name)
        if record.phase == HELD:
            return False
        if not record.not_started:
            state = backend.job_from_record(record).state
            raise JobError(
                f"job {name!r} is {state}: only a job that has not started can be held"
            )
        _park(backend, record, HELD)
    return True


def release(backend: Backend, name: str) -> None:
    """Let held job ``name`` start (once the jobs it waits for are done).

    Raises:
        UnknownJobError: no such job.
        JobError: it is not held.

    """
    _existing(backend, name)
    with backend.locked():
        record = backend.load(name)
        if record.phase != HELD:
            raise JobError(f"job {name!r} is not held")
        _place(backend, record, held=False)
    promote(backend)


# --- promotion ------------------------------------------------------------------


def promote(backend: Backend, slots_freed: bool = True) -> list[str]:
    """Queue the parked jobs that are ready; fail those whose jobs failed.

    Jobs that wait for slots are queued again only when ``slots_freed`` (a
    job that held slots ended, or a worker starts). Returns the names of
    the jobs queued, in submission order.
    """
    if not backend.store.waiting_names():
        return []
    queued: list[str] = []
    with backend.locked():
        outcomes = Outcomes(backend)
        changed = True
        while changed:
            changed = False
            ready: list[JobRecord] = []
            for name in backend.store.waiting_names():
                try:
                    record = backend.load(name)
                except (UnknownJobError, InvalidJobRecordError, ValueError):
                    backend.store.unmark_waiting(name)
                    continue
                verdict = _verdict(backend, record, slots_freed, outcomes)
                if verdict == _FAILED:
                    changed = True
                elif verdict == _READY:
                    ready.append(record)
            for record in sorted(ready, key=lambda r: r.seq):
                _send(backend, record)
                queued.append(record.name)
    return queued


_READY, _FAILED, _WAITS = "ready", "failed", "waits"


def _verdict(
    backend: Backend, record: JobRecord, slots_freed: bool, outcomes: Outcomes
) -> str:
    """Whether a marked job is ready to queue, has failed, or waits on."""
    if record.phase == WAITING_FOR_JOBS:
        failed = outcomes.failed(record)
        if failed is not None:
            _end(backend, record, DEPENDENCY_FAILED, error=failure_text(*failed))
            outcomes.set(record.name, DEPENDENCY_FAILED)
            logger.info("job %s %s", record.name, DEPENDENCY_FAILED)
            return _FAILED
        return _READY if outcomes.all_succeeded(record) else _WAITS
    if record.phase == WAITING_FOR_SLOTS:
        return _READY if slots_freed else _WAITS
    if record.phase == HELD or (record.not_started and record.waiting_since):
        return _WAITS  # a slot job queued again keeps its place in line
    backend.store.unmark_waiting(record.name)
    return _WAITS


def overtakes_a_patient_job(
    backend: Backend, record: JobRecord, patience: float
) -> bool:
    """Whether an older job has waited for slots over ``patience`` seconds.

    Then ``record`` (which needs slots too) must not take slots before it.
    A held job has lost its place in line.
    """
    now = datetime.now(timezone.utc)
    for name in backend.store.waiting_names():
        try:
            other = backend.load(name)
        except (UnknownJobError, InvalidJobRecordError, ValueError):
            continue
        if (
            other.seq < record.seq
            and other.waiting_since is not None
            and other.not_started
            and other.phase != HELD
            and (now - parse_time(other.waiting_since)).total_seconds() >= patience
        ):
            return True
    return False


# --- a worker takes a message ---------------------------------------------------


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
        if record.phase == STARTED and not _redelivered(backend, record):
            return Taken(ended=record.finished)
        record.has_message = False  # this worker holds it now
        if _ends_before_start(backend, record):
            return Taken(ended=True)
        held = None
        if not (record.gpus or record.resources) or not overtakes_a_patient_job(
            backend, record, offer.patience
        ):
            held = slots.take(record, offer, slot_folder)
        if held is None:
            _park(backend, record, WAITING_FOR_SLOTS)
            logger.info("job %s waits for its slots", name)
            return Taken()
        try:
            _mark_started(backend, record, worker, held)
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


def _mark_started(
    backend: Backend, record: JobRecord, worker: str, held: slots.Slots
) -> None:
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


def _ends_before_start(backend: Backend, record: JobRecord) -> bool:
    """Record a job killed while starting, or one to skip; whether it ended."""
    kill_signal = backend.store.kill_requested(record.name)
    if kill_signal is not None:
        record.kill_signal = kill_signal
        _end(backend, record, KILLED, error="killed while starting: it never ran")
    elif record.creates and all(
        os.path.exists(os.path.join(record.cwd, path)) for path in record.creates
    ):
        _end(backend, record, SKIPPED, error="everything it creates exists")
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
        job = backend.job_from_record(record)
        if job.finished and job.state != LOST:
            end_attempt(
                backend,
                record,
                job.state,
                returncode=job.returncode,
                finished_at=job.finished_at,
            )
        else:
            end_attempt(
                backend,
                record,
                LOST,
                returncode=job.returncode,
                error="its worker died while it ran",
                finished_at=job.finished_at,
            )
        return False
    logger.warning("job %s: its worker died: taking it over", record.name)
    _archive_attempt(record, LOST, "its worker died while it ran; another took over")
    _reset(record)
    record.phase = QUEUED
    record.handovers += 1
    return True


def stop_leftover(backend: Backend, name: str) -> None:
    """Stop a command that a dead worker of this host left running."""
    info = backend.manager.get(name)
    if info is not None and info.returncode is None and info.command_alive():
        logger.warning("job %s: stopping the command its dead worker left", name)
        try:
            wait_gone(signal_job(info.pid, signal.SIGKILL, group=True), STOP_WAIT_S)
        except ProcessLookupError:
            pass


# --- the end of an attempt, and retries -----------------------------------------


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
        _end(
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
    _archive_attempt(record, state, error)
    _reset(record)
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
    _send(backend, record, countdown=delay)
    return False


def end_running(
    backend: Backend, name: str, returncode: int, timed_out: bool
) -> JobRecord | None:
    """Record the end of job ``name``'s command; its record (None if gone)."""
    with backend.locked():
        try:
            record = backend.load(name)
        except (UnknownJobError, InvalidJobRecordError) as exc:
            logger.warning("job %s: its record is gone: %s", name, exc)
            return None
        if record.phase != STARTED:
            return record  # killed and recorded meanwhile
        record.timed_out = timed_out
        state = final_state(returncode, record.kill_signal, timed_out)
        end_attempt(backend, record, state, returncode=returncode)
    return record


def end_not_started(
    backend: Backend, name: str, state: str, returncode: int, error: str
) -> None:
    """Record that job ``name``'s command could not be started."""
    with backend.locked():
        record = backend.load(name)
        if record.phase == STARTED:
            end_attempt(backend, record, state, returncode=returncode, error=error)


def _archive_attempt(record: JobRecord, state: str, error: str | None) -> None:
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


def _reset(record: JobRecord) -> None:
    record.worker = record.worker_start_id = record.started_at = None
    record.worker_pid = None
    record.worker_create_time = None
    record.finished_at = record.error = None
    record.returncode = record.kill_signal = None
    record.timed_out = False
    record.assigned_gpus = []
    record.retry_at = None
    record.host = None


def retry(backend: Backend, names: Iterable[str]) -> list[str]:
    """Queue finished jobs again, as they were submitted; their names.

    Earlier attempts stay in the record and the output; each gets its
    attempts again. A job that waits for others waits for them again.

    Raises:
        UnknownJobError: no such job.
        JobError: a job has not finished.

    """
    names = list(dict.fromkeys(names))
    for name in names:
        _existing(backend, name)
    with backend.locked():
        records = []
        for name in names:
            record = backend.load(name)
            job = backend.job_from_record(record, backend.message_states())
            if not job.finished:
                raise JobError(
                    f"job {name!r} is {job.state}: only a finished job can be retried"
                )
            # As it is seen: e.g. lost with a worker that could not record it.
            record.returncode = job.returncode
            records.append((record, job.state))
        for record, state in records:
            if record.started_at is not None:
                _archive_attempt(record, state, None)
            _reset(record)
            record.attempt = 1
            record.waiting_since = None
            backend.store.clear_kill_request(record.name)
            _place(backend, record, held=False)
    promote(backend)
    return names


# --- kill and forget --------------------------------------------------------------


def kill(backend: Backend, name: str, sig: int) -> bool:
    """Record a kill of job ``name``; whether it ended without running.

    A job that has not started is killed and its message goes; a started
    one is noted as sent ``sig`` (its worker records how it ended).

    Raises:
        UnknownJobError: no such job.
        JobError: it has finished.

    """
    _existing(backend, name)
    # The request is stored before the lock is taken: a worker that is
    # about to start the job sees it under the lock and does not start it.
    backend.store.request_kill(name, int(sig))
    with backend.locked():
        record = backend.load(name)
        if record.not_started:
            record.kill_signal = int(sig)
            _end(
                backend,
                record,
                KILLED,
                error=f"killed while {record.phase}: it never ran",
            )
            never_ran = True
        elif record.phase == KILLED and record.returncode is None:
            never_ran = True  # the worker saw the request before it started it
        elif record.finished:
            backend.store.clear_kill_request(name)
            raise JobError(f"job {name!r} has finished ({record.phase})")
        else:
            record.kill_signal = int(sig)
            backend.save(record)
            never_ran = False
    if never_ran:
        promote(backend)  # the jobs that wait for it fail
    return never_ran


def forget(
    backend: Backend,
    names: Iterable[str],
    finished_before: datetime | None = None,
    force: bool = False,
) -> list[str]:
    """Delete finished jobs, whole; their names.

    Each job is judged again under the lock: one queued again since it was
    chosen (``retry``, ``run --replace``), or one that finished after
    ``finished_before``, is kept. With ``force``, an unfinished one goes too.
    """
    with backend.locked():
        return _forget(backend, names, finished_before, force)


def _forget(
    backend: Backend,
    names: Iterable[str],
    finished_before: datetime | None,
    force: bool,
) -> list[str]:
    gone = []
    task_ids: list[str] = []
    view: dict[str, str] | None = None
    for name in names:
        try:
            record = backend.load(name)
        except UnknownJobError:
            continue
        except InvalidJobRecordError:
            _delete(backend, name, None)  # what cannot be read can still go
            gone.append(name)
            continue
        if not record.finished and not force:
            if record.not_started and view is None:
                view = backend.message_states()
            job = backend.job_from_record(record, view or {})
            if not job.finished:
                continue
            record.finished_at = record.finished_at or job.finished_at
        if finished_before is not None and (
            record.finished_at is None
            or parse_time(record.finished_at) > finished_before
        ):
            continue
        _delete(backend, name, record)
        task_ids.append(record.task_id)
        gone.append(name)
    if task_ids:
        backend.forget_messages(task_ids)
    return gone


def replace(backend: Backend, name: str) -> None:
    """Delete finished job ``name`` to queue another of its name (locked).

    Raises:
        JobNotFinishedError: it has not finished.

    """
    if not _forget(backend, [name], None, False) and backend.has_record(name):
        raise JobNotFinishedError(name, reading.job(backend, name).state)


def _delete(backend: Backend, name: str, record: JobRecord | None) -> None:
    """Delete job ``name``'s record, process folder and output (locked)."""
    remove_path(backend.procs_dir / name)
    if record is not None and record.has_message:
        backend.unqueue(record.task_id)
    backend.forget_output(name)
    backend.store.delete(name)
