"""What is recorded about a managed process, and whether it still runs.

``<name>.json`` keeps exactly the fields of dvc-task 0.40, so 0.40 can still
read it; what we record besides (start time of the pid, start time, command
line, runner) goes to ``<name>.meta.json`` beside it, written once when the
process starts. The finish time is when ``<name>.json`` got its return code:
its modification time, unless ``finished_at`` was recorded explicitly.
"""

from __future__ import annotations

import functools
import json
import os
from dataclasses import dataclass, field, fields
from datetime import datetime, timezone
from pathlib import Path
from typing import Any

from dvc_task.files import NotARegularFileError, open_regular, write_atomic
from dvc_task.proc.exceptions import InvalidProcessInfoError
from dvc_task.utils import StrPath

#: ``returncode`` recorded for a process found dead without one: its runner
#: died (kill -9, OOM, reboot) before it could record the real one.
LOST_RETURNCODE = -1
#: Start times of the same process read twice agree far better than this.
_CREATE_TIME_TOLERANCE_S = 0.05
#: File times come from a coarse clock, start times are whole ticks.
_RECORD_TIME_SLACK_S = 1.0
#: No system hands out pids this large (Linux stops at 2**22).
_PID_LIMIT = 2**31
_CORE_FIELDS = ("pid", "stdin", "stdout", "stderr", "returncode")


def utc_now() -> str:
    """The current time, UTC, ISO 8601."""
    return datetime.now(timezone.utc).isoformat()


def write_json_atomic(path: Path, data: Any, fsync: bool = False) -> None:
    """Write ``data`` as JSON to ``path`` atomically (0600)."""
    write_atomic(path, json.dumps(data).encode("utf-8"), fsync=fsync)


def _meta_path(path: str) -> str:
    if path.endswith(".json"):
        return f"{path[:-5]}.meta.json"
    return f"{path}.meta.json"


def _finish_time(mtime: float, started_at: Any) -> str:
    """When a process finished: the time its record got the return code.

    File times come from a coarse kernel clock, which may read a little
    earlier than the start time taken just before: never before the start.
    """
    finished = datetime.fromtimestamp(mtime, timezone.utc)
    if isinstance(started_at, str):
        try:
            finished = max(finished, datetime.fromisoformat(started_at))
        except (ValueError, TypeError):
            pass
    return finished.isoformat()


def _read_json(path: str) -> tuple[Any, float]:
    """The JSON in ``path`` and the file's modification time."""
    try:
        fd = open_regular(path)
    except NotARegularFileError as exc:
        raise InvalidProcessInfoError(str(path), str(exc)) from None
    with os.fdopen(fd, "rb") as fobj:
        data = fobj.read()
        mtime = os.fstat(fobj.fileno()).st_mtime
    if not data.strip():
        raise InvalidProcessInfoError(str(path), "the file is empty")
    try:
        return json.loads(data), mtime
    except ValueError as exc:
        raise InvalidProcessInfoError(str(path), f"not JSON ({exc})") from None


_TYPES: dict[str, tuple[type, ...]] = {
    "pid": (int,),
    "stdin": (str, type(None)),
    "stdout": (str, type(None)),
    "stderr": (str, type(None)),
    "returncode": (int, type(None)),
    "create_time": (float, int, type(None)),
    "started_at": (str, type(None)),
    "finished_at": (str, type(None)),
    "args": (list, type(None)),
    "runner_pid": (int, type(None)),
    "runner_create_time": (float, int, type(None)),
    "start_id": (str, type(None)),
    "runner_start_id": (str, type(None)),
}


@dataclass
class ProcessInfo:
    """What is known about a managed process.

    The first five fields are dvc-task 0.40's; the others are optional.
    """

    pid: int
    stdin: str | None = None
    stdout: str | None = None
    stderr: str | None = None
    returncode: int | None = None
    #: psutil's ``create_time`` of ``pid``: tells the process from a later
    #: one that got the same pid.
    create_time: float | None = None
    started_at: str | None = None
    finished_at: str | None = None
    args: list[str] | None = None
    #: The process that waits for this one and records its return code.
    runner_pid: int | None = None
    runner_create_time: float | None = None
    #: ``<boot id>:<start time in clock ticks since boot>`` of ``pid`` and of
    #: the runner: who they are, whatever the wall clock does (Linux).
    start_id: str | None = None
    runner_start_id: str | None = None
    #: When ``<name>.json`` was last written (read from the file, never
    #: stored): for a record without start times (dvc-task 0.40's), a process
    #: that started after it is not the one recorded.
    recorded_at: float | None = field(default=None, init=False, compare=False)

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> ProcessInfo:
        """Build from a dict; unknown keys are ignored, optional ones may be missing.

        Raises:
            ValueError: not a dict, no integer ``pid``, or a field of the wrong type.
        """
        if not isinstance(data, dict):
            raise ValueError("process information is not a JSON object")
        known: dict[str, Any] = {}
        for name in _FIELD_NAMES:
            if name not in data:
                continue
            value = data[name]
            if isinstance(value, bool) or not isinstance(value, _TYPES[name]):
                raise ValueError(f"field '{name}' has a bad value {value!r}")
            known[name] = value
        if "pid" not in known:
            raise ValueError("no 'pid' field")
        if not 1 < known["pid"] < _PID_LIMIT:
            # 0 and negative pids name process groups, 1 is init: never ours.
            raise ValueError(f"'pid' {known['pid']} cannot be a managed process")
        return cls(**known)

    @classmethod
    def load(cls, filename: StrPath) -> ProcessInfo:
        """Read from ``filename`` (and its ``.meta.json`` beside it, if any).

        Raises:
            FileNotFoundError: no such file.
            InvalidProcessInfoError: the file is empty, not JSON or malformed.
        """
        path = os.fspath(filename)
        data, mtime = _read_json(path)
        if not isinstance(data, dict):
            raise InvalidProcessInfoError(path, "not a JSON object")
        try:
            meta, _ = _read_json(_meta_path(path))
        except (FileNotFoundError, InvalidProcessInfoError):
            meta = None
        if isinstance(meta, dict) and meta.get("pid") == data.get("pid"):
            data = {**meta, **data}
            if data.get("finished_at") is None and data.get("returncode") is not None:
                data["finished_at"] = _finish_time(mtime, data.get("started_at"))
        try:
            info = cls.from_dict(data)
        except ValueError as exc:
            raise InvalidProcessInfoError(path, str(exc)) from None
        info.recorded_at = mtime
        return info

    def asdict(self) -> dict[str, Any]:
        """All fields as a dict (``args`` copied)."""
        data = {name: getattr(self, name) for name in _FIELD_NAMES}
        if self.args is not None:
            data["args"] = list(self.args)
        return data

    def dump(self, filename: StrPath) -> None:
        """Write atomically: 0.40's fields to ``filename``, the rest beside it."""
        data = self.asdict()
        extra = {k: v for k, v in data.items() if k not in _CORE_FIELDS}
        if any(v is not None for v in extra.values()):
            # Written first: the main file's returncode is what counts.
            meta = Path(_meta_path(os.fspath(filename)))
            write_json_atomic(meta, {"pid": self.pid, **extra})
        self.dump_core(filename)

    def dump_core(self, filename: StrPath, fsync: bool = False) -> None:
        """Write atomically only 0.40's fields to ``filename``.

        How a finished process is recorded: its ``.meta.json`` stays as it
        was written at the start, and the finish time is this file's.
        """
        data = self.asdict()
        write_json_atomic(
            Path(filename), {k: data[k] for k in _CORE_FIELDS}, fsync=fsync
        )

    def is_alive(self) -> bool:
        """Whether the process still runs, or its runner is yet to record it.

        While the runner lives it will record the return code, so the process
        counts as running. Without a live runner, a pid that is gone, a
        zombie, or a pid now used by a process with another start time count
        as not alive.
        """
        return self.runner_alive() or self.command_alive()

    def runner_alive(self) -> bool:
        """Whether the recorded runner (that waits for the command) still lives."""
        return self.runner_pid is not None and process_alive(
            self.runner_pid, self.runner_create_time, self.runner_start_id
        )

    def command_alive(self) -> bool:
        """Whether the recorded command itself still runs."""
        started_before = (
            self.recorded_at
            if self.create_time is None and self.start_id is None
            else None
        )
        return process_alive(
            self.pid, self.create_time, self.start_id, started_before=started_before
        )


def process_alive(
    pid: int,
    create_time: float | None = None,
    start_id: str | None = None,
    started_before: float | None = None,
) -> bool:
    """Whether ``pid`` runs (not a zombie) and is the process recorded.

    The recorded process is told by ``start_id`` (see :func:`process_start_id`)
    where the system has one: a clock step does not change it. Elsewhere, or
    for a record without it, by ``create_time`` (wall clock, within 50 ms).
    With neither, ``started_before`` (a wall-clock time it was recorded by)
    rules out a process that started later.
    """
    if start_id is not None:
        stat_fields = _proc_stat(pid)
        if stat_fields is not None:
            state, ticks = stat_fields
            return state not in _DEAD_STATES and f"{_boot_id()}:{ticks}" == start_id
        if _boot_id() is not None:
            return False  # /proc works, and has no such process
    import psutil  # noqa: PLC0415 - a listing on Linux does without it

    try:
        proc = psutil.Process(pid)
        started = proc.create_time()
        recorded = (
            create_time is None
            or abs(started - create_time) <= _CREATE_TIME_TOLERANCE_S
        )
        in_time = (
            started_before is None or started <= started_before + _RECORD_TIME_SLACK_S
        )
        return recorded and in_time and bool(proc.status() != psutil.STATUS_ZOMBIE)
    except psutil.NoSuchProcess:
        return False
    except psutil.AccessDenied:
        return True


def process_create_time(pid: int) -> float | None:
    """Start time of ``pid`` as psutil reports it, or None if it is gone."""
    return _own_create_time(pid) if pid == os.getpid() else _create_time(pid)


def process_start_id(pid: int) -> str | None:
    """``<boot id>:<start ticks>`` of ``pid``; None if gone or not on Linux.

    The start time in clock ticks since boot, with the boot it counts from,
    names a process for good: unlike a wall-clock start time it does not move
    when the clock is set (NTP, resume, ``date -s``).
    """
    return _own_start_id(pid) if pid == os.getpid() else _start_id(pid)


def _create_time(pid: int) -> float | None:
    stat_fields = _proc_stat(pid)
    boot = _boot_time()
    if stat_fields is not None and boot is not None:
        # psutil's own sum on Linux, without its reads of /proc (a job start
        # asks twice).
        return stat_fields[1] / _CLOCK_TICKS + boot
    import psutil  # noqa: PLC0415 - a listing on Linux does without it

    try:
        return float(psutil.Process(pid).create_time())
    except psutil.Error:
        return None


def _start_id(pid: int) -> str | None:
    boot = _boot_id()
    stat_fields = _proc_stat(pid) if boot is not None else None
    return None if stat_fields is None else f"{boot}:{stat_fields[1]}"


# This process's own, asked for every process it starts: read once. Keyed by
# pid, since a forked child (a pool process) asks with its own.
_own_create_time = functools.lru_cache(maxsize=4)(_create_time)
_own_start_id = functools.lru_cache(maxsize=4)(_start_id)


#: Clock ticks a second, the unit of a start time in /proc/<pid>/stat.
_CLOCK_TICKS = os.sysconf("SC_CLK_TCK") if hasattr(os, "sysconf") else 100
#: States of /proc/<pid>/stat of a process that has ended: zombie, dead.
_DEAD_STATES = ("Z", "X", "x")


@functools.lru_cache(maxsize=1)
def _boot_id() -> str | None:
    try:
        with open("/proc/sys/kernel/random/boot_id", encoding="ascii") as fobj:
            return fobj.read().strip() or None
    except OSError:
        return None


@functools.lru_cache(maxsize=1)
def _boot_time() -> float | None:
    """The system's boot time (``btime`` of ``/proc/stat``); None without it."""
    try:
        with open("/proc/stat", "rb") as fobj:
            for line in fobj:
                if line.startswith(b"btime "):
                    return float(line.split()[1])
    except (OSError, ValueError, IndexError):
        pass
    return None


def _proc_stat(pid: int) -> tuple[str, int] | None:
    """``(state, start ticks)`` from ``/proc/<pid>/stat``; None if unreadable."""
    try:
        with open(f"/proc/{int(pid)}/stat", "rb") as fobj:
            data = fobj.read()
    except OSError:
        return None
    # "pid (comm) state ppid ...": comm may hold spaces and parentheses.
    fields = data[data.rfind(b")") + 2 :].split()
    try:
        return fields[0].decode("ascii"), int(fields[19])
    except (IndexError, ValueError, UnicodeDecodeError):
        return None


_FIELD_NAMES = tuple(f.name for f in fields(ProcessInfo) if f.init)
