"""Jobs as users see them: listed, one by one, and whether they ended.

Read only, through a :class:`~dvc_task.jobs.backend.Backend`: the state
shown comes from each record's phase (see :mod:`~dvc_task.jobs.view`);
``status``, :func:`job` and :func:`ended` show a job that waits for a
failed one as ``dependency failed`` alike.
"""

from __future__ import annotations

import dataclasses
import logging
import time
from collections.abc import Callable, Iterable, Mapping
from typing import TYPE_CHECKING, Any

from dvc_task.jobs import slots
from dvc_task.jobs.dependencies import (
    Outcomes,
    failure_text,
    show_failed_dependencies,
)
from dvc_task.jobs.record import (
    DEPENDENCY_FAILED,
    WAITING,
    WAITING_FOR_JOBS,
    InvalidJobRecordError,
    JobRecord,
    UnknownJobError,
)
from dvc_task.jobs.store import Entry
from dvc_task.jobs.view import Job, being_queued, from_process, unreadable

if TYPE_CHECKING:
    from dvc_task.jobs.backend import Backend
    from dvc_task.jobs.slots import Offer

logger = logging.getLogger(__name__)

_warned: set[str] = set()


def _warn_once(key: str, reason: str) -> None:
    if key not in _warned:
        _warned.add(key)
        logger.warning("%s", reason)


def jobs(backend: Backend, states: Iterable[str] | None = None) -> list[Job]:
    """Every job, in submission order (only those in ``states`` if given)."""
    wanted = set(states) if states is not None else None
    entries = backend.store.entries()
    for name, entry in entries.items():
        if isinstance(entry, InvalidJobRecordError):
            _warn_once(name, f"{entry}; remove the job with 'rm'")
    found = show_failed_dependencies(shown(backend, entries))
    ended = {job.name: job.state for job in found if job.finished}
    found = with_reasons(backend, entries, found, ended.get)
    return [job for job in found if wanted is None or job.state in wanted]


def with_reasons(
    backend: Backend,
    records: Mapping[str, Entry],
    found: list[Job],
    final_state: Callable[[str], str | None],
) -> list[Job]:
    """``found``, each ``waiting`` job with what it waits for (``waiting_for``).

    ``final_state`` says how a job ended (None: it has not). Slots that no
    live worker offers are named as such; the workers are read only if a
    job waits for slots.
    """
    offers: list[Offer | None] | None = None
    explained = []
    for job in found:
        record = records.get(job.name)
        if job.state != WAITING or not isinstance(record, JobRecord):
            explained.append(job)
            continue
        if record.phase == WAITING_FOR_JOBS:
            pending = [dep for dep in record.after if final_state(dep) is None]
            reason = f"job{'s' if len(pending) > 1 else ''} {', '.join(pending)}"
        else:
            if offers is None:
                offers = [worker.offer for worker in backend.workers(found)]
            reason = slots.needs_text(record.gpus, record.resources)
            if None not in offers:  # what every live worker offers is known
                known = [offer for offer in offers if offer is not None]
                reason = slots.missing(record.gpus, record.resources, known) or reason
        explained.append(dataclasses.replace(job, waiting_for=reason))
    return explained


def shown(
    backend: Backend, entries: dict[str, Entry], with_processes: bool = True
) -> list[Job]:
    """The jobs of ``entries`` (and of processes without a record), in order.

    The queue's messages are read only if one of them waits in it.
    """
    waiting = any(
        isinstance(entry, JobRecord) and entry.not_started and not entry.parked
        for entry in entries.values()
    )
    view = backend.message_states() if waiting else {}
    found = [
        unreadable(name, str(entry))
        if isinstance(entry, InvalidJobRecordError)
        else backend.job_from_record(entry, view)
        for name, entry in entries.items()
    ]
    if with_processes:
        found.extend(backend.processes_without_record(entries))
    found.sort(key=lambda job: (job.seq, job.submitted_at or ""))
    return found


def job(backend: Backend, name: str) -> Job:
    """Job ``name`` as it is now (as :func:`jobs` lists it).

    Raises:
        UnknownJobError: no such job.
        InvalidJobRecordError: its record cannot be read.
        ValueError: an invalid name.
    """
    if not backend.has_record(name):
        info = backend.manager.get(name)
        if info is None:
            raise UnknownJobError(name)
        return from_process(name, info, str(backend.output_path(name)))
    record = backend.load(name)
    view = backend.message_states() if record.not_started else {}
    now = backend.job_from_record(record, view)
    if now.state != WAITING:
        return now
    outcomes = Outcomes(backend)
    failed = outcomes.failed(record) if record.phase == WAITING_FOR_JOBS else None
    if failed is None:
        return with_reasons(backend, {name: record}, [now], outcomes.final_state)[0]
    return dataclasses.replace(
        now, state=DEPENDENCY_FAILED, error=failure_text(*failed)
    )


def describe(backend: Backend, name: str) -> dict[str, Any]:
    """Job ``name`` in full: :meth:`Job.asdict`, and what its record adds.

    The record adds the names of its environment variables (not their
    values), its earlier attempts, and how it runs (time limit, retries,
    paths that make it skipped, seconds paused).

    Raises:
        UnknownJobError: no such job.
        InvalidJobRecordError: its record cannot be read.
    """
    found = job(backend, name).asdict()
    if backend.has_record(name):
        record = backend.load(name)
        found.update(
            env_keys=sorted(record.env),
            attempts=record.attempts,
            timeout=record.timeout,
            retries=record.retries,
            retry_delay=record.retry_delay,
            retry_backoff=record.retry_backoff,
            creates=record.creates,
            paused_s=record.paused_for(),
        )
    return found


def ended(backend: Backend, name: str) -> bool:
    """Whether job ``name`` has finished (or is gone); cheaper than :func:`job`.

    It reads the queue (every waiting message) only for a queued job
    whose record is old enough for its message to be lost.
    """
    try:
        record = backend.load(name)
    except UnknownJobError:
        return backend.manager.get(name) is None or job(backend, name).finished
    except InvalidJobRecordError:
        return True
    if record.finished:
        return True
    if record.phase == WAITING_FOR_JOBS:
        return Outcomes(backend).failed(record) is not None
    if record.not_started:
        return _lost_before_start(backend, record)
    return backend.job_from_record(record).finished


def wait_ended(backend: Backend, name: str, timeout: float | None) -> bool:
    """Wait until job ``name`` has finished; whether it did within ``timeout``."""
    deadline = None if timeout is None else time.monotonic() + timeout
    # The worker's last word on a job is its record, written.
    waiter = backend.changes()
    try:
        while not ended(backend, name):
            if deadline is not None and time.monotonic() > deadline:
                return False
            waiter.wait(0.2)
    finally:
        waiter.close()
    return True


def left_queue(backend: Backend, name: str) -> bool:
    """Whether job ``name`` is past waiting: started, ended, lost or gone.

    Cheap for a job that waits: its record, and only once it is old
    enough to be lost, the queue.
    """
    try:
        record = backend.load(name)
    except (UnknownJobError, InvalidJobRecordError):
        return True
    return not record.not_started or _lost_before_start(backend, record)


def _lost_before_start(backend: Backend, record: JobRecord) -> bool:
    # Its message is looked for (with every other waiting one) only once
    # the record is old enough for the message to be missing for good.
    return (
        not record.parked
        and not being_queued(record)
        and job(backend, record.name).finished
    )
