"""Jobs that wait for others: checks at submission, and how the others ended.

Read-only: :mod:`~dvc_task.jobs.lifecycle` records ``dependency failed``;
``status``, :meth:`JobQueue.job` and :meth:`JobQueue.wait` show it through
the same :class:`Outcomes` (and :func:`show_failed_dependencies` for a whole
listing), so they agree even while no worker runs to record it.
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import replace
from typing import TYPE_CHECKING

from dvc_task.jobs.listing import UNREADABLE
from dvc_task.jobs.record import (
    DEPENDENCY_FAILED,
    FINAL_STATES,
    SUCCESS_STATES,
    WAITING,
    WAITING_FOR_JOBS,
    InvalidJobRecordError,
    JobError,
    JobRecord,
    UnknownJobError,
)
from dvc_task.jobs.view import from_process

if TYPE_CHECKING:
    from dvc_task.jobs.backend import Backend
    from dvc_task.jobs.view import Job

#: What a job that another waits for is, once it is gone.
REMOVED = "removed"


class Outcomes:
    """How the jobs that others wait for ended, read once per question."""

    def __init__(self, backend: Backend) -> None:
        """Read job records of ``backend`` as they are asked for."""
        self.backend = backend
        self._states: dict[str, str | None] = {}
        self._view: dict[str, str] | None = None

    def set(self, name: str, state: str) -> None:
        """Note that job ``name`` has just ended ``state``."""
        self._states[name] = state

    def final_state(self, name: str) -> str | None:
        """Job ``name``'s final state (None while it has not finished)."""
        if name not in self._states:
            self._states[name] = self._read(name)
        return self._states[name]

    def _read(self, name: str) -> str | None:
        backend = self.backend
        try:
            record = backend.load(name)
        except UnknownJobError:
            info = backend.manager.get(name)
            if info is None:
                return REMOVED
            state: str | None = from_process(name, info, None).state
        except InvalidJobRecordError:
            return UNREADABLE
        else:
            if record.finished:
                return record.phase
            if record.phase == WAITING_FOR_JOBS:
                # Failed already if a job it waits for failed (a chain).
                self._states[name] = None  # no cycle, but never loop on one
                return DEPENDENCY_FAILED if self.failed(record) else None
            if record.parked:
                return None
            if record.not_started and self._view is None:
                # Whether its message is still somewhere, read once.
                self._view = backend.message_states()
            state = backend.job_from_record(record, self._view or {}).state
        return state if state in FINAL_STATES else None

    def failed(self, record: JobRecord) -> tuple[str, str] | None:
        """``(job, state)`` of a job ``record`` waits for that did not succeed."""
        for dep in record.after:
            state = self.final_state(dep)
            if state is not None and state not in SUCCESS_STATES:
                return dep, state
        return None

    def all_succeeded(self, record: JobRecord) -> bool:
        """Whether every job ``record`` waits for has succeeded (or was skipped)."""
        return all(self.final_state(dep) in SUCCESS_STATES for dep in record.after)


def failure_text(dep: str, state: str) -> str:
    """Why a job ended ``dependency failed``."""
    return f"job {dep!r} it waits for is {state}"


def check_after(backend: Backend, name: str, after: Iterable[str]) -> None:
    """Refuse unknown jobs in ``after``, and a cycle back to ``name``.

    Raises:
        JobError: naming the unknown job, or the cycle.

    """
    for dep in after:
        if dep == name:
            raise JobError(f"job {name!r} cannot wait for itself")
        if not backend.has_record(dep) and backend.manager.get(dep) is None:
            raise JobError(
                f"job {name!r} waits for {dep!r}, but there is no job named {dep!r}"
            )
    path = _path_back(backend, name, list(after))
    if path:
        raise JobError(
            f"job {name!r} would wait for itself: {' -> '.join([name, *path])}"
        )


def _path_back(backend: Backend, name: str, start: list[str]) -> list[str]:
    """A chain of waits from ``start`` back to ``name``; empty if none."""
    parents: dict[str, str | None] = dict.fromkeys(start)
    todo = list(start)
    while todo:
        current = todo.pop()
        try:
            deps = backend.load(current).after
        except (UnknownJobError, InvalidJobRecordError):
            continue
        for dep in deps:
            if dep == name:
                chain = [current]
                while (parent := parents[chain[-1]]) is not None:
                    chain.append(parent)
                return [*reversed(chain), name]
            if dep not in parents:
                parents[dep] = current
                todo.append(dep)
    return []


def show_failed_dependencies(jobs: list[Job]) -> list[Job]:
    """``jobs`` with those waiting for a failed job shown ``dependency failed``.

    What the next promotion records; a listing shows it at once.
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
                shown[index] = replace(
                    job,
                    state=DEPENDENCY_FAILED,
                    error=failure_text(dep, states.get(dep, REMOVED)),
                )
                failed.add(job.name)
                states[job.name] = DEPENDENCY_FAILED
                changed = True
    return shown
