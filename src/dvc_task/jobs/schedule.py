"""Job control: when a job enters the queue, leaves it, and enters it again.

A job that must not start yet (held, waiting for other jobs, or for GPU or
resource slots) has a record but no message: it takes no worker slot and
costs nothing while it waits. :func:`promote` queues the ones that are
ready, and fails those whose jobs failed. It runs after every job's end, when
a worker starts, and on ``release``; an empty file per waiting job in
``jobs/waiting/`` tells it which records to read.

An attempt that fails, times out or is lost with its worker is queued again
while attempts are left, after its retry delay (a Celery countdown: the
worker that holds it takes no slot meanwhile).
"""

from __future__ import annotations

import logging
import math
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field, replace
from datetime import datetime, timedelta, timezone
from typing import TYPE_CHECKING

from dvc_task.files import check_name
from dvc_task.jobs.listing import UNREADABLE
from dvc_task.jobs.record import (
    DEPENDENCY_FAILED,
    FAILED,
    FINAL_STATES,
    LOST,
    NOT_STARTED,
    SUCCESS_STATES,
    TIMED_OUT,
    WAITING,
    WAITING_FOR_JOBS,
    WAITING_FOR_SLOTS,
    InvalidJobRecordError,
    JobError,
    JobRecord,
    UnknownJobError,
)
from dvc_task.jobs.view import Job

if TYPE_CHECKING:
    from dvc_task.jobs.queue import JobQueue

logger = logging.getLogger(__name__)

#: What a job that another waits for is, once it is gone.
REMOVED = "removed"
#: States of an attempt that a retry follows, while attempts are left.
RETRIED_STATES = frozenset({FAILED, TIMED_OUT, LOST})


@dataclass(frozen=True)
class JobOptions:
    """How a job is run, beside its command (see :meth:`JobQueue.submit`)."""

    retries: int = 0
    retry_delay: float = 0.0
    retry_backoff: float = 1.0
    timeout: float | None = None
    after: Sequence[str] = ()
    priority: int = 0
    held: bool = False
    creates: Sequence[str] = ()
    gpus: int = 0
    resources: Mapping[str, int] = field(default_factory=dict)

    def __post_init__(self) -> None:
        """Check every option; a bad one raises ``ValueError`` naming it."""
        _check_count("retries", self.retries)
        _check_count("gpus", self.gpus)
        for what, seconds in (
            ("retry_delay", self.retry_delay),
            ("timeout", self.timeout),
        ):
            if seconds is not None and (
                isinstance(seconds, bool)
                or not isinstance(seconds, (int, float))
                or not math.isfinite(seconds)
                or seconds < 0
                or (what == "timeout" and seconds == 0)
            ):
                raise ValueError(
                    f"{what} must be a number of seconds > 0, not {seconds!r}"
                )
        if (
            isinstance(self.retry_backoff, bool)
            or not isinstance(self.retry_backoff, (int, float))
            or not 1 <= self.retry_backoff <= 100
        ):
            raise ValueError(
                "retry_backoff must be a factor from 1 to 100, "
                f"not {self.retry_backoff!r}"
            )
        if isinstance(self.priority, bool) or not isinstance(self.priority, int):
            raise ValueError(f"priority must be a whole number, not {self.priority!r}")
        if isinstance(self.after, str) or isinstance(self.creates, str):
            raise ValueError("after and creates are lists, not one string")
        for name in self.after:
            check_name(name, "job")
        for path in self.creates:
            if not isinstance(path, str) or not path:
                raise ValueError(f"creates: {path!r} is not a path")
        for name, count in self.resources.items():
            check_name(name, "resource")
            _check_count(f"resource {name!r}", count)

    def apply(self, record: JobRecord) -> None:
        """Write the options into ``record``."""
        record.retries = self.retries
        record.retry_delay = float(self.retry_delay)
        record.retry_backoff = float(self.retry_backoff)
        record.timeout = None if self.timeout is None else float(self.timeout)
        record.after = list(dict.fromkeys(self.after))
        record.priority = self.priority
        record.held = self.held
        record.creates = list(self.creates)
        record.gpus = self.gpus
        record.resources = {k: v for k, v in self.resources.items() if v}
        record.waiting_for = WAITING_FOR_JOBS if record.after else None


def _check_count(what: str, value: object) -> None:
    if isinstance(value, bool) or not isinstance(value, int) or value < 0:
        raise ValueError(f"{what} must be a whole number >= 0, not {value!r}")


# --- dependencies ------------------------------------------------------------


def check_after(queue: JobQueue, name: str, after: Iterable[str]) -> None:
    """Refuse unknown jobs in ``after``, and a cycle back to ``name``.

    Raises:
        JobError: naming the unknown job, or the cycle.

    """
    for dep in after:
        if dep == name:
            raise JobError(f"job {name!r} cannot wait for itself")
        if not queue.has_record(dep) and queue.manager.get(dep) is None:
            raise JobError(
                f"job {name!r} waits for {dep!r}, but there is no job named {dep!r}"
            )
    path = _path_back(queue, name, list(after))
    if path:
        raise JobError(
            f"job {name!r} would wait for itself: {' -> '.join([name, *path])}"
        )


def _path_back(queue: JobQueue, name: str, start: list[str]) -> list[str]:
    """A chain of waits from ``start`` back to ``name``; empty if none."""
    parents: dict[str, str | None] = dict.fromkeys(start)
    todo = list(start)
    while todo:
        current = todo.pop()
        try:
            deps = queue.load(current).after
        except (UnknownJobError, InvalidJobRecordError):
            continue
        for dep in deps:
            if dep == name:
                chain = [current]
                while parents[chain[-1]] is not None:
                    chain.append(parents[chain[-1]])  # type: ignore[arg-type]
                return [*reversed(chain), name]
            if dep not in parents:
                parents[dep] = current
                todo.append(dep)
    return []


def _final_state(
    queue: JobQueue, name: str, cache: dict[str, str | None]
) -> str | None:
    """Job ``name``'s final state (None while it has not finished)."""
    if name in cache:
        return cache[name]
    state: str | None
    try:
        record = queue.load(name)
    except UnknownJobError:
        state = REMOVED if queue.manager.get(name) is None else queue.job(name).state
    except InvalidJobRecordError:
        state = UNREADABLE
    else:
        if record.progress in FINAL_STATES:
            state = record.progress
        elif record.progress == NOT_STARTED:
            state = None  # waiting, queued, or a retry to come
        else:
            state = queue.job_from_record(record).state
    if state not in FINAL_STATES and state not in (REMOVED, UNREADABLE):
        state = None
    cache[name] = state
    return state


def failed_dependency(
    queue: JobQueue, record: JobRecord, cache: dict[str, str | None]
) -> tuple[str, str] | None:
    """``(job, state)`` of a job ``record`` waits for that did not succeed."""
    for dep in record.after:
        state = _final_state(queue, dep, cache)
        if state is not None and state not in SUCCESS_STATES:
            return dep, state
    return None


def _dependencies_done(
    queue: JobQueue, record: JobRecord, cache: dict[str, str | None]
) -> bool:
    return all(
        _final_state(queue, dep, cache) in SUCCESS_STATES for dep in record.after
    )


def show_failed_dependencies(jobs: list[Job]) -> list[Job]:
    """``jobs`` with those waiting for a failed job shown ``dependency failed``.

    What the next :func:`promote` records; a listing shows it at once, also
    while no worker runs to record it.
    """
    states = {job.name: job.state for job in jobs}
    failed = {
        name
        for name, state in states.items()
        if state in FINAL_STATES and state not in SUCCESS_STATES
    }
    changed = True
    shown = list(jobs)
    while changed:
        changed = False
        for index, job in enumerate(shown):
            if job.state != WAITING or not job.after:
                continue
            dep = next((d for d in job.after if d in failed or d not in states), None)
            if dep is not None:
                what = states.get(dep, REMOVED)
                shown[index] = replace(
                    job,
                    state=DEPENDENCY_FAILED,
                    error=f"job {dep!r} it waits for is {what}",
                )
                failed.add(job.name)
                states[job.name] = DEPENDENCY_FAILED
                changed = True
    return shown


# --- waiting jobs --------------------------------------------------------------


def mark_waiting(queue: JobQueue, name: str) -> None:
    """Note that job ``name`` waits out of the queue (under the jobs lock)."""
    queue.store.mark_waiting(name)


def unmark(queue: JobQueue, name: str) -> None:
    """Job ``name`` no longer waits out of the queue (under the jobs lock)."""
    queue.store.unmark_waiting(name)


def _waiting_names(queue: JobQueue) -> list[str]:
    return queue.store.waiting_names()


def promote(queue: JobQueue, slots_freed: bool = True) -> list[str]:
    """Queue the waiting jobs that are ready; fail those whose jobs failed.

    Jobs that wait for slots are queued again only when ``slots_freed`` (a
    job that held slots ended, or a worker starts). Returns the names of
    the jobs queued, in submission order.
    """
    if not _waiting_names(queue):
        return []
    queued: list[str] = []
    with queue.locked():
        cache: dict[str, str | None] = {}
        changed = True
        while changed:
            changed = False
            ready: list[JobRecord] = []
            for name in _waiting_names(queue):
                try:
                    record = queue.load(name)
                except (UnknownJobError, InvalidJobRecordError, ValueError):
                    unmark(queue, name)
                    continue
                verdict = _verdict(queue, record, slots_freed, cache)
                if verdict == _FAILED:
                    changed = True
                elif verdict == _READY:
                    ready.append(record)
            for record in sorted(ready, key=lambda r: r.seq):
                queue.send(record)
                if not _queued_for_slots(record):
                    unmark(queue, record.name)
                queued.append(record.name)
    return queued


_READY, _FAILED, _WAITS = "ready", "failed", "waits"


def _verdict(
    queue: JobQueue,
    record: JobRecord,
    slots_freed: bool,
    cache: dict[str, str | None],
) -> str:
    """Whether a marked job is ready to queue, has failed, or waits on."""
    name = record.name
    if record.progress != NOT_STARTED:
        unmark(queue, name)
        return _WAITS
    if _queued_for_slots(record):
        return _WAITS  # its marker stays until it starts (patience)
    if record.waiting_for == WAITING_FOR_JOBS:
        failed = failed_dependency(queue, record, cache)
        if failed is not None:
            dep, state = failed
            record.finish(
                DEPENDENCY_FAILED, error=f"job {dep!r} it waits for is {state}"
            )
            queue.save(record)
            unmark(queue, name)
            cache[name] = DEPENDENCY_FAILED
            logger.info("job %s %s", name, DEPENDENCY_FAILED)
            return _FAILED
        if not _dependencies_done(queue, record, cache):
            return _WAITS
        record.waiting_for = None
        queue.save(record)
    elif record.waiting_for == WAITING_FOR_SLOTS:
        if not slots_freed:
            return _WAITS
        record.waiting_for = None  # a worker tries its slots again
        queue.save(record)
    return _WAITS if record.held else _READY


def _queued_for_slots(record: JobRecord) -> bool:
    """Whether ``record`` waited for slots and is queued again for them.

    Its marker stays until it starts: a worker that would start a younger
    slot job meanwhile must still see that an older one has waited.
    """
    return (
        record.progress == NOT_STARTED
        and record.waiting_for is None
        and record.waiting_since is not None
        and not record.held
    )


def park(queue: JobQueue, record: JobRecord, reason: str | None) -> None:
    """Keep ``record`` out of the queue for ``reason`` (under the jobs lock)."""
    record.waiting_for = reason
    if reason == WAITING_FOR_SLOTS and record.waiting_since is None:
        record.waiting_since = datetime.now(timezone.utc).isoformat()
    mark_waiting(queue, record.name)
    queue.save(record)


def overtakes_a_patient_job(
    queue: JobQueue, record: JobRecord, patience: float
) -> bool:
    """Whether an older job has waited for slots over ``patience`` seconds.

    Then ``record`` (which needs slots too) must not take slots before it.
    """
    now = datetime.now(timezone.utc)
    for name in _waiting_names(queue):
        try:
            other = queue.load(name)
        except (UnknownJobError, InvalidJobRecordError, ValueError):
            continue
        if (
            other.seq < record.seq
            and other.waiting_since is not None
            and other.progress == NOT_STARTED
            and (now - datetime.fromisoformat(other.waiting_since)).total_seconds()
            >= patience
        ):
            return True
    return False


# --- attempts ------------------------------------------------------------------


def _archive_attempt(record: JobRecord) -> None:
    record.attempts.append(
        {
            "attempt": record.attempt,
            "state": record.progress,
            "returncode": record.returncode,
            "started_at": record.started_at,
            "finished_at": record.finished_at,
            "worker": record.worker,
            "host": record.host,
            "gpus": record.assigned_gpus,
            "error": record.error,
        }
    )


def _reset(record: JobRecord) -> None:
    record.progress = NOT_STARTED
    record.worker = record.worker_start_id = record.started_at = None
    record.worker_pid = None
    record.worker_create_time = None
    record.finished_at = record.error = None
    record.returncode = record.kill_signal = None
    record.timed_out = False
    record.assigned_gpus = []
    record.retry_at = None
    record.host = None


def hand_over(record: JobRecord) -> None:
    """Take over a job whose worker died mid-run: that run is kept as lost.

    The job runs again without using up one of its retries.
    """
    record.finish(LOST, error="its worker died while it ran; another one took over")
    _archive_attempt(record)
    _reset(record)
    record.handovers += 1


def end_attempt(
    queue: JobQueue,
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
    record.finish(state, returncode, error, finished_at)
    if (
        state not in RETRIED_STATES
        or record.attempt >= record.max_attempts
        or record.kill_signal is not None
    ):
        queue.save(record)
        return True
    delay = record.retry_delay * record.retry_backoff ** (record.attempt - 1)
    _archive_attempt(record)
    _reset(record)
    record.attempt += 1
    due = datetime.now(timezone.utc) + timedelta(seconds=delay)
    record.retry_at = due.isoformat()
    logger.info(
        "job %s %s: attempt %d/%d in %.1fs",
        record.name,
        state,
        record.attempt,
        record.max_attempts,
        delay,
    )
    queue.send(record, countdown=delay)
    return False


def retry(queue: JobQueue, names: Iterable[str]) -> list[str]:
    """Queue finished jobs again, as they were submitted; their names.

    Earlier attempts stay in the record and the output; each gets its
    attempts again. A job that waits for others waits for them again.

    Raises:
        UnknownJobError: no such job.
        JobError: a job has not finished.

    """
    done: list[str] = []
    with queue.locked():
        records = []
        for name in names:
            job = queue.job(name)
            if not job.finished:
                raise JobError(
                    f"job {name!r} is {job.state}: only a finished job can be retried"
                )
            record = queue.load(name)
            # As it is seen: e.g. lost with a worker that could not record it.
            record.progress, record.returncode = job.state, job.returncode
            records.append(record)
        for record in records:
            _archive_attempt(record)
            _reset(record)
            record.attempt = 1
            queue.clear_kill_request(record.name)
            if record.after:
                park(queue, record, WAITING_FOR_JOBS)
            elif record.held:
                park(queue, record, None)
            else:
                queue.send(record)
            done.append(record.name)
    promote(queue)
    return done


def hold(queue: JobQueue, name: str) -> bool:
    """Keep job ``name`` from starting until :func:`release`; False if it was held.

    Raises:
        UnknownJobError: no such job.
        JobError: it has started or finished.

    """
    with queue.locked():
        record = queue.load(name)
        if record.progress != NOT_STARTED:
            state = queue.job_from_record(record).state
            raise JobError(
                f"job {name!r} is {state}: only a job that has not started can be held"
            )
        if record.held:
            return False
        queued = not record.parked
        record.held = True
        record.waiting_since = None  # held: no longer first in line for slots
        park(queue, record, record.waiting_for)
        if queued:
            # A worker that claimed it meanwhile sees it held and leaves it.
            queue.unqueue(record.task_id)
    return True


def release(queue: JobQueue, name: str) -> None:
    """Let held job ``name`` start (once what it waits for is done).

    Raises:
        UnknownJobError: no such job.
        JobError: it is not held.

    """
    with queue.locked():
        record = queue.load(name)
        if not record.held:
            raise JobError(f"job {name!r} is not held")
        record.held = False
        if record.progress == NOT_STARTED:
            mark_waiting(queue, name)
        queue.save(record)
    promote(queue)
