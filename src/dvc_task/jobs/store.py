"""Where job records live: a folder (the default) or a Redis server.

A :class:`JobStore` keeps what every host running the jobs must see the
same way: the records, the lock that every change of one is made under, the
job counter, the kill requests and the markers of jobs that wait out of the
queue. :class:`FolderStore` keeps them in ``<folder>/jobs/``; the Redis one
is in :mod:`dvc_task.jobs.redisstore`.
"""

from __future__ import annotations

import logging
import operator
import os
from collections.abc import Iterable
from dataclasses import fields
from pathlib import Path
from typing import TYPE_CHECKING, Protocol, Union

from dvc_task.files import (
    check_name,
    read_regular,
    unlink_quietly,
    write_atomic,
    write_private_file,
)
from dvc_task.folders import make_private_folder
from dvc_task.jobs.listing import records
from dvc_task.jobs.record import (
    InvalidJobRecordError,
    JobRecord,
    UnknownJobError,
    jobs_lock,
)
from dvc_task.statindex import Key, StatIndex, file_key
from dvc_task.watch import NEW_FILES, FolderWaiter

if TYPE_CHECKING:
    from contextlib import AbstractContextManager

logger = logging.getLogger(__name__)

#: Folder (inside ``jobs/``) of the markers of waiting jobs.
WAITING_DIR = "waiting"
#: Folder (inside ``jobs/``) of the index of records: no job can have its name.
INDEX_DIR = "..index"
#: A record's values in the index: in the order of its fields (the index's
#: version), the environment stored once for the jobs that share it.
_FIELDS = [field.name for field in fields(JobRecord)]
_ROWS = (",".join(_FIELDS), len(_FIELDS), _FIELDS.index("env"))
_record_values = operator.attrgetter(*_FIELDS)
#: Seconds between looks at a folder where inotify is missing.
POLL_S = 0.01
#: A record, or why it could not be read.
Entry = Union[JobRecord, InvalidJobRecordError]
#: Records read before, by name, with what told whether they changed since.
RecordCache = dict[str, tuple[object, Entry]]


def open_index(path: Path, keys_are_ctimes: bool = True) -> StatIndex:
    """The index of job records at ``path`` (see :class:`StatIndex`)."""
    return StatIndex(path, *_ROWS, keys_are_ctimes=keys_are_ctimes)


class KnownRecords:
    """Records read before: from the caller's cache, else from an index.

    A record is known while what it was read from has the same key.
    """

    def __init__(self, cache: RecordCache | None, index: StatIndex | None) -> None:
        """Look in ``cache`` (kept by the caller), then in ``index``."""
        self.cache = cache
        self.index = index

    def get(self, name: str, key: Key) -> Entry | None:
        """The entry of ``name`` if it was read with ``key``."""
        hit = self.cache.get(name) if self.cache is not None else None
        if hit is not None and hit[0] == key:
            return hit[1]
        values = self.index.get(name, key) if self.index is not None else None
        if values is None:
            return None
        record = JobRecord(*values)
        if self.cache is not None:
            self.cache[name] = (key, record)
        return record

    def add(self, name: str, key: Key, entry: Entry) -> None:
        """Remember ``entry``, just read with ``key``."""
        if self.cache is not None:
            self.cache[name] = (key, entry)
        if self.index is not None and isinstance(entry, JobRecord):
            self.index.put(name, key, list(_record_values(entry)))

    def close(self, found: dict[str, Entry], everything: bool) -> None:
        """Save the index; with ``everything`` read, forget what is gone."""
        if self.index is not None:
            self.index.save()
        if self.cache is not None and everything:
            for gone in set(self.cache) - set(found):
                del self.cache[gone]


class Waiter(Protocol):
    """Blocks until a job record may have changed, or time is up."""

    def wait(self, timeout: float) -> bool:
        """Wait at most ``timeout`` seconds; whether something changed."""

    def close(self) -> None:
        """Let go of what it watches."""


class JobStore(Protocol):
    """The records of a queue's jobs and what goes with them."""

    def load(self, name: str) -> JobRecord:
        """The record of job ``name`` (UnknownJobError, InvalidJobRecordError)."""

    def save(self, record: JobRecord) -> None:
        """Write ``record`` (holding :meth:`locked`)."""

    def has(self, name: str) -> bool:
        """Whether job ``name`` has a record (readable or not)."""

    def delete(self, name: str) -> None:
        """Delete job ``name``'s record, kill request and waiting marker."""

    def entries(
        self, names: Iterable[str] | None = None, cache: RecordCache | None = None
    ) -> dict[str, Entry]:
        """Every job's record (or why it cannot be read), by name.

        Only those of ``names`` if given. With ``cache``, a record known not
        to have changed since it was put there is not read again.
        """

    def locked(self) -> AbstractContextManager[object]:
        """The lock that every change of a record is made under."""

    def next_seq(self, count: int = 1) -> int:
        """The first of the next ``count`` job numbers (holding :meth:`locked`)."""

    def request_kill(self, name: str, sig: int) -> None:
        """Ask for signal ``sig`` to job ``name`` (its worker sends it)."""

    def kill_requested(self, name: str) -> int | None:
        """The signal asked for job ``name``, if any."""

    def clear_kill_request(self, name: str) -> None:
        """Forget the signal asked for job ``name``."""

    def mark_waiting(self, name: str) -> None:
        """Note that job ``name`` waits out of the queue."""

    def unmark_waiting(self, name: str) -> None:
        """Job ``name`` no longer waits out of the queue."""

    def waiting_names(self) -> list[str]:
        """The jobs noted as waiting out of the queue."""

    def changes(self) -> Waiter:
        """A waiter woken when a record is written."""


class FolderStore:
    """Records as ``<name>.json`` files in one private folder."""

    def __init__(self, folder: Path, parent: Path) -> None:
        """Keep records in ``folder`` (made, with ``parent``, when needed)."""
        self.folder = folder
        self.parent = parent
        #: Whether each write is on disk before it returns (see ``batch``).
        self.fsync = True

    def path(self, name: str) -> Path:
        """Path of job ``name``'s record (``ValueError`` for a bad name)."""
        return self.folder / f"{check_name(name, 'job')}.json"

    def kill_path(self, name: str) -> Path:
        """Where a kill request for job ``name`` is left."""
        return self.folder / f"{check_name(name, 'job')}.kill"

    def make(self) -> None:
        """Create the folder (private) if it is missing."""
        if not self.folder.is_dir():
            make_private_folder(self.parent)
            make_private_folder(self.folder)

    def load(self, name: str) -> JobRecord:
        """The record of job ``name``."""
        try:
            return JobRecord.load(self.path(name))
        except FileNotFoundError:
            raise UnknownJobError(name) from None

    def save(self, record: JobRecord) -> None:
        """Write ``record`` atomically."""
        record.dump(self.path(record.name), fsync=self.fsync)

    def has(self, name: str) -> bool:
        """Whether the record file exists."""
        return self.path(name).exists()

    def delete(self, name: str) -> None:
        """Delete the record, its kill request and its waiting marker."""
        for path in (
            self.kill_path(name),
            self.folder / WAITING_DIR / name,
            self.path(name),
        ):
            unlink_quietly(path)

    def entries(
        self, names: Iterable[str] | None = None, cache: RecordCache | None = None
    ) -> dict[str, Entry]:
        """Every record file (those of ``names``), read unless known already.

        A record is known while its file's ctime, size and inode stay: from
        ``cache`` (kept by the caller between calls) or, for a listing of
        every record, from the folder's index of records (see
        :class:`~dvc_task.statindex.StatIndex`).
        """
        if names is None:
            paths = records(self.folder)
            index = open_index(self.folder / INDEX_DIR / "records.json")
        else:
            paths = {name: str(self.path(name)) for name in names}
            index = None
        known = KnownRecords(cache, index)
        found: dict[str, Entry] = {}
        for name, path in paths.items():
            try:
                key = file_key(os.stat(path))
            except FileNotFoundError:
                continue  # removed meanwhile
            entry = known.get(name, key)
            if entry is None:
                try:
                    entry = JobRecord.load(Path(path))
                except FileNotFoundError:
                    continue
                except InvalidJobRecordError as exc:
                    entry = exc
                known.add(name, key, entry)
            found[name] = entry
        known.close(found, everything=names is None)
        return found

    def locked(self) -> AbstractContextManager[object]:
        """An OS lock on the folder's ``.lock`` file."""
        self.make()
        return jobs_lock(self.folder)

    def next_seq(self, count: int = 1) -> int:
        """The counter in ``.seq`` plus one; it is moved on by ``count``."""
        path = self.folder / ".seq"
        try:
            last = int(read_regular(path))
        except (OSError, ValueError):
            last = 0
        write_atomic(path, str(last + count).encode("ascii"), fsync=self.fsync)
        return last + 1

    def request_kill(self, name: str, sig: int) -> None:
        """Leave ``<name>.kill`` with the signal's number."""
        self.make()
        write_atomic(self.kill_path(name), str(int(sig)).encode("ascii"))

    def kill_requested(self, name: str) -> int | None:
        """The number in ``<name>.kill``."""
        try:
            return int(read_regular(self.kill_path(name)))
        except (OSError, ValueError):
            return None

    def clear_kill_request(self, name: str) -> None:
        """Remove ``<name>.kill``."""
        unlink_quietly(self.kill_path(name))

    def mark_waiting(self, name: str) -> None:
        """An empty file ``waiting/<name>``."""
        folder = self.folder / WAITING_DIR
        if not folder.is_dir():
            folder.mkdir(mode=0o700, exist_ok=True)
        try:
            write_private_file(folder / name, b"")
        except FileExistsError:
            pass

    def unmark_waiting(self, name: str) -> None:
        """Remove ``waiting/<name>``."""
        unlink_quietly(self.folder / WAITING_DIR / name)

    def waiting_names(self) -> list[str]:
        """The files in ``waiting/``."""
        try:
            return os.listdir(self.folder / WAITING_DIR)
        except (FileNotFoundError, NotADirectoryError):
            return []

    def changes(self) -> Waiter:
        """Woken by a new file in the folder (a record is written by rename)."""
        self.make()
        return FolderWaiter(self.folder, POLL_S, events=NEW_FILES)
