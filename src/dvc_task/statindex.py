"""A cache of records read from many small files, for fast listings.

Listing thousands of records would otherwise open, read, parse and check
thousands of files. A :class:`StatIndex` keeps each record's values with
the ``(ctime, size, inode)`` of the file they were read from, in one JSON
file beside them; a listing ``stat``s each file and reads only those whose
key changed. The index is only ever a copy: a missing, stale or corrupt one
costs time, never correctness. (Records that are not files are keyed by a
digest of their bytes instead.) Files changed within the last second are not
cached, as their ctime may not have moved yet.

One column may be *shared*: its values (a job's environment, the same for a
whole sweep) are stored once each, and rows refer to them by number.
"""

from __future__ import annotations

import contextlib
import copy
import json
import logging
import os
import time
from pathlib import Path
from typing import Any

from dvc_task.files import read_regular, write_atomic

logger = logging.getLogger(__name__)

#: What changes whenever a file is written or replaced.
Key = tuple[int, int, int]
#: A file changed this recently may change again within its ctime's tick.
_RECENT_NS = 1_000_000_000


def file_key(st: os.stat_result) -> Key:
    """The key of the file that ``st`` describes."""
    return (st.st_ctime_ns, st.st_size, st.st_ino)


def bytes_key(data: bytes) -> Key:
    """The key of a record that is not a file: its length and BLAKE2 digest.

    For an index made with ``keys_are_ctimes=False``.
    """
    import hashlib  # noqa: PLC0415 - OpenSSL's start: only where records are not files

    digest = hashlib.blake2b(data, digest_size=16).digest()
    return (
        len(data),
        int.from_bytes(digest[:8], "big"),
        int.from_bytes(digest[8:], "big"),
    )


class StatIndex:
    """Rows of ``width`` values, by name, kept while their file's key stays."""

    def __init__(
        self,
        path: Path,
        version: str,
        width: int,
        shared: int | None = None,
        *,
        keys_are_ctimes: bool = True,
    ) -> None:
        """Load the index at ``path`` (an empty one if it cannot be used).

        ``version`` names the layout of a row: an index of another one is
        ignored. ``shared`` is the column whose values are stored once each.
        ``keys_are_ctimes``: each key is what :func:`file_key` gives (a row
        whose file changed in the last second is not kept); else keys tell
        what the values were read from in another way (a digest of it).
        """
        self.path = path
        self._settle = keys_are_ctimes
        self._version = version
        self._width = width
        self._shared = shared
        self._rows: dict[str, list[Any]] = {}
        self._fresh: dict[str, tuple[Key, list[Any]]] = {}
        self._dirty = False
        try:
            data = json.loads(read_regular(path))
            if data.get("version") == version:
                self._rows = self._valid_rows(data["rows"], data.get("shared", []))
        except FileNotFoundError:
            pass
        except (ValueError, KeyError, TypeError, AttributeError, OSError):
            logger.debug("ignoring the unreadable index %s", path)

    def _valid_rows(self, rows: Any, shared: Any) -> dict[str, list[Any]]:
        """``rows`` that have the right shape, their shared value put back."""
        if not isinstance(rows, dict) or not isinstance(shared, list):
            return {}
        found = {}
        column = self._shared
        for name, row in rows.items():
            if not isinstance(row, list) or len(row) != 3 + self._width:
                continue
            if column is not None:
                number = row[3 + column]
                if type(number) is not int or not 0 <= number < len(shared):
                    continue
                row[3 + column] = shared[number]
            found[name] = row
        return found

    def get(self, name: str, key: Key) -> list[Any] | None:
        """The values of ``name`` if its file still has ``key``, else None.

        A new list, its shared value a copy: changing them changes no row.
        """
        row = self._rows.get(name)
        if row is None or row[0] != key[0] or row[1] != key[1] or row[2] != key[2]:
            return None
        kept = row[3:]
        self._fresh[name] = (key, kept)
        values = list(kept)
        if self._shared is not None:
            values[self._shared] = copy.copy(values[self._shared])
        return values

    def put(self, name: str, key: Key, values: list[Any]) -> None:
        """Remember ``values``, read from a file with ``key``."""
        if self._settle and abs(time.time_ns() - key[0]) < _RECENT_NS:
            self._dirty = self._dirty or name in self._rows
            return
        self._fresh[name] = (key, values)
        self._dirty = True

    def save(self) -> None:
        """Write the index if it changed; names not seen since loading are dropped."""
        if not self._dirty and self._fresh.keys() == self._rows.keys():
            return
        numbers: dict[str, int] = {}  # a shared value's JSON -> its number
        table: list[Any] = []
        rows = {}
        for name, (key, values) in self._fresh.items():
            row = [*key, *values]
            if self._shared is not None:
                value = values[self._shared]
                number = numbers.setdefault(
                    json.dumps(value, sort_keys=True), len(table)
                )
                if number == len(table):
                    table.append(value)
                row[3 + self._shared] = number
            rows[name] = row
        data = {"version": self._version, "rows": rows, "shared": table}
        try:
            # Only its own folder is made: a listing never creates a queue.
            with contextlib.suppress(FileExistsError):
                os.mkdir(self.path.parent, 0o700)
            write_atomic(
                self.path, json.dumps(data, separators=(",", ":")).encode(), fsync=False
            )
        except OSError:
            logger.debug("could not write the index %s", self.path, exc_info=True)
