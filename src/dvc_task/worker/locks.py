"""A worker's name lock: held while it runs, so that one name runs once.

One file per Celery node name, ``worker-<node>.lock``, in the queue's
broker folder (or the folder an app names); it holds the pid of its last
holder. Listings read these without importing Celery.
"""

from __future__ import annotations

import os
from datetime import datetime, timezone
from pathlib import Path

from dvc_task.files import lock_is_held, read_regular

_PREFIX = "worker-"
_SUFFIX = ".lock"


def lock_path(folder: Path, nodename: str) -> Path:
    """The name lock of worker ``nodename`` in ``folder``."""
    return folder / f"{_PREFIX}{nodename}{_SUFFIX}"


def held_locks(folder: Path) -> dict[str, tuple[int | None, str]]:
    """``node -> (pid, since)`` of every worker that holds its lock now."""
    try:
        entries = list(os.scandir(folder))
    except FileNotFoundError:
        return {}
    found: dict[str, tuple[int | None, str]] = {}
    for entry in entries:
        if not (entry.name.startswith(_PREFIX) and entry.name.endswith(_SUFFIX)):
            continue
        if not lock_is_held(entry.path):
            continue  # nobody holds it: that worker is gone
        try:
            text = read_regular(entry.path).decode("ascii", "replace").strip()
            mtime = entry.stat(follow_symlinks=False).st_mtime
        except OSError:
            continue
        since = datetime.fromtimestamp(mtime, timezone.utc)
        node = entry.name[len(_PREFIX) : -len(_SUFFIX)]
        found[node] = (int(text) if text.isdigit() else None, since.isoformat())
    return found


def last_holder(folder: Path, nodename: str) -> int | None:
    """The pid written in worker ``nodename``'s lock (None: no lock file yet)."""
    try:
        text = read_regular(lock_path(folder, nodename)).strip()
    except OSError:
        return None
    return int(text) if text.isdigit() else -1
