r"""A job's output, as ``cat``, ``tail -n`` and ``tail -f`` would show it.

Bytes pass through unchanged: no decoding, no newline translation, so a
progress bar drawn with ``\r`` and output in any encoding arrive as written.
"""

from __future__ import annotations

import errno
import os
import time
from collections.abc import Iterator
from pathlib import Path
from typing import IO, TYPE_CHECKING

from dvc_task.files import open_regular
from dvc_task.jobs import reading
from dvc_task.watch import CHANGED_FILES, FolderWaiter

if TYPE_CHECKING:
    from dvc_task.jobs.backend import Backend

#: Read size while catching up with a fast writer.
CHUNK = 1 << 20
#: Longest time between two looks at whether a followed job has ended.
CHECK_S = 0.05
#: How often a wait looks at files where inotify is not available.
POLL_S = 0.01
#: How often a job that has just started is looked at until it has output.
START_POLL_S = 0.01


def tail_offset(fobj: IO[bytes], lines: int) -> int:
    """Offset where the last ``lines`` lines of ``fobj`` start."""
    end = fobj.seek(0, os.SEEK_END)
    if end == 0 or lines <= 0:
        return end
    fobj.seek(end - 1)
    # A last line without its line break counts as a line, as in tail(1).
    needed = lines + 1 if fobj.read(1) == b"\n" else lines
    pos, seen = end, 0
    while pos > 0:
        step = min(1 << 16, pos)
        pos -= step
        fobj.seek(pos)
        block = fobj.read(step)
        index = len(block)
        while True:
            index = block.rfind(b"\n", 0, index)
            if index < 0:
                break
            seen += 1
            if seen == needed:
                return pos + index + 1
    return 0


def read(path: Path, tail: int | None = None) -> bytes:
    """The whole file (its last ``tail`` lines if given); empty if missing."""
    try:
        with os.fdopen(open_regular(path), "rb") as fobj:
            if tail is not None:
                fobj.seek(tail_offset(fobj, tail))
            return fobj.read()
    except FileNotFoundError:
        return b""


def copy(path: Path, out_fd: int, tail: int | None = None) -> None:
    """Write the file (its last ``tail`` lines if given) to ``out_fd``.

    The kernel copies it (``sendfile``) where it can: a big log costs about
    what ``cat`` costs. A missing file writes nothing.
    """
    try:
        fobj = os.fdopen(open_regular(path), "rb")
    except FileNotFoundError:
        return
    with fobj:
        offset = tail_offset(fobj, tail) if tail is not None else 0
        try:
            while sent := os.sendfile(out_fd, fobj.fileno(), offset, CHUNK):
                offset += sent
            return
        except OSError as exc:
            if exc.errno not in (errno.EINVAL, errno.ENOSYS):
                raise
        fobj.seek(offset)
        while chunk := fobj.read(CHUNK):
            view = memoryview(chunk)
            while view:
                view = view[os.write(out_fd, view) :]


def follow(queue: Backend, name: str, tail: int | None = None) -> Iterator[bytes]:
    """Yield job ``name``'s output as written until it ends (see JobQueue)."""
    path = queue.output_path(name)
    fobj = _open_once_started(queue, name, path)
    if fobj is None:
        return  # it never ran (e.g. killed while queued)
    waiter = FolderWaiter(path.parent, POLL_S, events=CHANGED_FILES, stat_path=path)
    try:
        if tail is not None:
            fobj.seek(tail_offset(fobj, tail))
        yield from _follow_file(queue, name, fobj, waiter)
    finally:
        waiter.close()
        fobj.close()


def _open_once_started(queue: Backend, name: str, path: Path) -> IO[bytes] | None:
    """The output file once the job has one; None if it ended without."""
    waiter = queue.changes()
    try:
        while not reading.left_queue(queue, name):
            waiter.wait(0.5)
        # A worker marks the job started a moment before its output exists.
        while True:
            try:
                return os.fdopen(open_regular(path), "rb")
            except FileNotFoundError:
                if reading.ended(queue, name):
                    return None
            waiter.wait(START_POLL_S)
    finally:
        waiter.close()


def _follow_file(
    queue: Backend, name: str, fobj: IO[bytes], waiter: FolderWaiter
) -> Iterator[bytes]:
    last_check = 0.0
    ended = False
    while True:
        chunk = fobj.read(CHUNK)
        if chunk:
            yield chunk
            continue
        if ended:
            return
        since = time.monotonic() - last_check
        if since >= CHECK_S:
            last_check = time.monotonic()
            # Read once more after seeing the end: the last output may have
            # come just before the job finished.
            ended = reading.ended(queue, name)
            continue
        waiter.wait(CHECK_S - since)
