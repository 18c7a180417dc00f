"""Transitions of jobs that no worker runs.

``submit``, ``hold``, ``release``, ``promote``, ``retry``, ``kill`` and
``forget``, each under the jobs lock.
"""

from __future__ import annotations

import logging
from collections.abc import Iterable
from datetime import datetime, timezone
from typing import TYPE_CHECKING

from dvc_task import lazy
from dvc_task.jobs.lifecycle.phases import (
    archive_attempt,
    end,
    existing,
    park,
    place,
    reset,
    send,
)
from dvc_task.jobs.record import (
    DEPENDENCY_FAILED,
    HELD,
    KILLED,
    WAITING_FOR_JOBS,
    WAITING_FOR_SLOTS,
    InvalidJobRecordError,
    JobError,
    JobNotFinishedError,
    JobRecord,
    UnknownJobError,
)
from dvc_task.jobs.view import parse_time
from dvc_task.utils import remove as remove_path

if TYPE_CHECKING:
    from dvc_task.jobs import dependencies, reading
    from dvc_task.jobs.backend import Backend
else:
    # Not needed to queue a job: a job queued from the command line does
    # not load them.
    dependencies = lazy.module("dvc_task.jobs.dependencies")
    reading = lazy.module("dvc_task.jobs.reading")

logger = logging.getLogger(__name__)


def submit(backend: Backend, record: JobRecord, held: bool) -> None:
    """Give a new ``record`` its first phase (under the jobs lock).

    Its record is written before its message, and deleted if the message
    cannot be sent.
    """
    try:
        place(backend, record, held)
    except BaseException:
        backend.store.delete(record.name)
        raise


def submit_all(backend: Backend, records: list[JobRecord], held: bool) -> None:
    """Give new ``records`` their first phase, all or none (under the lock).

    If one cannot be queued, those queued before it are taken back: their
    messages off the queue, their records deleted.
    """
    done: list[JobRecord] = []
    try:
        for record in records:
            submit(backend, record, held)
            done.append(record)
    except BaseException:
        for record in done:
            if record.has_message:
                backend.unqueue(record.task_id)
            backend.store.delete(record.name)
        raise


def hold(backend: Backend, name: str) -> bool:
    """Keep job ``name`` from starting until :func:`release`; False if held.

    Raises:
        UnknownJobError: no such job.
        JobError: it has started or finished.

    """
    existing(backend, name)
    with backend.locked():
        record = backend.load(name)
        if record.phase == HELD:
            return False
        if not record.not_started:
            state = backend.job_from_record(record).state
            raise JobError(
                f"job {name!r} is {state}: only a job that has not started can be held"
            )
        kept_its_place = record.waiting_since is not None
        park(backend, record, HELD)
    if kept_its_place:
        # Younger slot jobs that it held back may go now.
        promote(backend)
    return True


def release(backend: Backend, name: str) -> None:
    """Let held job ``name`` start (once the jobs it waits for are done).

    Raises:
        UnknownJobError: no such job.
        JobError: it is not held.

    """
    existing(backend, name)
    with backend.locked():
        record = backend.load(name)
        if record.phase != HELD:
            raise JobError(f"job {name!r} is not held")
        place(backend, record, held=False)
    promote(backend)


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
        outcomes = dependencies.Outcomes(backend)
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
                send(backend, record)
                queued.append(record.name)
    return queued


_READY, _FAILED, _WAITS = "ready", "failed", "waits"


def _verdict(
    backend: Backend,
    record: JobRecord,
    slots_freed: bool,
    outcomes: dependencies.Outcomes,
) -> str:
    """Whether a marked job is ready to queue, has failed, or waits on."""
    if record.phase == WAITING_FOR_JOBS:
        failed = outcomes.failed(record)
        if failed is not None:
            end(
                backend,
                record,
                DEPENDENCY_FAILED,
                error=dependencies.failure_text(*failed),
            )
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
        existing(backend, name)
    with backend.locked():
        records = []
        view = backend.message_states()  # read once, for every job named
        for name in names:
            record = backend.load(name)
            job = backend.job_from_record(record, view)
            if not job.finished:
                raise JobError(
                    f"job {name!r} is {job.state}: only a finished job can be retried"
                )
            # As it is seen: e.g. lost with a worker that could not record it.
            record.returncode = job.returncode
            records.append((record, job.state))
        for record, state in records:
            if record.started_at is not None:
                archive_attempt(record, state, None)
            reset(record)
            record.attempt = 1
            record.waiting_since = None
            backend.store.clear_kill_request(record.name)
            place(backend, record, held=False)
    promote(backend)
    return names


def kill(backend: Backend, name: str, sig: int) -> bool:
    """Record a kill of job ``name``; whether it ended without running.

    A job that has not started is killed and its message goes; a started
    one is noted as sent ``sig`` (its worker records how it ended).

    Raises:
        UnknownJobError: no such job.
        JobError: it has finished.

    """
    existing(backend, name)
    # The request is stored before the lock is taken: a worker that is
    # about to start the job sees it under the lock and does not start it.
    backend.store.request_kill(name, int(sig))
    with backend.locked():
        record = backend.load(name)
        if record.not_started:
            record.kill_signal = int(sig)
            end(
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
    *,
    messages: bool = True,
) -> list[str]:
    """Delete finished jobs, whole; their names.

    Each job is judged again under the lock: one queued again since it was
    chosen (``retry``, ``run --replace``), or one that finished after
    ``finished_before``, is kept. With ``force``, an unfinished one goes too.
    Without ``messages``, their processed messages and results are left to
    the caller (``cleanup`` forgets those of every job without a record).
    """
    with backend.locked():
        return _forget(backend, names, finished_before, force, messages)


def _forget(
    backend: Backend,
    names: Iterable[str],
    finished_before: datetime | None,
    force: bool,
    messages: bool = True,
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
    if task_ids and messages:
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
