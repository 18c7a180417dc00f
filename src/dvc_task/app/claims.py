"""Claiming messages, settling them, and recovering those of dead consumers.

A consumer claims a message by renaming it into its own ``reserved/<owner>/``
folder, whose ``.lock`` it holds under an OS file lock while it lives; an
ack moves the message on to ``processed/``. Once the lock can be taken, the
owner is dead and anyone may move its messages back to ``in/``.
"""

from __future__ import annotations

import errno
import fcntl
import itertools
import json
import logging
import os
import socket
import stat
import time
import uuid
from collections.abc import Iterator
from pathlib import Path

from dvc_task.app.broker import (
    FILE_MODE,
    FOLDER_MODE,
    MSG_SUFFIX,
    BrokerFolders,
    ensure_folder,
    list_messages,
    sort_key,
    unlink_quietly,
    write_private_file,
)

logger = logging.getLogger(__name__)

LOCK_NAME = ".lock"
#: Temporary files older than this were left by a producer that died.
STALE_TMP_S = 600.0

_owner_ids = itertools.count()


def _try_lock(path: Path, flags: int) -> int | None:
    """Open ``path`` and take a non-blocking lock; the fd, or None if held."""
    try:
        fd = os.open(path, os.O_RDWR | os.O_CREAT, FILE_MODE)
    except FileNotFoundError:
        return None
    except OSError as exc:
        # Not a lockable file (a folder, a dangling link...): leave it be.
        logger.warning("Cannot use lock file '%s': %s", path, exc)
        return None
    try:
        fcntl.flock(fd, flags | fcntl.LOCK_NB)
    except OSError as exc:
        os.close(fd)
        if exc.errno in (errno.EWOULDBLOCK, errno.EAGAIN, errno.EACCES):
            return None
        raise
    return fd


class Reservation:
    """A consumer's own folder of claimed messages, live while it holds its lock."""

    def __init__(self, folders: BrokerFolders) -> None:
        """Create and lock a new owner folder in ``reserved/``."""
        self.folders = folders
        owner = (
            f"{socket.gethostname()}-{os.getpid()}-{next(_owner_ids)}-"
            f"{uuid.uuid4().hex[:8]}"
        )
        ensure_folder(folders.tmp)
        ensure_folder(folders.reserved)
        staging = folders.tmp / owner
        os.mkdir(staging, FOLDER_MODE)
        fd = _try_lock(staging / LOCK_NAME, fcntl.LOCK_EX)
        if fd is None:  # pragma: no cover - nobody else knows the folder yet
            raise RuntimeError(f"cannot lock new reservation folder {staging}")
        self._fd: int | None = fd
        self.pid = os.getpid()
        self.path = folders.reserved / owner
        # Appear in reserved/ already locked, so no one takes us for dead.
        os.rename(staging, self.path)

    @property
    def alive(self) -> bool:
        """Whether this reservation still holds its lock in this process."""
        return self._fd is not None and self.pid == os.getpid()

    def claim(self, name: str) -> Path | None:
        """Take ``in/<name>``; its new path, or None if someone else took it."""
        target = self.path / name
        try:
            os.rename(self.folders.inbox / name, target)
        except FileNotFoundError:
            return None
        return target

    def release(self) -> None:
        """Give up the lock; messages still here go back to the queue later."""
        if self._fd is None:
            return
        fd, self._fd = self._fd, None
        if self.pid != os.getpid():
            # A forked copy: the lock belongs to the parent's open file.
            os.close(fd)
            return
        try:
            leftovers = [n for n in os.listdir(self.path) if n != LOCK_NAME]
            if not leftovers:
                unlink_quietly(self.path / LOCK_NAME)
                os.rmdir(self.path)
        except OSError:
            logger.debug("could not tidy %s", self.path, exc_info=True)
        finally:
            os.close(fd)


def settle(folders: BrokerFolders, path: Path, keep: bool) -> None:
    """Finish with a claimed message: move it to ``processed/``, or delete it."""
    try:
        if keep:
            ensure_folder(folders.processed)
            os.rename(path, folders.processed / path.name)
        else:
            os.unlink(path)
    except FileNotFoundError:
        logger.debug("settled message %s was gone already", path)


def unclaim(folders: BrokerFolders, path: Path, redelivered: bool = True) -> None:
    """Put a claimed message back into the queue, under its original name.

    With ``redelivered`` (it was handed to a consumer) the message says so
    when it is delivered again, as Kombu's ``redelivered`` flag.
    """
    if redelivered:
        _mark_redelivered(path)
    try:
        os.rename(path, folders.inbox / path.name)
    except FileNotFoundError:
        logger.debug("restored message %s was gone already", path)


def _mark_redelivered(path: Path) -> None:
    # Rewritten beside itself, in the claim's own folder, and renamed over
    # itself: a crash leaves the old or the new file, claimed, never both.
    try:
        payload = json.loads(path.read_bytes())
        info = payload["properties"]["delivery_info"]
    except (OSError, ValueError, KeyError, TypeError):
        return  # gone, or not ours to fix: it is delivered (or quarantined) as is
    if not isinstance(info, dict) or info.get("redelivered") is True:
        return
    info["redelivered"] = True
    payload["redelivered"] = True
    tmp = path.with_name(f".{path.name}.redelivered")
    try:
        unlink_quietly(tmp)
        write_private_file(tmp, json.dumps(payload).encode("utf-8"))
        os.replace(tmp, path)
    except OSError:
        unlink_quietly(tmp)
        logger.debug("could not mark %s redelivered", path, exc_info=True)


def owner_alive(owner: Path) -> bool:
    """Whether the consumer owning ``reserved/<owner>`` still holds its lock."""
    fd = _try_lock(owner / LOCK_NAME, fcntl.LOCK_SH)
    if fd is None:
        return owner.exists()
    os.close(fd)
    return False


def iter_owners(folders: BrokerFolders) -> Iterator[Path]:
    """Owner folders in ``reserved/``."""
    try:
        entries = list(os.scandir(folders.reserved))
    except FileNotFoundError:
        return
    for entry in entries:
        if entry.is_dir(follow_symlinks=False):
            yield Path(entry.path)


def message_paths(
    folders: BrokerFolders, queued: bool, claimed_since: float | None = None
) -> list[Path]:
    """Message files waiting (``queued``) or taken, in delivery order.

    Waiting: in ``in/``, or claimed by a dead consumer (they will return to
    the queue). Taken: in ``processed/``, or claimed by a live consumer.
    Claims are listed first: a claim that moves on to the other folder while
    the listing runs (settled, or returned to the queue) is still found
    there. A claim may be gone by the time it is read: see
    :func:`settled_path`. With ``claimed_since`` (a ``time.time()``), a
    waiting listing also has the live claims made since then.
    """
    base = _destination(folders, queued)
    claimed: dict[str, Path] = {}
    for owner in iter_owners(folders):
        alive = owner_alive(owner)
        for name in list_messages(owner):
            if alive != queued or (
                queued
                and claimed_since is not None
                and _claimed_after(owner / name, claimed_since)
            ):
                claimed[name] = owner / name
    paths = {name: base / name for name in list_messages(base)}
    for name, path in claimed.items():
        paths.setdefault(name, path)
    return sorted(paths.values(), key=lambda path: sort_key(path.name))


def _claimed_after(path: Path, since: float) -> bool:
    # A rename sets the file's ctime: the moment it was claimed.
    try:
        return os.stat(path).st_ctime >= since
    except FileNotFoundError:
        return False


def settled_path(folders: BrokerFolders, path: Path, queued: bool) -> Path | None:
    """Where a claim listed by :func:`message_paths` went, if it moved on.

    Its consumer settled it (``processed/``) or its claim was returned to the
    queue (``in/``) since it was listed; None for a file of those folders.
    """
    base = _destination(folders, queued)
    return None if path.parent == base else base / path.name


def _destination(folders: BrokerFolders, queued: bool) -> Path:
    # Where waiting (``queued``) or taken messages end up, claims aside.
    return folders.inbox if queued else folders.processed


def recover_abandoned(folders: BrokerFolders) -> int:
    """Return messages of dead consumers to the queue; how many were returned.

    Also removes temporary files left by producers that died mid-write.
    """
    restored = 0
    for owner in iter_owners(folders):
        fd = _try_lock(owner / LOCK_NAME, fcntl.LOCK_EX)
        if fd is None:
            continue
        try:
            for name in list_messages(owner):
                unclaim(folders, owner / name)
                restored += 1
            unlink_quietly(owner / LOCK_NAME)
            os.rmdir(owner)
        except OSError:
            logger.debug("could not recover all of %s", owner, exc_info=True)
        finally:
            os.close(fd)
    if restored:
        logger.warning(
            "Returned %d message(s) claimed by dead workers to '%s'",
            restored,
            folders.inbox,
        )
    _remove_stale_tmp(folders.tmp)
    return restored


def _remove_stale_tmp(tmp: Path) -> None:
    # Only files we write there (``<message>.msg.tmp``), never anything else
    # in that folder, and never through a link: a bare ``Connection`` may
    # point the folder at one of the user's own.
    try:
        entries = list(os.scandir(tmp))
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
