"""The on-disk queue: how a message is written, claimed, acked and recovered.

Layout under the broker folder (the first three as dvc-task 0.40 had them)::

    in/          queued messages, ``<ms>_<uuid>.<queue>.msg``
    processed/   messages a worker has finished with (acked or rejected)
    control/     exchange tables for fanout (broadcast) routing
    reserved/    one folder per live consumer: ``<owner>/.lock`` + claimed files
    quarantine/  files that are not valid messages, kept for inspection
    tmp/         messages being written, before they are renamed into ``in/``

A message only ever moves by ``rename`` inside one file system, so it is in
exactly one of these folders at any time and is never seen half-written. A
consumer claims a message by renaming it into its own ``reserved/<owner>/``
folder (only one of several competing renames succeeds), and moves it on to
``processed/`` when it is acked. Each owner folder holds ``.lock`` under an OS
file lock for as long as the consumer lives; once the lock can be taken, the
owner is dead and anyone may move its messages back to ``in/``.
"""

from __future__ import annotations

import base64
import binascii
import errno
import fcntl
import itertools
import json
import logging
import os
import socket
import stat
import threading
import time
import uuid
from collections.abc import Iterator, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from kombu.utils.json import dumps, loads

from dvc_task.exceptions import UnsafeFolderError
from dvc_task.utils import remove

logger = logging.getLogger(__name__)

MSG_SUFFIX = ".msg"
LOCK_NAME = ".lock"
FOLDER_MODE = 0o700
FILE_MODE = 0o600
#: A message file found empty is left alone this long: a dvc-task 0.40
#: producer creates the file first and writes it afterwards.
EMPTY_GRACE_S = 2.0
#: Temporary files older than this were left by a producer that died.
STALE_TMP_S = 600.0
DEFAULT_ACCEPT = frozenset({"application/json"})


class BadMessageError(ValueError):
    """A message file that can never be delivered; the text says why."""


@dataclass(frozen=True)
class BrokerFolders:
    """Paths of one on-disk queue."""

    inbox: Path
    processed: Path
    control: Path
    reserved: Path
    quarantine: Path
    tmp: Path

    @classmethod
    def from_options(cls, options: Mapping[str, Any]) -> BrokerFolders:
        """Read the folders from Kombu transport options (0.40 keys kept)."""
        inbox = Path(options.get("data_folder_in", "data_in"))
        base = inbox.parent

        def _path(key: str, default: str) -> Path:
            return Path(options.get(key) or base / default)

        return cls(
            inbox=inbox,
            processed=_path("processed_folder", "processed"),
            control=_path("control_folder", "control"),
            reserved=_path("reserved_folder", "reserved"),
            quarantine=_path("quarantine_folder", "quarantine"),
            tmp=_path("tmp_folder", "tmp"),
        )

    def all(self) -> tuple[Path, ...]:
        """Every folder of the queue."""
        return (
            self.inbox,
            self.processed,
            self.control,
            self.reserved,
            self.quarantine,
            self.tmp,
        )

    def create(self) -> None:
        """Create the missing folders, private to their owner.

        Raises:
            UnsafeFolderError: a folder exists but others may write to it.

        """
        for path in self.all():
            try:
                os.makedirs(path, mode=FOLDER_MODE)
            except FileExistsError:
                check_private(path)
            else:
                os.chmod(path, FOLDER_MODE)


def check_private(path: Path) -> None:
    """Refuse a folder that another user owns or may write to.

    Raises:
        UnsafeFolderError: with what is wrong and how to fix it.

    """
    st = os.stat(path)
    if not stat.S_ISDIR(st.st_mode):
        raise UnsafeFolderError(
            str(path), "it is not a folder", "remove it or choose another folder"
        )
    if hasattr(os, "getuid") and st.st_uid != os.getuid():
        raise UnsafeFolderError(
            str(path),
            f"it is owned by uid {st.st_uid}, not by you (uid {os.getuid()})",
            f"use a folder of your own, or have its owner run 'chown -R {os.getuid()} "
            f"{path}'",
        )
    if st.st_mode & (stat.S_IWGRP | stat.S_IWOTH):
        raise UnsafeFolderError(
            str(path),
            f"group or others may write to it (mode {st.st_mode & 0o777:o})",
            f"make it private with 'chmod 700 {path}'",
        )


def _ensure_folder(path: Path) -> None:
    if not path.is_dir():
        os.makedirs(path, mode=FOLDER_MODE, exist_ok=True)


# --- names -----------------------------------------------------------------

_stamp_lock = threading.Lock()
_last_stamp = 0


def _next_stamp() -> int:
    # Millisecond stamps as 0.40 wrote them (monotonic clock, shared by every
    # process on the host), made strictly increasing within this process so
    # that messages published in the same millisecond keep their order.
    global _last_stamp  # noqa: PLW0603
    with _stamp_lock:
        _last_stamp = max(int(time.monotonic() * 1000), _last_stamp + 1)
        return _last_stamp


def check_queue_name(queue: str) -> None:
    """Refuse a queue name that cannot be a part of a file name.

    Raises:
        ValueError: for an empty name or one with a path separator or NUL.

    """
    if not queue or any(c in queue for c in ("/", "\\", "\0")) or queue in (".", ".."):
        raise ValueError(
            f"invalid queue name {queue!r}: it must be a non-empty name "
            "without '/', '\\' or NUL characters"
        )


def message_name(queue: str) -> str:
    """File name for a new message on ``queue``."""
    check_queue_name(queue)
    return f"{_next_stamp()}_{uuid.uuid4()}.{queue}{MSG_SUFFIX}"


def queue_of(name: str) -> str | None:
    """The queue a message file name belongs to, or None if it is no message."""
    prefix, _, rest = name.partition(".")
    if not prefix or not rest.endswith(MSG_SUFFIX) or len(rest) <= len(MSG_SUFFIX):
        return None
    return rest[: -len(MSG_SUFFIX)]


def sort_key(name: str) -> tuple[int, str]:
    """Order of delivery: by publish stamp, names without one last."""
    stamp = name.partition("_")[0]
    return (int(stamp) if stamp.isdigit() else 1 << 62, name)


def list_messages(folder: Path) -> list[str]:
    """Names of the message files in ``folder``, in delivery order."""
    try:
        names = [n for n in os.listdir(folder) if n.endswith(MSG_SUFFIX)]
    except FileNotFoundError:
        return []
    names.sort(key=sort_key)
    return names


# --- writing ---------------------------------------------------------------


def write_message(
    folders: BrokerFolders, queue: str, payload: Mapping[str, Any], fsync: bool = True
) -> Path:
    """Publish ``payload`` on ``queue`` atomically; return the message's path.

    Raises:
        ValueError: for a bad queue name.
        OSError: if the message cannot be written (e.g. the disk is full);
            nothing is left behind then.

    """
    data = dumps(payload).encode("utf-8")
    name = message_name(queue)
    _ensure_folder(folders.tmp)
    tmp = folders.tmp / f"{name}.tmp"
    write_private_file(tmp, data, fsync=fsync)
    target = folders.inbox / name
    try:
        os.replace(tmp, target)
    except BaseException:
        _unlink_quietly(tmp)
        raise
    return target


def write_private_file(path: Path, data: bytes, fsync: bool = True) -> None:
    """Write a new 0600 file; remove it again if writing fails.

    Raises:
        OSError: the file exists already or could not be written.

    """
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, FILE_MODE)
    try:
        view = memoryview(data)
        while view:
            view = view[os.write(fd, view) :]
        if fsync:
            os.fsync(fd)
    except BaseException:
        os.close(fd)
        _unlink_quietly(path)
        raise
    os.close(fd)


def _unlink_quietly(path: Path) -> None:
    try:
        os.unlink(path)
    except FileNotFoundError:
        pass


# --- reading ---------------------------------------------------------------


def read_message(path: Path) -> bytes:
    """Read a message file, waiting for no writer.

    Raises:
        FileNotFoundError: the file is gone (taken by someone else).
        BlockingIOError: a dvc-task 0.40 producer is still writing it.

    """
    with open(path, "rb") as fobj:
        # 0.40 producers write in place under an exclusive lock; ours rename
        # complete files, so the lock is only ever held by an old producer.
        fcntl.flock(fobj.fileno(), fcntl.LOCK_SH | fcntl.LOCK_NB)
        try:
            return fobj.read()
        finally:
            fcntl.flock(fobj.fileno(), fcntl.LOCK_UN)


def parse_message(
    data: bytes, accept: frozenset[str] = DEFAULT_ACCEPT
) -> dict[str, Any]:
    """Decode a message file into a Kombu payload.

    Raises:
        BadMessageError: the file can never be delivered; says why.

    """
    if not data.strip():
        raise BadMessageError("the file is empty")
    try:
        payload = loads(data.decode("utf-8"))
    except (UnicodeDecodeError, ValueError) as exc:
        raise BadMessageError(f"not JSON ({exc})") from None
    if not isinstance(payload, dict):
        raise BadMessageError("not a JSON object")
    props = payload.get("properties")
    if not isinstance(props, dict):
        raise BadMessageError("no 'properties' object")
    tag = props.get("delivery_tag")
    if not isinstance(tag, str) or not tag:
        raise BadMessageError("no 'properties.delivery_tag' string")
    if not isinstance(props.get("delivery_info", {}), dict):
        raise BadMessageError("'properties.delivery_info' is not an object")
    if not isinstance(payload.get("headers", {}), (dict, type(None))):
        raise BadMessageError("'headers' is not an object")
    for key in ("content-type", "content-encoding"):
        if not isinstance(payload.get(key), (str, type(None))):
            raise BadMessageError(f"'{key}' is not a string")
    content_type = payload.get("content-type")
    if content_type not in accept:
        raise BadMessageError(
            f"content type {content_type!r} is not accepted (accepted: "
            f"{', '.join(sorted(accept))})"
        )
    body = _decode_body(payload.get("body"), props.get("body_encoding"))
    if content_type == "application/json":
        _check_json_body(body, payload.get("content-encoding"))
    return payload


def _check_json_body(body: bytes, encoding: Any) -> None:
    # Celery reads a task or a broadcast from a JSON array or object; anything
    # else would reach it as an exception in its consumer.
    if encoding is not None and str(encoding).lower() not in ("utf-8", "utf8"):
        raise BadMessageError(f"JSON body in unexpected encoding {encoding!r}")
    try:
        decoded = json.loads(body.decode("utf-8"))
    except (UnicodeDecodeError, ValueError) as exc:
        raise BadMessageError(f"the body is not JSON ({exc})") from None
    if not isinstance(decoded, (list, dict)):
        raise BadMessageError("the body is not a JSON array or object")


def _decode_body(body: Any, encoding: Any) -> bytes:
    if body is not None and not isinstance(body, str):
        raise BadMessageError("'body' is not a string")
    if encoding is None or (isinstance(encoding, str) and encoding.lower() == "utf-8"):
        return (body or "").encode("utf-8", "surrogatepass")
    if encoding != "base64":
        raise BadMessageError(f"unknown body encoding {encoding!r}")
    try:
        return base64.b64decode(body or "", validate=True)
    except (binascii.Error, ValueError):
        raise BadMessageError("'body' is not valid base64") from None


def quarantine(
    folders: BrokerFolders, path: Path, reason: str, origin: Path | None = None
) -> Path | None:
    """Move a bad message file aside and log why; None if it was gone already.

    ``origin`` is where the file was found, if it was claimed from there.
    """
    _ensure_folder(folders.quarantine)
    target = folders.quarantine / path.name
    if target.exists():
        target = folders.quarantine / f"{path.name}.{uuid.uuid4().hex[:8]}"
    try:
        os.rename(path, target)
    except FileNotFoundError:
        return None
    logger.warning(
        "Quarantined message file '%s' as '%s': %s", origin or path, target, reason
    )
    return target


def load_message(
    folders: BrokerFolders,
    path: Path,
    accept: frozenset[str] = DEFAULT_ACCEPT,
    origin: Path | None = None,
) -> dict[str, Any] | None:
    """Read and check one message file; quarantine it if it is bad.

    Returns None, without raising, when the file is gone, still being written
    by a 0.40 producer, or was quarantined. ``origin`` is where the file was
    found, if it was claimed from there.
    """
    try:
        data = read_message(path)
    except (FileNotFoundError, BlockingIOError):
        return None
    except OSError as exc:
        quarantine(folders, path, f"unreadable ({exc})", origin)
        return None
    try:
        return parse_message(data, accept)
    except BadMessageError as exc:
        if not data and _age(path) < EMPTY_GRACE_S:
            return None
        quarantine(folders, path, str(exc), origin)
        return None


def _age(path: Path) -> float:
    try:
        return time.time() - os.stat(path).st_mtime
    except FileNotFoundError:
        return 0.0


# --- claiming and settling -------------------------------------------------

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
        _ensure_folder(folders.tmp)
        _ensure_folder(folders.reserved)
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
                _unlink_quietly(self.path / LOCK_NAME)
                os.rmdir(self.path)
        except OSError:
            logger.debug("could not tidy %s", self.path, exc_info=True)
        finally:
            os.close(fd)


def settle(folders: BrokerFolders, path: Path, keep: bool) -> None:
    """Finish with a claimed message: move it to ``processed/``, or delete it."""
    try:
        if keep:
            _ensure_folder(folders.processed)
            os.rename(path, folders.processed / path.name)
        else:
            os.unlink(path)
    except FileNotFoundError:
        logger.debug("settled message %s was gone already", path)


def unclaim(folders: BrokerFolders, path: Path) -> None:
    """Put a claimed message back into the queue, under its original name."""
    try:
        os.rename(path, folders.inbox / path.name)
    except FileNotFoundError:
        logger.debug("restored message %s was gone already", path)


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


def message_paths(folders: BrokerFolders, queued: bool) -> list[Path]:
    """Message files waiting (``queued``) or taken, in delivery order.

    Waiting: in ``in/``, or claimed by a dead consumer (they will return to
    the queue). Taken: in ``processed/``, or claimed by a live consumer.
    """
    base = folders.inbox if queued else folders.processed
    paths = [base / name for name in list_messages(base)]
    for owner in iter_owners(folders):
        if owner_alive(owner) != queued:
            paths.extend(owner / name for name in list_messages(owner))
    paths.sort(key=lambda path: sort_key(path.name))
    return paths


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
            _unlink_quietly(owner / LOCK_NAME)
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
    try:
        entries = list(os.scandir(tmp))
    except FileNotFoundError:
        return
    deadline = time.time() - STALE_TMP_S
    for entry in entries:
        try:
            if entry.stat(follow_symlinks=False).st_mtime < deadline:
                remove(entry.path)
                logger.info("Removed '%s', left by a process that died", entry.path)
        except FileNotFoundError:
            continue
