"""Private folders: made 0700, and refused when another user could write there.

Below :mod:`dvc_task.app`, :mod:`dvc_task.proc` and :mod:`dvc_task.jobs`,
which all keep their files in such folders.
"""

from __future__ import annotations

import logging
import os
import stat
from pathlib import Path

from dvc_task.exceptions import UnsafeFolderError
from dvc_task.utils import makedirs

logger = logging.getLogger(__name__)

FOLDER_MODE = 0o700


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


def find_upward(name: str, start: Path) -> Path | None:
    """The nearest folder ``name`` of this user in ``start`` or a parent.

    Found as git finds its repository; one owned by another user is passed
    over (it would not be private to this one). None if there is none.
    """
    for folder in (start, *start.parents):
        candidate = folder / name
        try:
            st = candidate.stat()
        except OSError:
            continue
        if stat.S_ISDIR(st.st_mode) and st.st_uid == os.getuid():
            return candidate
    return None
