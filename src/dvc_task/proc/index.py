"""A cache of the process records of one manager folder, for fast listings.

Listing thousands of processes would otherwise read thousands of files. The
cache, ``<wdir>/..index/index.json`` (a name no process can have), keeps each
record with the ``(ctime, size, inode)`` of its ``<name>.json``; a listing
``stat``s each record file and only reads those whose key changed. The cache
is only ever a copy: a missing, stale or corrupt one costs time, never
correctness. Files changed within the last second are not cached, as their
ctime may not have moved yet.
"""

from __future__ import annotations

import json
import logging
import operator
import os
import time
from dataclasses import fields
from pathlib import Path
from typing import Any

from dvc_task.files import read_regular
from dvc_task.proc.info import ProcessInfo, write_json_atomic
from dvc_task.utils import makedirs

logger = logging.getLogger(__name__)

INDEX_DIR = "..index"
_VERSION = 2
#: The stored fields (``recorded_at`` is read from the file, not stored).
_NAMES = [field.name for field in fields(ProcessInfo) if field.init]
_FIELDS = len(_NAMES)
_STDOUT = _NAMES.index("stdout")
_values = operator.attrgetter(*_NAMES)
_RECENT_NS = 1_000_000_000

Key = tuple[int, int, int]


def file_key(st: os.stat_result) -> Key:
    """What changes whenever a record file is written or replaced."""
    return (st.st_ctime_ns, st.st_size, st.st_ino)


class RecordIndex:
    """Cached records of a manager folder, keyed by their files' stat."""

    def __init__(self, wdir: str) -> None:
        """Load the cache of ``wdir`` (an empty one if it cannot be read)."""
        self.path = Path(wdir, INDEX_DIR, "index.json")
        self._rows: dict[str, list[Any]] = {}
        self._fresh: dict[str, list[Any]] = {}
        self._dirty = False
        try:
            data = json.loads(read_regular(self.path))
            if data.get("version") == _VERSION and isinstance(data["rows"], dict):
                self._rows = {
                    name: row
                    for name, row in data["rows"].items()
                    if isinstance(row, list) and len(row) == 3 + _FIELDS
                }
        except FileNotFoundError:
            pass
        except (ValueError, KeyError, TypeError, AttributeError, OSError):
            logger.debug("ignoring unreadable process index %s", self.path)

    def get(self, name: str, key: Key, stdout: str) -> ProcessInfo | None:
        """The cached record of ``name`` if its file still has ``key``.

        ``stdout`` is the usual output path of ``name``, stored as ``0``.
        """
        row = self._rows.get(name)
        if row is None or row[0] != key[0] or row[1] != key[1] or row[2] != key[2]:
            return None
        values = row[3:]
        if values[_STDOUT] == 0:
            values[_STDOUT] = stdout
        self._fresh[name] = row
        info = ProcessInfo(*values)
        info.recorded_at = key[0] / 1e9
        return info

    def put(self, name: str, key: Key, info: ProcessInfo, stdout: str) -> None:
        """Remember ``info`` as the record of a file with ``key``."""
        if abs(time.time_ns() - key[0]) < _RECENT_NS:
            self._dirty = self._dirty or name in self._rows
            return
        row = [*key, *_values(info)]
        if info.stdout == stdout:
            row[3 + _STDOUT] = 0  # most records name the usual path: keep it short
        self._fresh[name] = row
        self._dirty = True

    def save(self) -> None:
        """Write the cache if it changed; names not seen since loading are dropped."""
        if not self._dirty and self._fresh.keys() == self._rows.keys():
            return
        try:
            makedirs(self.path.parent, exist_ok=True, mode=0o700)
            write_json_atomic(self.path, {"version": _VERSION, "rows": self._fresh})
        except OSError:
            logger.debug("could not write process index %s", self.path, exc_info=True)
