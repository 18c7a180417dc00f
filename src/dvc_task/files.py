"""The files dvc-task names, writes and locks.

Every module goes through these helpers: one set of rules for names that
become file names (processes, jobs, workers, queues), one way to write a new
private (0600) file, one way to replace a file atomically, one lock.
"""

from __future__ import annotations

import errno
import fcntl
import os
import re
import stat
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from types import TracebackType

from dvc_task.utils import StrPath

FILE_MODE = 0o600
#: Longest name in UTF-8 bytes: ``<name>.meta.json``, or a message file
#: name with the queue name in it, must still fit in 255 bytes.
MAX_NAME_BYTES = 200
_BAD_NAME = re.compile(r"[/\\\x00-\x1f\x7f]|\.\.")


def is_valid_name(name: str) -> bool:
    """Whether ``name`` can be (a part of) a file name: no path tricks."""
    return (
        isinstance(name, str)
        and name not in ("", ".")
        and not _BAD_NAME.search(name)
        and len(name.encode("utf-8", "surrogateescape")) <= MAX_NAME_BYTES
    )


def check_name(name: str, what: str = "process") -> str:
    """Return ``name`` if it is safe as a file name, else raise ``ValueError``.

    ``what`` names the thing in the error message (a process, a job, a
    worker, a queue).
    """
    if not is_valid_name(name):
        shown = (
            repr(name) if len(name) <= 60 else f"{name[:40]!r}... ({len(name)} long)"
        )
        raise ValueError(
            f"invalid {what} name {shown}: use a non-empty name of at most "
            f"{MAX_NAME_BYTES} bytes without '/', '\\', '..' or control characters"
        )
    return name


class NotARegularFileError(OSError):
    """A path under our folders is a link, a FIFO, a folder...: not opened."""

    def __init__(self, code: int, path: StrPath) -> None:
        """The error of ``path``; ``code`` is the ``errno`` value."""
        super().__init__(
            code,
            f"'{os.fspath(path)}' is not a regular file (a link, FIFO or folder "
            "put there by something else); it is not followed. Move it away "
            "and try again",
        )
        self.filename = os.fspath(path)

    def __str__(self) -> str:
        """The message alone, without ``[Errno N]``."""
        return str(self.strerror)


def open_regular(path: StrPath, flags: int = os.O_RDONLY, mode: int = FILE_MODE) -> int:
    """Open a regular file of ours; its descriptor.

    Never follows a link (``O_NOFOLLOW``), never blocks on a FIFO or device
    (``O_NONBLOCK``, which a regular file ignores), and refuses whatever is
    not a regular file once open. Every open of a path under a queue, job or
    process folder goes through here.

    Raises:
        FileNotFoundError: no such file (and ``O_CREAT`` not given).
        NotARegularFileError: a link, FIFO, folder, socket or device.
        OSError: as ``os.open``.

    """
    try:
        fd = os.open(path, flags | os.O_NOFOLLOW | os.O_NONBLOCK, mode)
    except OSError as exc:
        if exc.errno in (errno.ELOOP, errno.EISDIR, errno.ENXIO):
            raise NotARegularFileError(exc.errno, path) from None
        raise
    if not stat.S_ISREG(os.fstat(fd).st_mode):
        os.close(fd)
        raise NotARegularFileError(errno.EINVAL, path)
    return fd


def read_regular(path: StrPath) -> bytes:
    """The content of a regular file of ours (see :func:`open_regular`)."""
    with os.fdopen(open_regular(path), "rb") as fobj:
        return fobj.read()


def write_private_file(path: StrPath, data: bytes, fsync: bool = True) -> None:
    """Write a new 0600 file; remove it again if writing fails.

    Raises:
        OSError: the file exists already or could not be written.

    """
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_NOFOLLOW, FILE_MODE)
    try:
        view = memoryview(data)
        while view:
            view = view[os.write(fd, view) :]
        if fsync:
            os.fsync(fd)
    except BaseException:
        os.close(fd)
        unlink_quietly(path)
        raise
    os.close(fd)


def write_atomic(path: StrPath, data: bytes, fsync: bool = True) -> None:
    """Replace ``path`` with ``data``: a new 0600 file renamed over it.

    A reader sees the old content or the new, never a part. The temporary
    file sits beside ``path`` (a dot file named after it and this process)
    and is removed if anything fails.

    Raises:
        OSError: the file could not be written; ``path`` is unchanged.

    """
    target = Path(path)
    tmp = target.with_name(f".{target.name}.{os.getpid()}.{id(data):x}.tmp")
    try:
        write_private_file(tmp, data, fsync=fsync)
    except FileExistsError:
        # Left by a crash of an earlier process that had this pid.
        unlink_quietly(tmp)
        write_private_file(tmp, data, fsync=fsync)
    try:
        os.replace(tmp, target)
    except BaseException:
        unlink_quietly(tmp)
        raise


def unlink_quietly(path: StrPath) -> None:
    """Delete ``path``; a missing file is fine."""
    try:
        os.unlink(path)
    except FileNotFoundError:
        pass


class FileLock:
    """An OS lock (``flock``) on a lock file, owned by the process that took it.

    The lock lasts while this object holds its descriptor; the OS releases it
    when the process dies, however it dies. A forked child inherits the
    descriptor but not the ownership: :attr:`held` is False there, and
    :meth:`release` there only closes its copy.
    """

    def __init__(self, path: StrPath) -> None:
        """A lock on ``path`` (created 0600 on first use), not taken yet."""
        self.path = Path(path)
        self._fd: int | None = None
        self._pid = 0

    @property
    def held(self) -> bool:
        """Whether this process holds the lock."""
        return self._fd is not None and self._pid == os.getpid()

    def acquire(self, shared: bool = False, blocking: bool = False) -> bool:
        """Take the lock; whether it was taken (False: someone else holds it).

        Raises:
            OSError: the lock file cannot be opened (missing folder, a link,
                not a regular file...).

        """
        if self.held:
            return True
        fd = open_regular(self.path, os.O_RDWR | os.O_CREAT)
        flags = fcntl.LOCK_SH if shared else fcntl.LOCK_EX
        try:
            fcntl.flock(fd, flags if blocking else flags | fcntl.LOCK_NB)
        except OSError as exc:
            os.close(fd)
            if exc.errno in (errno.EWOULDBLOCK, errno.EAGAIN, errno.EACCES):
                return False
            raise
        self._fd, self._pid = fd, os.getpid()
        return True

    def write(self, text: str) -> None:
        """Replace the lock file's content (e.g. the holder's pid).

        Raises:
            RuntimeError: the lock is not held here.

        """
        if not self.held or self._fd is None:
            raise RuntimeError(f"lock '{self.path}' is not held")
        os.ftruncate(self._fd, 0)
        os.pwrite(self._fd, text.encode("utf-8"), 0)

    def release(self) -> None:
        """Give the lock up (only close the descriptor in a forked child)."""
        if self._fd is not None:
            fd, self._fd = self._fd, None
            os.close(fd)

    def __enter__(self) -> FileLock:
        self.acquire(blocking=True)
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.release()


@contextmanager
def folder_lock(path: StrPath) -> Iterator[None]:
    """Hold an exclusive OS lock on the folder ``path`` itself (not a link).

    For short read-check-write steps on the files of one folder, e.g. a
    process record that two programs may replace.

    Raises:
        OSError: ``path`` is missing, a link or not a folder.

    """
    fd = os.open(path, os.O_RDONLY | os.O_DIRECTORY | os.O_NOFOLLOW | os.O_CLOEXEC)
    try:
        fcntl.flock(fd, fcntl.LOCK_EX)
        yield
    finally:
        os.close(fd)


def lock_is_held(path: StrPath) -> bool | None:
    """Whether someone holds the lock on ``path`` now; None if there is no file.

    Only looks: never creates the file, never follows a link, never waits.
    """
    try:
        fd = open_regular(path)
    except FileNotFoundError:
        return None
    except OSError:
        return False  # not a lock file of ours (a link, a FIFO, a folder...)
    try:
        fcntl.flock(fd, fcntl.LOCK_SH | fcntl.LOCK_NB)
    except BlockingIOError:
        return True
    finally:
        os.close(fd)
    return False
