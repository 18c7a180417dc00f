"""Celery applications that need no broker server."""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from dvc_task.app.filesystem import FSApp

__all__ = ["FSApp"]


def __getattr__(name: str) -> Any:
    # FSApp imports Celery (a tenth of a second): only when it is asked for,
    # so that the folder helpers of this package stay quick to import.
    if name == "FSApp":
        from dvc_task.app.filesystem import FSApp  # noqa: PLC0415

        return FSApp
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
