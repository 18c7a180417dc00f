"""Workers that run until their queue is empty."""

from __future__ import annotations

from dvc_task.worker.temporary import TemporaryWorker

__all__ = ["TemporaryWorker"]
