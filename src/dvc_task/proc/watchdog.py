"""A worker's watchdog: the commands a process started end when it does.

A job's command runs in a process group of its own, so that a signal to the
worker (Ctrl-C in its terminal) does not reach it. Were the worker killed
(SIGKILL, the out-of-memory killer), the command would run on with nobody
to record its end. The watchdog is a small process of its own session,
started by the worker at its first command: the worker tells it, through a
pipe, each command it starts and ends; when the pipe closes, whatever way
the worker ended, the watchdog stops every command still told of, with the
processes they started (SIGTERM, then SIGKILL after a grace period), and
exits. Unlike ``PR_SET_PDEATHSIG`` it does not depend on which thread
started a command, and it works on every POSIX system.

Run as ``python -m dvc_task.proc.watchdog``; a line on its stdin is
``+PID START`` (guard) or ``-PID`` (the command ended), ``START`` being the
:func:`~dvc_task.proc.info.process_start_id` that tells that process from a
later one with the same pid.
"""

from __future__ import annotations

import contextlib
import signal
import subprocess
import sys
import threading
from collections.abc import Iterator
from typing import IO

import psutil

from dvc_task.proc.info import process_alive
from dvc_task.proc.tree import descendants, signal_job, wait_ended

#: Seconds the commands get between SIGTERM and SIGKILL.
GRACE_S = 3.0


class Watchdog:
    """Stops the guarded commands of this process when it ends (see above)."""

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._proc: subprocess.Popen[bytes] | None = None
        self._guarded: dict[int, str] = {}

    @contextlib.contextmanager
    def guarding(self, pid: int, start_id: str | None) -> Iterator[None]:
        """Guard command ``pid`` while the block runs (it waits for it)."""
        with self._lock:
            self._guarded[pid] = start_id or "-"
            self._tell(f"+{pid} {start_id or '-'}")
        try:
            yield
        finally:
            with self._lock:
                del self._guarded[pid]
                self._tell(f"-{pid}")

    def close(self) -> None:
        """Let the watchdog go (the worker stops): it stops what is guarded."""
        with self._lock:
            self._close()

    def _close(self) -> None:
        proc, self._proc = self._proc, None
        if proc is None:
            return
        if proc.stdin is not None:
            with contextlib.suppress(OSError):
                proc.stdin.close()
        proc.wait()

    def start(self) -> None:
        """Have the watchdog ready (before a command starts: none is missed)."""
        with self._lock:
            proc = self._proc
            if proc is None or proc.poll() is not None:
                self._tell("")

    def _tell(self, line: str) -> None:
        """Send ``line`` to the watchdog (started, or started again, first)."""
        proc = self._proc
        if proc is None or proc.poll() is not None:
            self._close()  # one that died: reaped, its pipe closed
            proc = self._proc = subprocess.Popen(
                [sys.executable, "-m", __name__],
                stdin=subprocess.PIPE,
                stdout=subprocess.DEVNULL,
                start_new_session=True,
            )
            # A watchdog started again learns every command guarded now.
            line = "\n".join(f"+{pid} {sid}" for pid, sid in self._guarded.items())
        if not line:
            return
        stdin: IO[bytes] | None = proc.stdin
        assert stdin is not None
        try:
            stdin.write(f"{line}\n".encode())
            stdin.flush()
        except BrokenPipeError:
            self._close()  # it died: started again at the next line


#: The watchdog of this process.
WATCHDOG = Watchdog()


def stop_commands(guarded: dict[int, str]) -> None:
    """Stop the commands ``pid -> start id`` and what they started."""
    procs: list[psutil.Process] = []
    for pid, start_id in guarded.items():
        if not process_alive(pid, None, None if start_id == "-" else start_id):
            continue  # ended, and the pid may be another process's now
        for each in (pid, *descendants(pid)):
            with contextlib.suppress(psutil.Error):
                procs.append(psutil.Process(each))
        with contextlib.suppress(ProcessLookupError):
            signal_job(pid, signal.SIGTERM, group=True)
    for proc in wait_ended(procs, GRACE_S):
        with contextlib.suppress(psutil.Error):
            proc.kill()


def main() -> int:
    """Read what the worker tells until it is gone; then stop what is left."""
    signal.signal(signal.SIGINT, signal.SIG_IGN)
    guarded: dict[int, str] = {}
    for raw in sys.stdin.buffer:
        line = raw.decode("ascii", "replace").split()
        if not line or not line[0][1:].isdigit():
            continue
        pid = int(line[0][1:])
        if line[0][0] == "+":
            guarded[pid] = line[1] if len(line) > 1 else "-"
        else:
            guarded.pop(pid, None)
    stop_commands(guarded)
    return 0


if __name__ == "__main__":
    sys.exit(main())
