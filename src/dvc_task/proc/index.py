"""A cache of the process records of one manager folder, for fast listings.

Listing thousands of processes would otherwise read thousands of files. The
cache, ``<wdir>/..index/index.json`` (a name no process can have), is a
:class:`~dvc_task.statindex.StatIndex` of the process records.
"""

from __future__ import annotations

import operator
from dataclasses import fields
from pathlib import Path

from dvc_task.proc.info import ProcessInfo
from dvc_task.statindex import Key, StatIndex

INDEX_DIR = "..index"
_VERSION = "3"
#: The stored fields (``recorded_at`` is read from the file, not stored).
_NAMES = [field.name for field in fields(ProcessInfo) if field.init]
_STDOUT = _NAMES.index("stdout")
_values = operator.attrgetter(*_NAMES)


class RecordIndex:
    """Cached records of a manager folder, keyed by their files' stat."""

    def __init__(self, wdir: str) -> None:
        """Load the cache of ``wdir`` (an empty one if it cannot be read)."""
        self._index = StatIndex(
            Path(wdir, INDEX_DIR, "index.json"), _VERSION, len(_NAMES)
        )

    def get(self, name: str, key: Key, stdout: str) -> ProcessInfo | None:
        """The cached record of ``name`` if its file still has ``key``.

        ``stdout`` is the usual output path of ``name``, stored as ``0``.
        """
        values = self._index.get(name, key)
        if values is None:
            return None
        if values[_STDOUT] == 0:
            values[_STDOUT] = stdout
        info = ProcessInfo(*values)
        info.recorded_at = key[0] / 1e9
        return info

    def put(self, name: str, key: Key, info: ProcessInfo, stdout: str) -> None:
        """Remember ``info`` as the record of a file with ``key``."""
        values = list(_values(info))
        if info.stdout == stdout:
            values[_STDOUT] = 0  # most records name the usual path: keep it short
        self._index.put(name, key, values)

    def save(self) -> None:
        """Write the cache if it changed; names not seen since loading are dropped."""
        self._index.save()
