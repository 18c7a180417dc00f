"""The live workers of a queue's folder: who they are and what they run.

Read-only, and apart from :mod:`~dvc_task.jobs.workers` (which starts,
stops and runs workers) so that ``status`` does not load what a worker needs.
"""

from __future__ import annotations

from collections.abc import Iterable
from typing import TYPE_CHECKING

from dvc_task import lazy
from dvc_task.jobs.record import PAUSED, RUNNING, STARTING
from dvc_task.jobs.slots import Offer
from dvc_task.jobs.view import Job, WorkerInfo, parse_time
from dvc_task.proc.manager import ProcessManager
from dvc_task.worker.locks import held_locks, last_holder, read_info

if TYPE_CHECKING:
    from dvc_task.jobs import reading
    from dvc_task.jobs.backend import Backend
else:
    # Only to list the jobs when none are given: whether a worker serves the
    # queue (all that `run` asks) does not load the listings.
    reading = lazy.module("dvc_task.jobs.reading")


def node_name(name: str) -> str:
    """The Celery node name of a worker started as ``name`` (as Celery makes it)."""
    return name if "@" in name else f"celery@{name}"


def short_name(node: str) -> str:
    """The name a worker was started with, from its Celery node name."""
    return node[len("celery@") :] if node.startswith("celery@") else node


def detached_workers(queue: Backend) -> dict[str, tuple[int | None, str, int | None]]:
    """``node -> (pid, since, concurrency)`` of the live detached workers."""
    found: dict[str, tuple[int | None, str, int | None]] = {}
    manager = ProcessManager(queue.workers_dir)
    for name, info in manager.processes():
        if info.returncode is None:
            args = info.args or []
            concurrency = None
            if "--concurrency" in args[:-1]:
                value = args[args.index("--concurrency") + 1]
                concurrency = int(value) if value.isdigit() else None
            found[node_name(name)] = (info.pid, info.started_at or "", concurrency)
    return found


def alive_workers(
    queue: Backend,
    detached: dict[str, tuple[int | None, str, int | None]] | None = None,
) -> dict[str, tuple[int | None, str]]:
    """``node -> (pid, since)`` of every live worker, detached or not.

    ``detached``: :func:`detached_workers`, if it was read already.
    """
    found = detached_workers(queue) if detached is None else detached
    return {
        **{node: (pid, since) for node, (pid, since, _) in found.items()},
        **held_locks(queue.locks_dir),
    }


def live_workers(queue: Backend, jobs: Iterable[Job] | None = None) -> list[WorkerInfo]:
    """The workers alive now, with the jobs each runs (from ``jobs`` if given)."""
    detached = detached_workers(queue)
    alive = alive_workers(queue, detached)
    if not alive:
        return []
    running: dict[str, list[str]] = {}
    last_end: dict[str, str] = {}
    for job in reading.jobs(queue) if jobs is None else jobs:
        if job.worker is None:
            continue
        if job.state in (STARTING, RUNNING, PAUSED):
            running.setdefault(job.worker, []).append(job.name)
        elif job.finished_at and job.finished_at > last_end.get(job.worker, ""):
            last_end[job.worker] = job.finished_at
    workers = []
    for node, (pid, since) in sorted(alive.items()):
        busy = tuple(running.get(node, ()))
        idle = None
        if not busy:
            ends = [t for t in (since, last_end.get(node)) if t]
            idle = max(ends, key=parse_time) if ends else None
        concurrency = detached[node][2] if node in detached else None
        info = read_info(queue.locks_dir, node)
        workers.append(
            WorkerInfo(
                short_name(node),
                node,
                pid,
                since or None,
                busy,
                idle,
                concurrency,
                offer=None if info is None else Offer.from_dict(info),
            )
        )
    return workers


def serving(queue: Backend) -> bool:
    """Whether a worker will look at the queue again before it exits.

    One that holds its lock will, and so will a detached one that has not
    taken it yet. One that let go of it may already have made its last look
    (it looks once more after letting go): it does not count.
    """
    if held_locks(queue.locks_dir):
        return True
    # A detached worker whose lock has another pid (or none) is starting.
    return any(
        pid is None or last_holder(queue.locks_dir, node) != pid
        for node, (pid, _, _) in detached_workers(queue).items()
    )
