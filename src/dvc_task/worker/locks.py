"""A worker's name lock: held while it runs, so that one name runs once.

One file per Celery node name, ``worker-<node>.lock``, in the queue's
broker folder (or the folder an app names); it holds the pid of its last
holder. Beside it, ``worker-<node>.json`` says what a worker of a job
queue offers (GPUs, resources, jobs at once) while it runs. Listings read
these without importing Celery.
"""

from __future__ import annotations

import json
import os
from datetime import datetime, timezone
from pathlib import Path
from typing import Any

from dvc_task.files import lock_is_held, read_regular, unlink_quietly, write_atomic

_PREFIX = "worker-"
_SUFFIX = ".lock"
_INFO_SUFFIX = ".json"


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


def _info_path(folder: Path, nodename: str) -> Path:
    return folder / f"{_PREFIX}{nodename}{_INFO_SUFFIX}"


def write_info(folder: Path, nodename: str, info: dict[str, Any]) -> None:
    """Publish what worker ``nodename`` offers (JSON data) while it runs."""
    write_atomic(_info_path(folder, nodename), json.dumps(info).encode(), fsync=False)


def remove_info(folder: Path, nodename: str) -> None:
    """Withdraw what worker ``nodename`` published (it stops)."""
    unlink_quietly(_info_path(folder, nodename))


def read_info(folder: Path, nodename: str) -> dict[str, Any] | None:
    """What worker ``nodename`` published; None if nothing (or unreadable)."""
    try:
        info = json.loads(read_regular(_info_path(folder, nodename)))
    except (OSError, ValueError):
        return None
    return info if isinstance(info, dict) else None
