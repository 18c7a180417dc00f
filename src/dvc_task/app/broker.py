"""The on-disk queue: its folders, message names, and how a message is written.

How a message is checked is in :mod:`.reader`; how it is written, claimed,
acked, recovered and listed, in :mod:`.folderqueue`.

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

import logging
import os
import stat
import threading
import time
import uuid
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from dvc_task.exceptions import UnsafeFolderError
from dvc_task.files import check_name
from dvc_task.utils import makedirs

logger = logging.getLogger(__name__)

MSG_SUFFIX = ".msg"
FOLDER_MODE = 0o700


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


def current_umask() -> int:
    """The process's umask, read without changing it where the OS allows."""
    try:
        with open("/proc/self/status", encoding="ascii") as status:
            for line in status:
                if line.startswith("Umask:"):
                    return int(line.split()[1], 8)
    except (OSError, ValueError):
        pass
    # Elsewhere it can only be read by setting it: set a stricter one
    # meanwhile, so that a file another thread creates is never looser.
    mask = os.umask(0o077)
    os.umask(mask)
    return mask


def check_private(path: Path) -> None:
    """Refuse a folder that another user owns or may write to.

    A folder of ours that the user's own umask made group-writable (umask
    002, the default with per-user groups; DVC creates folders that way) is
    not a sign of tampering when the group is the user's own per-user group:
    it is made private (0700) with a warning. A shared group, or everyone,
    may already have put files there: refused.

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
    loose = st.st_mode & (stat.S_IWGRP | stat.S_IWOTH)
    if not loose:
        return
    umask = current_umask()
    if loose & umask or loose & stat.S_IWOTH or not _own_private_group(st.st_gid):
        raise UnsafeFolderError(
            str(path),
            f"{_writers(st)} may write to it (mode {st.st_mode & 0o777:o})",
            f"check what is in it, then make it private with 'chmod 700 {path}'",
        )
    os.chmod(path, FOLDER_MODE)
    logger.warning(
        "Made '%s' private (mode 700): it had mode %o from your umask %03o",
        path,
        st.st_mode & 0o777,
        umask,
    )


def _own_private_group(gid: int) -> bool:
    """Whether ``gid`` is the user's own per-user group, which only they are in.

    That is: the user's primary group, named as the user, with no other
    members.
    """
    try:
        import grp  # noqa: PLC0415 - POSIX only
        import pwd  # noqa: PLC0415
    except ImportError:  # pragma: no cover - not POSIX
        return False
    try:
        user = pwd.getpwuid(os.getuid())
        group = grp.getgrgid(gid)
    except KeyError:
        return False
    return (
        gid == user.pw_gid
        and group.gr_name == user.pw_name
        and set(group.gr_mem) <= {user.pw_name}
    )


def _writers(st: os.stat_result) -> str:
    if st.st_mode & stat.S_IWOTH:
        return "everyone"
    try:
        import grp  # noqa: PLC0415 - POSIX only

        name = grp.getgrgid(st.st_gid).gr_name
    except (ImportError, KeyError):
        name = str(st.st_gid)
    return f"group '{name}' (a group you share)"


def ensure_folder(path: Path) -> None:
    """Create ``path`` and its missing parents (0700) unless it exists."""
    if not path.is_dir():
        makedirs(path, exist_ok=True, mode=FOLDER_MODE)


def make_private_folder(path: Path) -> None:
    """Create ``path`` (and missing parents) 0700, or check the existing one.

    Raises:
        UnsafeFolderError: it exists but another user owns it, or group or
            others may write to it.
    """
    try:
        makedirs(path, mode=FOLDER_MODE)
    except FileExistsError:
        check_private(path)


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


def message_name(queue: str, priority: int = 0) -> str:
    """File name for a new message on ``queue``.

    A priority other than 0 is written after the stamp (``_p5_``): higher
    priorities are delivered first, each in publish order.

    Raises:
        ValueError: a queue name that cannot be a part of a file name.

    """
    check_name(queue, what="queue")
    marker = f"p{priority}_" if priority else ""
    return f"{_next_stamp()}_{marker}{uuid.uuid4()}.{queue}{MSG_SUFFIX}"


def queue_of(name: str) -> str | None:
    """The queue a message file name belongs to, or None if it is no message."""
    prefix, _, rest = name.partition(".")
    if not prefix or not rest.endswith(MSG_SUFFIX) or len(rest) <= len(MSG_SUFFIX):
        return None
    return rest[: -len(MSG_SUFFIX)]


def sort_key(name: str) -> tuple[int, int, str]:
    """Order of delivery: higher priority first, then by publish stamp.

    Names without a stamp come last.
    """
    stamp, _, rest = name.partition("_")
    priority = 0
    if rest.startswith("p"):
        marker = rest[1:].partition("_")[0]
        if marker.lstrip("-").isdigit() and len(marker) < 20:
            priority = int(marker)
    return (-priority, int(stamp) if stamp.isdigit() else 1 << 62, name)


def list_messages(folder: Path) -> list[str]:
    """Names of the message files in ``folder``, in delivery order."""
    try:
        names = [n for n in os.listdir(folder) if n.endswith(MSG_SUFFIX)]
    except FileNotFoundError:
        return []
    names.sort(key=sort_key)
    return names
