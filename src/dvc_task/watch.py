"""Noticing that a queue folder changed: inotify where there is one, else ``stat``.

The operating-system specific part of the transport lives here. An idle
worker blocks in :meth:`FolderWaiter.wait`: on Linux that is a ``poll`` on
an inotify descriptor (no wake-ups at all while nothing happens); elsewhere,
or when inotify is unavailable (e.g. its per-user limit is reached), it
``stat``s the folder every few milliseconds and compares mtimes.
"""

from __future__ import annotations

import functools
import logging
import os
import select
import struct
import sys
import time
from pathlib import Path
from typing import TYPE_CHECKING

from dvc_task import lazy

if TYPE_CHECKING:
    import ctypes
else:
    # For inotify, when a waiter is made: a command that does not wait does
    # not load it.
    ctypes = lazy.module("ctypes")

logger = logging.getLogger(__name__)

#: A folder mtime this close to now may hide a second change in the same
#: clock tick, so the folder counts as changed until it is older.
RECENT_MTIME_NS = 50_000_000

# From <sys/inotify.h>.
_IN_MODIFY = 0x00000002
_IN_CLOSE_WRITE = 0x00000008
_IN_MOVED_TO = 0x00000080
_IN_CREATE = 0x00000100
_IN_DELETE_SELF = 0x00000400
_IN_MOVE_SELF = 0x00000800
_IN_IGNORED = 0x00008000
#: The watched folder itself went away: its watch is gone with it.
_GONE = _IN_DELETE_SELF | _IN_MOVE_SELF | _IN_IGNORED
_EVENT = struct.Struct("iIII")
#: Events of :class:`FolderWaiter`: a file appeared in the folder.
NEW_FILES = _IN_CLOSE_WRITE | _IN_MOVED_TO | _IN_CREATE
#: Events of :class:`FolderWaiter`: a file in the folder appeared or was written.
CHANGED_FILES = NEW_FILES | _IN_MODIFY


class FolderWatch:
    """Tells, with one ``stat``, whether a folder may have changed."""

    def __init__(self, path: Path) -> None:
        self.path = path
        self._seen: object = object()

    def changed(self) -> bool:
        """Whether the folder may have changed since the last call.

        A folder's mtime only has the resolution of the kernel's clock tick,
        so a second change within the tick of the last one would not show:
        a folder changed in the last ``RECENT_MTIME_NS`` counts as changed.
        """
        try:
            mtime: int | None = os.stat(self.path).st_mtime_ns
        except FileNotFoundError:
            mtime = None
        changed = mtime != self._seen or (
            mtime is not None and abs(time.time_ns() - mtime) <= RECENT_MTIME_NS
        )
        self._seen = mtime
        return changed


@functools.cache
def _load_libc() -> ctypes.CDLL | None:
    if not sys.platform.startswith("linux"):
        return None
    try:
        # The C library is already loaded into Python: no search for it
        # (ctypes.util.find_library runs other programs to find it).
        libc = ctypes.CDLL(None, use_errno=True)
        libc.inotify_init1.argtypes = [ctypes.c_int]
        libc.inotify_add_watch.argtypes = [
            ctypes.c_int,
            ctypes.c_char_p,
            ctypes.c_uint32,
        ]
    except (OSError, AttributeError):
        return None
    return libc


def _inotify_fd(path: Path, mask: int) -> int | None:
    """An inotify descriptor watching ``path`` for ``mask`` events, or None."""
    libc = _load_libc()
    if libc is None:
        return None
    fd = int(libc.inotify_init1(os.O_NONBLOCK | os.O_CLOEXEC))
    if fd < 0:
        logger.debug("inotify unavailable: %s", os.strerror(ctypes.get_errno()))
        return None
    if libc.inotify_add_watch(fd, os.fsencode(path), mask) < 0:
        logger.debug(
            "cannot watch %s with inotify: %s", path, os.strerror(ctypes.get_errno())
        )
        os.close(fd)
        return None
    return fd


def _read_all(fd: int) -> bytes:
    """Everything waiting on a non-blocking ``fd`` (empty if nothing is)."""
    chunks = []
    while True:
        try:
            data = os.read(fd, 65536)
        except BlockingIOError:
            break
        except InterruptedError:
            continue
        if not data:
            break
        chunks.append(data)
    return b"".join(chunks)


def _drain_events(fd: int) -> tuple[bool, bool]:
    """Read the waiting inotify events: (any event, the folder went away)."""
    data = _read_all(fd)
    gone = False
    offset = 0
    while offset + _EVENT.size <= len(data):
        _wd, mask, _cookie, length = _EVENT.unpack_from(data, offset)
        gone = gone or bool(mask & _GONE)
        offset += _EVENT.size + length
    return bool(data), gone


def _drain(fd: int) -> bool:
    """Read everything waiting on a non-blocking ``fd``; whether there was any."""
    return bool(_read_all(fd))


class FolderWaiter:
    """Blocks until a folder changes, :meth:`poke` is called, or time is up."""

    def __init__(
        self,
        path: Path,
        polling_interval: float,
        use_inotify: bool = True,
        events: int = NEW_FILES,
        stat_path: Path | None = None,
    ) -> None:
        """Watch folder ``path`` for ``events``.

        Without inotify, ``stat_path`` (default: the folder) is ``stat``ed
        every ``polling_interval`` seconds instead and its mtime compared.
        """
        self.path = path
        self.polling_interval = polling_interval
        self._events = events | _IN_DELETE_SELF | _IN_MOVE_SELF
        self._inotify = _inotify_fd(path, self._events) if use_inotify else None
        #: The folder was deleted or moved: watch it again once it is back.
        self._rewatch = False
        self._watch = FolderWatch(stat_path or path)
        self._watch.changed()  # only changes from now on count
        self._pipe_r, self._pipe_w = os.pipe()
        for fd in (self._pipe_r, self._pipe_w):
            os.set_blocking(fd, False)
        self._closed = False

    @property
    def uses_inotify(self) -> bool:
        """Whether waits are inotify-driven (True) or ``stat`` polls (False)."""
        return self._inotify is not None

    def fileno(self) -> int | None:
        """The descriptor that becomes readable on a change (None: see :meth:`check`).

        For an event loop: on readable, call :meth:`check`. Without inotify
        (or while a deleted folder is not back yet) there is none: call
        :meth:`check` every ``polling_interval`` instead.
        """
        return self._inotify

    def poke_fileno(self) -> int:
        """The descriptor that becomes readable on :meth:`poke`; see :meth:`unpoke`."""
        return self._pipe_r

    def unpoke(self) -> bool:
        """Take back the pending pokes; whether there were any."""
        return _drain(self._pipe_r)

    def check(self) -> bool:
        """Whether the folder may have changed since the last look; never waits."""
        return self.wait(0)

    def poke(self) -> None:
        """End the current or next :meth:`wait` now (safe from any thread)."""
        if self._closed:
            return
        try:
            os.write(self._pipe_w, b"!")
        except (BlockingIOError, OSError):
            pass  # full or closed: a wake-up is pending or nobody waits

    def wait(self, timeout: float) -> bool:
        """Wait up to ``timeout`` seconds; whether something may have changed.

        A watched folder that is deleted and made again is watched again:
        until it is back, waits poll it with ``stat``.
        """
        if self._rewatch and self._watch_again():
            return True
        if self._inotify is not None:
            # poll, not select: a long-lived program may hand us descriptors
            # above select's limit of 1024.
            poller = select.poll()
            poller.register(self._inotify, select.POLLIN)
            poller.register(self._pipe_r, select.POLLIN)
            ready = poller.poll(max(0.0, timeout) * 1000)
            changed, gone = _drain_events(self._inotify) if ready else (False, False)
            if gone:
                os.close(self._inotify)
                self._inotify = None
                self._rewatch = True
            return _drain(self._pipe_r) or changed
        deadline = time.monotonic() + timeout
        while True:
            if _drain(self._pipe_r) or self._watch.changed():
                return True
            left = deadline - time.monotonic()
            if left <= 0:
                return False
            time.sleep(min(self.polling_interval, left))

    def _watch_again(self) -> bool:
        fd = _inotify_fd(self.path, self._events)
        if fd is None:
            return False
        self._inotify = fd
        self._rewatch = False
        return True  # the new folder may already hold files

    def close(self) -> None:
        """Release the descriptors."""
        if self._closed:
            return
        self._closed = True
        for fd in (self._inotify, self._pipe_r, self._pipe_w):
            if fd is not None:
                try:
                    os.close(fd)
                except OSError:
                    pass
        self._inotify = None
