"""Celery applications that need no broker server."""

from __future__ import annotations

from dvc_task.app.filesystem import FSApp

__all__ = ["FSApp"]
