"""Opening a job queue: in a folder, or on a Redis server."""

from __future__ import annotations

from dvc_task.exceptions import DvcTaskError
from dvc_task.jobs.queue import JobQueue
from dvc_task.utils import StrPath


def open_queue(folder: StrPath, broker: str | None = None) -> JobQueue:
    """The jobs of ``folder``; on the Redis server at ``broker`` if given.

    With ``broker``, ``folder`` holds only this host's processes and logs.

    Raises:
        ValueError: ``broker`` is not a Redis URL.
        DvcTaskError: the ``redis`` extra is not installed.
    """
    if not broker:
        return JobQueue(folder)
    from dvc_task.app.redisapp import check_redis_url  # noqa: PLC0415

    check_redis_url(broker)
    try:
        from dvc_task.jobs.redisqueue import RedisJobQueue  # noqa: PLC0415
    except ImportError as exc:
        raise DvcTaskError(
            f"a Redis broker needs the Redis client ({exc}): "
            "pip install 'dvc-task[redis]'"
        ) from None
    return RedisJobQueue(folder, broker)
