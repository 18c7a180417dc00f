"""Workers that run until their queue is empty."""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from dvc_task.worker.temporary import TemporaryWorker

__all__ = ["TemporaryWorker"]


def __getattr__(name: str) -> Any:
    # Celery is imported when a worker is wanted, not by reading a lock.
    if name == "TemporaryWorker":
        from dvc_task.worker.temporary import TemporaryWorker  # noqa: PLC0415

        return TemporaryWorker
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
