"""Run one command in the background, its output appended to ``<name>.out``."""

from __future__ import annotations

import json
import logging
import os
import shlex
import signal
import subprocess
import sys
import time
from contextlib import AbstractContextManager
from functools import cached_property
from pathlib import Path
from typing import IO, Any

from shortuuid import uuid

from dvc_task.exceptions import DvcTaskError
from dvc_task.files import check_name, folder_lock, open_regular
from dvc_task.folders import check_private
from dvc_task.proc.exceptions import (
    InvalidProcessInfoError,
    ProcessNotTerminatedError,
    TimeoutExpired,
)
from dvc_task.proc.info import (
    ProcessInfo,
    process_alive,
    process_create_time,
    process_start_id,
    utc_now,
)
from dvc_task.proc.tree import signal_job, wait_gone
from dvc_task.utils import makedirs, module_command
from dvc_task.watch import NEW_FILES, FolderWaiter

logger = logging.getLogger(__name__)

__all__ = ["ManagedProcess", "ProcessInfo"]

#: Run by a short-lived launcher: forks the runner into a new session with
#: stdout on /dev/null, prints its pid and exits. The runner is then nobody's
#: child but init's: the caller never has to reap it and holds no handle on it.
_LAUNCH = """
import os, sys
pid = os.fork()
if pid == 0:
    try:
        os.setsid()
        os.dup2(os.open(os.devnull, os.O_WRONLY), 1)
        os.execv(sys.argv[1], sys.argv[1:])
    except OSError as exc:
        os.write(2, f"dvc-task: cannot start the runner: {exc}\\n".encode())
    os._exit(127)
print(pid)
"""

#: Seconds a command gets to exit after SIGTERM when its runner is stopped.
_STOP_GRACE_S = 3.0
#: Longest wait of spawn() for its runner to record the started command.
_RECORD_WAIT_S = 30.0


def _own_group_kwargs() -> dict[str, Any]:
    # The command leads its own process group, so that a group signal reaches
    # it and all its children but never the runner (a worker, say).
    if sys.version_info >= (3, 11):
        return {"process_group": 0}
    # preexec_fn may deadlock in a threaded program (a threads-pool worker):
    # a new session makes the command lead its own process group too.
    return {"start_new_session": True}  # pragma: no cover - Python < 3.11


def _write_pidfile(path: str, pid: int) -> None:
    # Written in place, as 0.40 did: readers go by <name>.json, whose pid is
    # written before this file is.
    fd = open_regular(path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC)
    try:
        os.write(fd, str(pid).encode("ascii"))
    finally:
        os.close(fd)


class ManagedProcess(AbstractContextManager["ManagedProcess"]):
    """A command whose stdout and stderr are appended to ``<wdir>/<name>.out``.

    ``<name>.json`` (see :class:`ProcessInfo`) and ``<name>.pid`` record it.
    The command leads its own process group. Interactive commands (reading
    stdin) are not supported: stdin is ``/dev/null``.
    """

    def __init__(
        self,
        args: str | list[str],
        env: dict[str, str] | None = None,
        wdir: str | os.PathLike[str] | None = None,
        name: str | None = None,
        cwd: str | os.PathLike[str] | None = None,
    ) -> None:
        """Prepare the command (nothing runs yet).

        Arguments:
            args: the command, a list or a string split like a POSIX shell does.
            env: environment of the command (default: this one's).
            wdir: folder of the output and record files (default: current one).
            name: the process name (default: a short uuid).
            cwd: the command's working directory (default: the caller's).

        Raises:
            ValueError: a name that would escape ``wdir``, or an empty command.
        """
        self.args: list[str] = (
            shlex.split(args, posix=os.name == "posix")
            if isinstance(args, str)
            else [str(arg) for arg in args]
        )
        if not self.args:
            raise ValueError("empty command: give the program to run and its arguments")
        self.env = env
        self.wdir = os.fspath(wdir) if wdir is not None else None
        self.cwd = os.fspath(cwd) if cwd is not None else None
        self.name = check_name(name) if name is not None else uuid()
        self.returncode: int | None = None
        self._proc: subprocess.Popen[bytes] | None = None
        self._out: IO[bytes] | None = None
        self._create_time: float | None = None
        self._started_at: str | None = None
        self._finished_at: str | None = None
        self._runner_pid: int | None = None
        self._runner_create_time: float | None = None
        self._start_id: str | None = None
        self._runner_start_id: str | None = None

    def __enter__(self) -> ManagedProcess:
        if self._proc is None:
            self.run()
        return self

    def __exit__(self, *exc_info: object) -> None:
        self.wait()

    def _make_path(self, filename: str) -> str:
        return os.path.join(self.wdir, filename) if self.wdir else filename

    @cached_property
    def stdout_path(self) -> str:
        """Path of the output file (stdout and stderr)."""
        return self._make_path(f"{self.name}.out")

    @cached_property
    def info_path(self) -> str:
        """Path of the process information file."""
        return self._make_path(f"{self.name}.json")

    @cached_property
    def pidfile_path(self) -> str:
        """Path of the pid file."""
        return self._make_path(f"{self.name}.pid")

    @property
    def pid(self) -> int:
        """The pid of the command.

        Raises:
            ValueError: the process was not started.
        """
        if self._proc is None:
            raise ValueError(f"process '{self.name}' has not been started")
        return self._proc.pid

    @property
    def info(self) -> ProcessInfo:
        """What is known about the process now."""
        return ProcessInfo(
            pid=self.pid,
            stdin=None,
            stdout=self.stdout_path,
            stderr=None,
            returncode=self.returncode,
            create_time=self._create_time,
            started_at=self._started_at,
            finished_at=self._finished_at,
            args=self.args,
            runner_pid=self._runner_pid,
            runner_create_time=self._runner_create_time,
            start_id=self._start_id,
            runner_start_id=self._runner_start_id,
        )

    def _make_wdir(self) -> bool:
        """Create the folder (0700) or check the existing one; whether it is new.

        A folder this call made is private by construction: it needs no
        check, and holds no record of an earlier run.
        """
        if not self.wdir:
            return False
        try:
            os.mkdir(self.wdir, 0o700)
            return True
        except FileNotFoundError:
            makedirs(self.wdir, exist_ok=True, mode=0o700)
        except FileExistsError:
            pass
        check_private(Path(self.wdir))
        return False

    def _dump(self) -> None:
        self.info.dump(self.info_path)

    def run(self) -> None:
        """Start the command.

        A previous run of the same name whose runner died (kill -9) while its
        command went on is stopped first, so that a job run again after a
        worker crash never runs twice at once.

        Raises:
            OSError: the program cannot be started (nothing is recorded then).
            ProcessNotTerminatedError: a live runner still runs that name.
        """
        if not self._make_wdir():
            self._stop_orphan()
        logger.debug("Appending output of '%s' to '%s'", self.name, self.stdout_path)
        fd = open_regular(self.stdout_path, os.O_WRONLY | os.O_CREAT | os.O_APPEND)
        self._out = os.fdopen(fd, "ab")
        try:
            self._proc = subprocess.Popen(
                self.args,
                stdin=subprocess.DEVNULL,
                stdout=self._out,
                stderr=subprocess.STDOUT,
                close_fds=True,
                env=self.env,
                cwd=self.cwd,
                **_own_group_kwargs(),
            )
            self._create_time = process_create_time(self._proc.pid)
            self._start_id = process_start_id(self._proc.pid)
            self._runner_pid = os.getpid()
            self._runner_create_time = process_create_time(self._runner_pid)
            self._runner_start_id = process_start_id(self._runner_pid)
            self._started_at = utc_now()
            with folder_lock(self.wdir or os.curdir):  # no loss written over it
                self._dump()
            _write_pidfile(self.pidfile_path, self._proc.pid)
        except BaseException:
            if self._proc is not None:
                self._proc.kill()
                self._proc.wait()
            self._close_output()
            raise

    def _stop_orphan(self) -> None:
        try:
            old = ProcessInfo.load(self.info_path)
        except (FileNotFoundError, InvalidProcessInfoError):
            return
        if old.returncode is not None or old.runner_pid is None:
            return
        if old.runner_alive():
            raise ProcessNotTerminatedError(self.name)
        if not old.command_alive():
            return
        logger.warning(
            "Stopping process %d of '%s': its runner died; running it again",
            old.pid,
            self.name,
        )
        try:
            job = signal_job(old.pid, signal.SIGKILL, group=True)
        except ProcessLookupError:
            return
        wait_gone(job, _STOP_GRACE_S)

    def _close_output(self) -> None:
        if self._out is not None:
            self._out.close()
            self._out = None

    def wait(self, timeout: float | None = None) -> int | None:
        """Wait for the command to finish and record its return code.

        If waiting is interrupted (e.g. Ctrl-C), the command's process group
        is stopped and its return code recorded before the interrupt goes on.

        Raises:
            TimeoutExpired: ``timeout`` seconds passed and it still runs.
        """
        if self.returncode is not None or self._proc is None:
            return self.returncode
        try:
            self._proc.wait(timeout=timeout)
        except subprocess.TimeoutExpired as exc:
            raise TimeoutExpired(exc.cmd, exc.timeout) from exc
        except BaseException:
            self._stop_group()
            self._finish()
            raise
        self._finish()
        return self.returncode

    def _stop_group(self) -> None:
        assert self._proc is not None
        for sig in (signal.SIGTERM, signal.SIGKILL):
            try:
                os.killpg(self._proc.pid, sig)
            except ProcessLookupError:
                pass
            try:
                self._proc.wait(timeout=_STOP_GRACE_S)
                return
            except subprocess.TimeoutExpired:
                continue

    def _finish(self) -> None:
        assert self._proc is not None
        self.returncode = self._proc.returncode
        self._finished_at = utc_now()
        self._close_output()
        try:
            # Durable: the return code is what must survive a power cut.
            self.info.dump_core(self.info_path, fsync=True)
        except FileNotFoundError:
            # The process folder was removed (e.g. remove(force=True)).
            logger.debug("'%s' was removed before it finished", self.name)

    @classmethod
    def spawn(cls, *args: Any, **kwargs: Any) -> int | None:
        """Run the command from a detached runner; return the runner's pid.

        The runner starts in a new session (its own process group), with
        stdin and stdout on ``/dev/null`` and stderr appended to the output
        file, so it outlives the caller and holds none of its pipes. A
        short-lived launcher forks it, so it is not the caller's child either:
        nothing for the caller to reap or to be warned about.

        Raises:
            ValueError: as the constructor.
            DvcTaskError: the runner could not be started.
        """
        proc = cls(*args, **kwargs)
        proc._make_wdir()
        spec = {
            "class": f"{cls.__module__}:{cls.__qualname__}",
            "args": proc.args,
            "env": proc.env,
            "wdir": proc.wdir,
            "name": proc.name,
            "cwd": proc.cwd,
        }
        runner = module_command("dvc_task.proc.runner", json.dumps(spec))
        fd = open_regular(proc.stdout_path, os.O_WRONLY | os.O_CREAT | os.O_APPEND)
        try:
            launcher = subprocess.run(
                [sys.executable, "-I", "-S", "-c", _LAUNCH, *runner],
                stdin=subprocess.DEVNULL,
                stdout=subprocess.PIPE,
                stderr=fd,
                close_fds=True,
                check=False,
            )
        finally:
            os.close(fd)
        if launcher.returncode:
            raise DvcTaskError(
                f"could not start a runner for '{proc.name}': see {proc.stdout_path}"
            )
        runner_pid = int(launcher.stdout)
        proc._wait_recorded(runner_pid)
        return runner_pid

    def _wait_recorded(self, runner_pid: int) -> None:
        # Once spawn() returns, the process is known by name (get, follow,
        # kill work at once), unless its runner failed.
        waiter = FolderWaiter(Path(self.info_path).parent, 0.005, events=NEW_FILES)
        try:
            deadline = time.monotonic() + _RECORD_WAIT_S
            while not os.path.exists(self.info_path):
                if not process_alive(runner_pid) or time.monotonic() > deadline:
                    raise DvcTaskError(
                        f"the runner of '{self.name}' did not start it: see "
                        f"{self.stdout_path}"
                    )
                waiter.wait(0.05)
        finally:
            waiter.close()
