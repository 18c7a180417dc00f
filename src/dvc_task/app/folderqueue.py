"""The on-disk queue protocol, whole: publish, claim, settle, recover, list.

:class:`FolderQueue` is everything that moves a message file; the Kombu
transport (:mod:`.transport`) and :class:`~dvc_task.app.FSApp`'s listing and
deleting are thin layers over it. Folder names and message file names are
in :mod:`.broker`, how a file's content is checked in :mod:`.reader`.

A message only ever moves by ``rename`` inside one file system, so it is in
exactly one folder at any time and never seen half-written:

- **put**: written to ``tmp/`` and renamed into ``in/``;
- **claim**: renamed from ``in/`` into the consumer's own ``reserved/<owner>/``
  folder, whose ``.lock`` the consumer holds under an OS lock while it
  lives; of several consumers renaming the same file, exactly one succeeds;
- **ack**: renamed on to ``processed/`` (or deleted, for a queue that keeps
  nothing); **reject** without requeue: marked ``rejected`` in its
  ``delivery_info`` and renamed to ``processed/``; **requeue**: marked
  ``redelivered`` and renamed back to ``in/`` under its own name;
- **recover**: once an owner's lock can be taken, the owner is dead and its
  claims go back to ``in/``, marked ``redelivered``;
- **delete** (a queued message removed without a worker): renamed to a trash
  name first, so that the rename itself decides between it and a claim.

Files that are not valid messages are moved to ``quarantine/`` with a log
line saying why. dvc-task 0.40 and Kombu's stock transport write ``in/`` in
place; their files are read unchanged (a young empty one is left alone while
its writer finishes it).
"""

from __future__ import annotations

import itertools
import json
import logging
import os
import stat
import time
import uuid
from collections import deque
from collections.abc import Iterator, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from dvc_task.app.broker import (
    MSG_SUFFIX,
    BrokerFolders,
    list_messages,
    message_name,
    queue_of_message,
    sort_key,
)
from dvc_task.app.reader import (
    DEFAULT_ACCEPT,
    EMPTY_GRACE_S,
    BadMessageError,
    parse_message,
    read_message,
)
from dvc_task.files import (
    FileLock,
    lock_is_held,
    read_regular,
    unlink_quietly,
    write_atomic,
    write_private_file,
)
from dvc_task.folders import FOLDER_MODE, ensure_folder
from dvc_task.utils import remove

logger = logging.getLogger(__name__)

LOCK_NAME = ".lock"
#: Temporary files older than this were left by a producer that died.
STALE_TMP_S = 600.0

_owner_ids = itertools.count()


@dataclass(frozen=True)
class Claim:
    """A message this consumer took: where its file is now, and its content."""

    path: Path
    payload: dict[str, Any]

    @property
    def tag(self) -> str:
        """The message's delivery tag."""
        return str(self.payload["properties"]["delivery_tag"])


class Reservation:
    """A consumer's own folder of claimed messages, live while it holds its lock."""

    def __init__(self, folders: BrokerFolders) -> None:
        """Create and lock a new owner folder in ``reserved/``."""
        owner = (
            f"{os.uname().nodename}-{os.getpid()}-{next(_owner_ids)}-"
            f"{uuid.uuid4().hex[:8]}"
        )
        ensure_folder(folders.tmp)
        ensure_folder(folders.reserved)
        staging = folders.tmp / owner
        os.mkdir(staging, FOLDER_MODE)
        self._lock = FileLock(staging / LOCK_NAME)
        if not self._lock.acquire():  # pragma: no cover - nobody knows it yet
            raise RuntimeError(f"cannot lock new reservation folder {staging}")
        self.path = folders.reserved / owner
        # Appear in reserved/ already locked, so no one takes us for dead.
        os.rename(staging, self.path)

    @property
    def alive(self) -> bool:
        """Whether this reservation still holds its lock in this process."""
        return self._lock.held

    def release(self) -> None:
        """Give up the lock; messages still here go back to the queue later."""
        if self._lock.held:
            try:
                leftovers = [n for n in os.listdir(self.path) if n != LOCK_NAME]
                if not leftovers:
                    unlink_quietly(self.path / LOCK_NAME)
                    os.rmdir(self.path)
            except OSError:
                logger.debug("could not tidy %s", self.path, exc_info=True)
        self._lock.release()


def owner_alive(owner: Path) -> bool:
    """Whether the consumer owning ``reserved/<owner>`` still holds its lock."""
    held = lock_is_held(owner / LOCK_NAME)
    return owner.exists() if held is None else held


class FolderQueue:
    """One on-disk queue: see the module docstring for the protocol."""

    def __init__(
        self,
        folders: BrokerFolders,
        accept: frozenset[str] = DEFAULT_ACCEPT,
        fsync: bool = True,
    ) -> None:
        """A queue in ``folders``, delivering the content types in ``accept``.

        With ``fsync``, a published message is on disk before it is queued.
        """
        self.folders = folders
        self.accept = accept
        self.fsync = fsync
        self._reservation: Reservation | None = None

    # --- publishing --------------------------------------------------------

    def put(self, queue: str, payload: Mapping[str, Any]) -> Path:
        """Publish ``payload`` on ``queue`` atomically; return the message's path.

        Raises:
            ValueError: a bad queue name.
            OSError: the message cannot be written (e.g. the disk is full);
                nothing is left behind then.

        """
        try:
            text = json.dumps(payload)
        except TypeError:
            # Kombu's encoder knows dates, UUIDs...: imported only when
            # needed, so that a producer of plain JSON need not load Kombu.
            from kombu.utils.json import dumps  # noqa: PLC0415

            text = dumps(payload)  # type: ignore[no-untyped-call]
        data = text.encode("utf-8")
        name = message_name(queue, _priority(payload))
        ensure_folder(self.folders.tmp)
        tmp = self.folders.tmp / f"{name}.tmp"
        write_private_file(tmp, data, fsync=self.fsync)
        target = self.folders.inbox / name
        try:
            os.replace(tmp, target)
        except BaseException:
            unlink_quietly(tmp)
            raise
        return target

    # --- waiting messages --------------------------------------------------

    def waiting(self) -> dict[str, deque[str]]:
        """Names in ``in/`` by queue, each in delivery order."""
        by_queue: dict[str, deque[str]] = {}
        for name in list_messages(self.folders.inbox):
            queue = queue_of_message(name)
            if queue is not None:
                by_queue.setdefault(queue, deque()).append(name)
        return by_queue

    def size(self, queue: str) -> int:
        """How many messages wait in ``queue``."""
        return sum(
            1
            for name in list_messages(self.folders.inbox)
            if queue_of_message(name) == queue
        )

    def purge(self, queue: str) -> int:
        """Delete the waiting messages of ``queue``; how many were deleted."""
        return sum(
            self.delete(self.folders.inbox / name)
            for name in list_messages(self.folders.inbox)
            if queue_of_message(name) == queue
        )

    def delete(self, path: Path) -> bool:
        """Delete message ``path`` unless a consumer took it first; whether we did.

        The rename is the check: of a consumer's claim and this rename,
        exactly one succeeds, so a message reported deleted never runs.
        """
        trash = path.with_name(f".{path.name}.deleted")
        try:
            os.rename(path, trash)
        except FileNotFoundError:
            return False
        remove(trash)
        return True

    # --- consuming ---------------------------------------------------------

    def claim(self, name: str) -> Claim | None:
        """Take ``in/<name>`` for this consumer; None if it is not to be had.

        None when another consumer took it, when it is a young empty file
        (a 0.40 producer still writing it: left where it is), or when it is
        not a valid message (then it is quarantined).
        """
        if self._being_written(name):
            return None
        target = self._own_reservation().path / name
        try:
            os.rename(self.folders.inbox / name, target)
        except FileNotFoundError:
            return None
        payload = self.load(target, origin=self.folders.inbox / name)
        if payload is None:
            if target.exists():
                # Still locked by a 0.40 producer writing it: back it goes.
                self._move(target, self.folders.inbox)
            return None
        return Claim(target, payload)

    def _being_written(self, name: str) -> bool:
        # A young empty file is a 0.40 producer's, mid-write. Claiming it and
        # putting it back would change the folder and wake every idle worker,
        # hundreds of times a second: it is looked at again later.
        try:
            info = os.lstat(self.folders.inbox / name)
        except FileNotFoundError:
            return False
        return (
            stat.S_ISREG(info.st_mode)
            and info.st_size == 0
            and time.time() - info.st_mtime < EMPTY_GRACE_S
        )

    def _own_reservation(self) -> Reservation:
        if self._reservation is None or not self._reservation.alive:
            self._reservation = Reservation(self.folders)
        return self._reservation

    def ack(self, path: Path, keep: bool = True) -> None:
        """Finish with a claimed message: to ``processed/`` (``keep``) or deleted."""
        if keep:
            ensure_folder(self.folders.processed)
            self._move(path, self.folders.processed)
        else:
            unlink_quietly(path)

    def reject(self, path: Path, requeue: bool) -> None:
        """Requeue a claimed message (marked redelivered) or finish it as rejected.

        A rejected message goes to ``processed/`` with ``rejected: true`` in
        its ``delivery_info``, so that it is told apart from an acked one.
        """
        if requeue:
            _mark(path, "redelivered")
            self._move(path, self.folders.inbox)
        else:
            _mark(path, "rejected")
            self.ack(path)

    def release(self) -> None:
        """Stop consuming: drop the claim lock (claims left return to the queue)."""
        if self._reservation is not None:
            self._reservation.release()
            self._reservation = None

    def recover(self) -> int:
        """Return the claims of dead consumers to the queue; how many.

        Also removes temporary files left by producers that died mid-write.
        """
        restored = 0
        for owner in self._owners():
            lock = FileLock(owner / LOCK_NAME)
            try:
                if not lock.acquire():
                    continue
            except OSError:
                continue  # a folder or link where the lock should be: not ours
            try:
                for name in list_messages(owner):
                    _mark(owner / name, "redelivered")
                    self._move(owner / name, self.folders.inbox)
                    restored += 1
                unlink_quietly(owner / LOCK_NAME)
                os.rmdir(owner)
            except OSError:
                logger.debug("could not recover all of %s", owner, exc_info=True)
            finally:
                lock.release()
        if restored:
            logger.warning(
                "Returned %d message(s) claimed by dead workers to '%s'",
                restored,
                self.folders.inbox,
            )
        self._remove_stale_tmp()
        return restored

    def _move(self, path: Path, folder: Path) -> None:
        try:
            os.rename(path, folder / path.name)
        except FileNotFoundError:
            logger.debug("message %s was gone already", path)

    def _remove_stale_tmp(self) -> None:
        # Only files we write there (``<message>.msg.tmp``), never anything
        # else, and never through a link: a bare ``Connection`` may point the
        # folder at one of the user's own.
        try:
            entries = list(os.scandir(self.folders.tmp))
        except FileNotFoundError:
            return
        deadline = time.time() - STALE_TMP_S
        for entry in entries:
            if not entry.name.endswith(f"{MSG_SUFFIX}.tmp"):
                continue
            try:
                info = entry.stat(follow_symlinks=False)
                if stat.S_ISREG(info.st_mode) and info.st_mtime < deadline:
                    os.unlink(entry.path)
                    logger.info("Removed '%s', left by a process that died", entry.path)
            except FileNotFoundError:
                continue

    # --- reading and listing -------------------------------------------------

    def load(self, path: Path, origin: Path | None = None) -> dict[str, Any] | None:
        """Read and check one message file; quarantine it if it is bad.

        None, without raising, when the file is gone, still being written by
        a 0.40 producer, or was quarantined. ``origin`` is where the file was
        found, if it was claimed from there (for the log line).
        """
        try:
            data = read_message(path)
        except (FileNotFoundError, BlockingIOError):
            return None
        except OSError as exc:
            self.quarantine(path, f"unreadable ({exc})", origin)
            return None
        try:
            return parse_message(data, self.accept)
        except BadMessageError as exc:
            if not data and _age(path) < EMPTY_GRACE_S:
                return None
            self.quarantine(path, str(exc), origin)
            return None

    def quarantine(
        self, path: Path, reason: str, origin: Path | None = None
    ) -> Path | None:
        """Move a bad message file aside and log why; None if it was gone."""
        ensure_folder(self.folders.quarantine)
        target = self.folders.quarantine / path.name
        if target.exists():
            target = self.folders.quarantine / f"{path.name}.{uuid.uuid4().hex[:8]}"
        try:
            os.rename(path, target)
        except FileNotFoundError:
            return None
        logger.warning(
            "Quarantined message file '%s' as '%s': %s", origin or path, target, reason
        )
        return target

    def _owners(self) -> Iterator[Path]:
        try:
            entries = list(os.scandir(self.folders.reserved))
        except FileNotFoundError:
            return
        for entry in entries:
            if entry.is_dir(follow_symlinks=False):
                yield Path(entry.path)

    def claims(self) -> Iterator[tuple[Path, bool]]:
        """``(owner folder, owner alive)`` of every consumer's claim folder."""
        for owner in self._owners():
            yield owner, owner_alive(owner)

    def paths(self, queued: bool, claimed_since: float | None = None) -> list[Path]:
        """Message files waiting (``queued``) or taken, in delivery order.

        Waiting: in ``in/``, or claimed by a dead consumer (they will return
        to the queue). Taken: in ``processed/``, or claimed by a live one.
        Claims are listed first, so that one that moves on while the listing
        runs (settled, or returned) is still found in the other folder; one
        may be gone by the time it is read (see :meth:`moved`). With
        ``claimed_since`` (a ``time.time()``), a waiting listing also has the
        live claims made since then.
        """
        base = self._destination(queued)
        claimed: dict[str, Path] = {}
        for owner, alive in self.claims():
            for name in list_messages(owner):
                if alive != queued or (
                    queued
                    and claimed_since is not None
                    and _claimed_after(owner / name, claimed_since)
                ):
                    claimed[name] = owner / name
        found = {name: base / name for name in list_messages(base)}
        for name, path in claimed.items():
            found.setdefault(name, path)
        return sorted(found.values(), key=lambda path: sort_key(path.name))

    def moved(self, path: Path, queued: bool) -> Path | None:
        """Where a claim listed by :meth:`paths` went if it moved on, else None."""
        base = self._destination(queued)
        return None if path.parent == base else base / path.name

    def is_waiting(self, path: Path) -> bool:
        """Whether ``path`` waits: in ``in/``, or claimed by a dead consumer."""
        return path.parent == self.folders.inbox or not owner_alive(path.parent)

    def _destination(self, queued: bool) -> Path:
        return self.folders.inbox if queued else self.folders.processed


def _claimed_after(path: Path, since: float) -> bool:
    # A rename sets the file's ctime: the moment it was claimed.
    try:
        return os.stat(path).st_ctime >= since
    except FileNotFoundError:
        return False


def _age(path: Path) -> float:
    try:
        return time.time() - os.stat(path).st_mtime
    except FileNotFoundError:
        return 0.0


def _mark(path: Path, flag: str) -> None:
    """Set ``flag`` true in a claimed message's ``delivery_info``.

    Replaced atomically, in the claim's own folder: a crash leaves the old
    or the new file, claimed, never both (the temporary file is a dot file,
    which no listing takes for a message). A file that is not a message of
    ours is moved on unchanged.
    """
    try:
        payload = json.loads(read_regular(path))
        info = payload["properties"]["delivery_info"]
    except (OSError, ValueError, KeyError, TypeError):
        return
    if not isinstance(info, dict) or info.get(flag) is True:
        return
    info[flag] = True
    if flag == "redelivered":
        payload["redelivered"] = True  # where Kombu's virtual transport reads it
    try:
        write_atomic(path, json.dumps(payload).encode("utf-8"))
    except OSError:
        logger.debug("could not mark %s %s", path, flag, exc_info=True)


def _priority(payload: Mapping[str, Any]) -> int:
    """The message's priority (Kombu's ``priority`` property), 0 if none."""
    properties = payload.get("properties")
    priority = properties.get("priority") if isinstance(properties, dict) else None
    return priority if type(priority) is int else 0
