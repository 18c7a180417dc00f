"""Celery applications: on a folder (no broker server), or on a Redis server."""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from dvc_task.app.filesystem import FSApp
    from dvc_task.app.redisapp import RedisApp

__all__ = ["FSApp", "RedisApp"]


def __getattr__(name: str) -> Any:
    # Both import Celery (a tenth of a second): only when asked for, so that
    # the folder helpers of this package stay quick to import.
    if name == "FSApp":
        from dvc_task.app.filesystem import FSApp  # noqa: PLC0415

        return FSApp
    if name == "RedisApp":
        from dvc_task.app.redisapp import RedisApp  # noqa: PLC0415

        return RedisApp
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
