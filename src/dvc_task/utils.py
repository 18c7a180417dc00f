"""File system helpers that dvc-task and its callers share."""

from __future__ import annotations

import errno
import logging
import os
import shutil
import stat
import sys
from typing import Any, Callable, Union

logger = logging.getLogger(__name__)

StrPath = Union[str, "os.PathLike[str]"]


def _make_writable_and_retry(
    func: Callable[[str], Any], path: str, _exc: object
) -> None:
    # Read-only entries (e.g. git objects) cannot be unlinked on every
    # platform; grant write permission and try once more. A link is never
    # chmod-ed: that would change the file it points to.
    try:
        mode = os.lstat(path).st_mode
        if not stat.S_ISLNK(mode):
            os.chmod(path, mode | stat.S_IWRITE)
    except FileNotFoundError:
        return
    except PermissionError:
        pass
    try:
        func(path)
    except FileNotFoundError:
        pass


def remove(path: StrPath) -> None:
    """Remove a file or a whole tree; read-only entries too, a missing path is fine.

    Raises:
        OSError: when the path exists but cannot be removed.

    """
    path = os.fspath(path)
    logger.debug("Removing '%s'", path)
    try:
        if os.path.isdir(path) and not os.path.islink(path):
            shutil.rmtree(path, onerror=_make_writable_and_retry)
        else:
            try:
                os.unlink(path)
            except PermissionError:
                _make_writable_and_retry(os.unlink, path, None)
    except OSError as exc:
        if exc.errno != errno.ENOENT:
            raise


def makedirs(path: StrPath, exist_ok: bool = False, mode: int | None = None) -> None:
    """Create a folder and its missing parents.

    With ``mode``, every folder created gets exactly that mode (the umask does
    not apply, so set-group-id and similar bits are kept); existing parents are
    left as they are.

    Raises:
        FileExistsError: if the folder exists and ``exist_ok`` is false.

    """
    path = os.fspath(path)
    if mode is None:
        os.makedirs(path, exist_ok=exist_ok)
        return
    parent = os.path.dirname(os.path.abspath(path))
    if not os.path.isdir(parent):
        makedirs(parent, exist_ok=True, mode=mode)
    try:
        os.mkdir(path, mode)
    except FileExistsError:
        if not exist_ok or not os.path.isdir(path):
            raise
        return
    os.chmod(path, mode)


def unc_path(path: StrPath) -> str:
    """Return the absolute path, in UNC form on Windows (as Kombu URLs need)."""
    path = os.path.abspath(os.fspath(path))
    if os.name != "nt":
        return path
    drive, tail = os.path.splitdrive(path)
    if drive.endswith(":"):
        return f"\\\\?\\{drive}{tail}"
    return f"{drive}{tail}"


#: ``python -c`` puts the current directory first on ``sys.path``, as ``-m``
#: does; take it off before the module is found, unless it is not there
#: (``-P``, ``PYTHONSAFEPATH``).
_RUN_MODULE = (
    "import runpy, sys\n"
    "if sys.path[:1] == ['']:\n"
    "    del sys.path[0]\n"
    "runpy.run_module(sys.argv.pop(1), run_name='__main__', alter_sys=True)\n"
)


def module_command(module: str, *args: str) -> list[str]:
    """The command line of ``python -m module args`` for this interpreter.

    Unlike ``python -m``, the module and everything it imports is not looked
    up in the current directory first: a ``copy.py`` in a project folder that
    a background process starts from does not shadow the standard library's.
    """
    return [sys.executable, "-c", _RUN_MODULE, module, *args]
