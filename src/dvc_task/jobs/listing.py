"""Reading the folders of a job queue: entries that are not hidden."""

from __future__ import annotations

import os
from pathlib import Path

#: State shown for a job whose record cannot be read.
UNREADABLE = "unreadable"


def entries(folder: Path) -> list[os.DirEntry[str]]:
    """The entries of ``folder`` but hidden ones (locks, caches); none if missing."""
    try:
        return [e for e in os.scandir(folder) if not e.name.startswith(".")]
    except FileNotFoundError:
        return []


def records(folder: Path) -> dict[str, str]:
    """``name -> path`` of the job records (``<name>.json``) in ``folder``."""
    return {
        e.name[: -len(".json")]: e.path
        for e in entries(folder)
        if e.name.endswith(".json")
    }


def folders(folder: Path) -> list[str]:
    """Names of the sub-folders of ``folder`` (links not followed)."""
    return [e.name for e in entries(folder) if e.is_dir(follow_symlinks=False)]
