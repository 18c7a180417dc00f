"""The Celery task that runs a managed process."""

from __future__ import annotations

from typing import Any

from celery import Task, shared_task

from dvc_task.proc.process import ManagedProcess


@shared_task(bind=True, name="dvc_task.proc.tasks.run")
def run(self: Task, *args: Any, **kwargs: Any) -> dict[str, Any]:
    """Run a command as a managed process; return its ``ProcessInfo.asdict()``.

    Takes the arguments of :class:`ManagedProcess`.
    """
    with ManagedProcess(*args, **kwargs) as proc:
        pass
    return proc.info.asdict()
