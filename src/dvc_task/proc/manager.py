"""Find, follow and control the managed processes kept in one folder."""

from __future__ import annotations

import codecs
import io
import locale
import logging
import os
import signal
import time
from collections.abc import Iterator
from pathlib import Path
from typing import TYPE_CHECKING, Any

from dvc_task import lazy
from dvc_task.files import check_name, folder_lock, open_regular
from dvc_task.folders import check_private
from dvc_task.proc.exceptions import (
    InvalidProcessInfoError,
    ProcessNotTerminatedError,
)
from dvc_task.proc.index import RecordIndex
from dvc_task.proc.info import (
    LOST_RETURNCODE,
    ProcessInfo,
    utc_now,
)
from dvc_task.statindex import file_key
from dvc_task.utils import StrPath, remove
from dvc_task.watch import CHANGED_FILES, FolderWaiter

if TYPE_CHECKING:
    from celery import Signature

    from dvc_task.proc import tree
else:
    # psutil, for signals only: listing and starting processes do not load it.
    tree = lazy.module("dvc_task.proc.tree")

logger = logging.getLogger(__name__)

#: How often follow() looks at the output file when inotify is unavailable.
FOLLOW_POLL_S = 0.01
#: Longest wait of follow() before it checks that the process still lives.
FOLLOW_LIVENESS_S = 0.5
#: A process folder younger than this may still be waiting for its record.
YOUNG_FOLDER_S = 10.0
#: How long remove(force=True) waits for a killed process to go away.
KILL_WAIT_S = 10.0

_warned: set[str] = set()


def _warn_once(path: str, reason: str) -> None:
    if path not in _warned:
        _warned.add(path)
        logger.warning("Skipping process '%s': %s", path, reason)


class ProcessManager:
    """The managed processes under ``wdir``, one folder each.

    Mapping-like: ``iter(m)`` gives names, ``m[name]`` a :class:`ProcessInfo`.
    A process recorded as running whose pid is gone, or now belongs to
    another process, is reported (and recorded) as finished with return code
    ``LOST_RETURNCODE``.
    """

    def __init__(self, wdir: StrPath | None = None) -> None:
        """Use ``wdir`` (default: the current folder) for the process folders.

        Raises:
            UnsafeFolderError: ``wdir`` exists but another user owns it, or
                group or others may write to it.
        """
        self.wdir = os.fspath(wdir) if wdir is not None else os.curdir
        if os.path.isdir(self.wdir):
            check_private(Path(self.wdir))

    def _info_path(self, name: str) -> str:
        """The record's path; a process folder that is a link is no process.

        Raises:
            FileNotFoundError: ``<wdir>/<name>`` is a link (never followed:
                its record would be read from, or written to, elsewhere).
        """
        folder = os.path.join(self.wdir, check_name(name))
        if os.path.islink(folder):
            raise FileNotFoundError(f"'{folder}' is a link, not a process folder")
        return os.path.join(folder, f"{name}.json")

    def _load(self, name: str) -> ProcessInfo:
        """The recorded info, with liveness checked and written back."""
        path = self._info_path(name)
        info = ProcessInfo.load(path)
        if info.returncode is None and not info.is_alive():
            info = self._record_lost(path, info)
        return info

    @staticmethod
    def _record_lost(path: str, info: ProcessInfo) -> ProcessInfo:
        # Only over the record as it is now (read after its runner was seen
        # dead, so a return code the runner wrote before dying is seen), only
        # while nobody can still write the real one, and under the folder's
        # lock, which a new run of the same name takes to write its record.
        try:
            with folder_lock(os.path.dirname(path)):
                info = ProcessInfo.load(path)
                if info.returncode is not None or info.is_alive():
                    return info
                logger.warning(
                    "Process %d of '%s' ended without recording a return code "
                    "(its runner died); recording %d",
                    info.pid,
                    path,
                    LOST_RETURNCODE,
                )
                info.returncode = LOST_RETURNCODE
                info.finished_at = utc_now()
                info.dump(path)
        except (FileNotFoundError, InvalidProcessInfoError):
            return info
        except OSError:
            logger.debug("could not record %s", path, exc_info=True)
        return info

    def _scan(self) -> Iterator[tuple[str, ProcessInfo]]:
        try:
            entries = list(os.scandir(self.wdir))
        except FileNotFoundError:
            return
        index = RecordIndex(self.wdir)
        for entry in entries:
            name = entry.name
            # A listed name has no '/' or NUL; '..' and '\\' remain to refuse.
            if ".." in name or "\\" in name or not entry.is_dir(follow_symlinks=False):
                continue
            path = f"{entry.path}/{name}.json"
            stdout = f"{entry.path}/{name}.out"
            try:
                key = file_key(os.stat(path))
                info = index.get(name, key, stdout)
                if info is None:
                    info = ProcessInfo.load(path)
                    index.put(name, key, info, stdout)
                if info.returncode is None and not info.is_alive():
                    info = self._record_lost(path, info)
            except FileNotFoundError:
                # A runner that is starting writes the record a moment after
                # it made the folder: only an older folder is worth a warning.
                if _age(entry.path) > YOUNG_FOLDER_S:
                    _warn_once(entry.path, f"it holds no {name}.json")
                continue
            except InvalidProcessInfoError as exc:
                _warn_once(entry.path, str(exc))
                continue
            yield name, info
        index.save()

    def __iter__(self) -> Iterator[str]:
        """Names of the processes with a readable record."""
        for name, _ in self._scan():
            yield name

    def __getitem__(self, name: str) -> ProcessInfo:
        """The process called ``name``.

        Raises:
            KeyError: no such process.
            InvalidProcessInfoError: its record cannot be read.
            ValueError: an invalid name.
        """
        try:
            return self._load(name)
        except FileNotFoundError as exc:
            raise KeyError(name) from exc

    def __setitem__(self, name: str, info: ProcessInfo) -> None:
        """Record ``info`` for an existing process folder.

        Raises:
            KeyError: no folder for ``name``.
        """
        try:
            info.dump(self._info_path(name))
        except FileNotFoundError as exc:
            raise KeyError(name) from exc

    def __delitem__(self, name: str) -> None:
        """Delete the folder of ``name`` (missing is fine)."""
        path = os.path.join(self.wdir, check_name(name))
        remove(path)

    def get(self, name: str, default: ProcessInfo | None = None) -> ProcessInfo | None:
        """The process called ``name``; ``default`` if unknown or unreadable."""
        try:
            return self[name]
        except KeyError:
            return default
        except InvalidProcessInfoError as exc:
            _warn_once(self._info_path(name), str(exc))
            return default

    def processes(self) -> Iterator[tuple[str, ProcessInfo]]:
        """``(name, info)`` of every process with a readable record."""
        return self._scan()

    def run_signature(
        self,
        args: str | list[str],
        name: str | None = None,
        task: str | None = None,
        env: dict[str, str] | None = None,
        immutable: bool = False,
        *,
        cwd: StrPath | None = None,
    ) -> Signature:
        """A Celery signature that runs ``args`` as process ``name``.

        Arguments:
            args: the command.
            name: the process name (default: a short uuid).
            task: the task to use (default: ``dvc_task.proc.tasks.run``).
            env: environment of the command (default: the worker's).
            immutable: whether the signature ignores parent results.
            cwd: working directory of the command (default: the worker's).

        Raises:
            ValueError: an invalid name.
        """
        # Celery only for this: listing and following processes stay quick.
        from celery import signature  # noqa: PLC0415

        name = check_name(name) if name is not None else _short_uuid()
        kwargs: dict[str, Any] = {
            "name": name,
            "wdir": os.path.join(self.wdir, name),
            "env": env,
        }
        if cwd is not None:
            # Absolute: the worker that runs it may have another directory.
            kwargs["cwd"] = os.path.abspath(cwd)
        return signature(
            task or "dvc_task.proc.tasks.run",
            args=(args,),
            kwargs=kwargs,
            immutable=immutable,
        )

    def send_signal(self, name: str, sig: int, group: bool = False) -> None:
        """Send ``sig`` to the process, or with ``group`` to all of its job.

        The job is the process, its process group and all its descendants.

        Raises:
            ProcessLookupError: unknown, or finished (found dead: recorded so).
            UnsupportedSignalError: a signal this platform cannot send.
        """
        try:
            info = self[name]
        except KeyError as exc:
            raise ProcessLookupError(f"no process '{name}'") from exc
        if info.returncode is not None:
            raise ProcessLookupError(f"process '{name}' has finished")
        try:
            tree.signal_job(info.pid, sig, group)
        except ProcessLookupError:
            self._record_lost(self._info_path(name), info)
            raise

    def interrupt(self, name: str, group: bool = True) -> None:
        """Send SIGINT (see :meth:`send_signal`)."""
        self.send_signal(name, signal.SIGINT, group)

    def terminate(self, name: str, group: bool = False) -> None:
        """Send SIGTERM (see :meth:`send_signal`)."""
        self.send_signal(name, signal.SIGTERM, group)

    def kill(self, name: str, group: bool = False) -> None:
        """Send SIGKILL (see :meth:`send_signal`)."""
        self.send_signal(name, signal.SIGKILL, group)

    def remove(self, name: str, force: bool = False) -> None:
        """Delete the process's folder; with ``force`` kill its whole job first.

        Raises:
            ProcessNotTerminatedError: it still runs and ``force`` is false.
        """
        try:
            info = self[name]
        except KeyError:
            return
        except InvalidProcessInfoError:
            if not force:
                raise
            del self[name]
            return
        if info.returncode is None:
            if not force:
                raise ProcessNotTerminatedError(name)
            self._kill_job(name, info)
        del self[name]

    def _kill_job(self, name: str, info: ProcessInfo) -> None:
        try:
            job = tree.signal_job(info.pid, signal.SIGKILL, group=True)
        except ProcessLookupError:
            return
        tree.wait_gone(job, KILL_WAIT_S)
        # Let the runner record the return code before the folder goes, so it
        # does not write into a folder being deleted.
        deadline = time.monotonic() + KILL_WAIT_S
        while time.monotonic() < deadline and not self._finished(name):
            time.sleep(0.01)

    def cleanup(self, force: bool = False) -> None:
        """Remove every finished process (every process, with ``force``)."""
        for name in list(self):
            try:
                self.remove(name, force)
            except ProcessNotTerminatedError:
                continue

    def follow(
        self, name: str, encoding: str | None = None, sleep_interval: float = 1
    ) -> Iterator[str]:
        """Yield the process's output lines as they are written.

        Stops once the process has finished and all its output is read; a
        last line without a line break is yielded whole at the end. New
        output arrives within milliseconds; ``sleep_interval`` only bounds
        how long a wait may last.

        Raises:
            KeyError: no such process.
        """
        info = self[name]
        if info.stdout is None:
            return
        out = Path(info.stdout)
        decoder = io.IncrementalNewlineDecoder(
            codecs.getincrementaldecoder(
                encoding or locale.getpreferredencoding(False)
            )(errors="replace"),
            translate=True,
        )
        waiter = FolderWaiter(
            out.parent, FOLLOW_POLL_S, events=CHANGED_FILES, stat_path=out
        )
        pending = ""
        try:
            with os.fdopen(open_regular(out), "rb") as fobj:
                finished = False
                while True:
                    chunk = fobj.read(1 << 16)
                    if chunk:
                        pending += decoder.decode(chunk)
                        *lines, pending = pending.split("\n")
                        for line in lines:
                            yield line + "\n"
                        continue
                    if finished:
                        break
                    # Read once more after seeing the end: the last output
                    # may have come just before the process finished.
                    finished = self._finished(name)
                    if not finished:
                        waiter.wait(min(sleep_interval, FOLLOW_LIVENESS_S))
        finally:
            waiter.close()
        pending += decoder.decode(b"", final=True)
        if pending:
            yield pending

    def _finished(self, name: str) -> bool:
        info = self.get(name)
        return info is None or info.returncode is not None


def _age(path: str) -> float:
    try:
        return time.time() - os.stat(path).st_mtime
    except FileNotFoundError:
        return 0.0


def _short_uuid() -> str:
    """A new random process name."""
    from shortuuid import uuid  # noqa: PLC0415 - 5 ms of imports: when needed

    return str(uuid())
