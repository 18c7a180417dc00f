"""What is recorded about a managed process, and whether it still runs.

``<name>.json`` keeps exactly the fields of dvc-task 0.40, so 0.40 can still
read it; what we record besides (start time of the pid, start and finish
times, command line) goes to ``<name>.meta.json`` beside it.
"""

from __future__ import annotations

import json
import os
import re
from dataclasses import asdict, dataclass, fields
from datetime import datetime, timezone
from pathlib import Path
from typing import Any

import psutil

from dvc_task.proc.exceptions import InvalidProcessInfoError
from dvc_task.utils import StrPath

#: ``returncode`` recorded for a process found dead without one: its runner
#: died (kill -9, OOM, reboot) before it could record the real one.
LOST_RETURNCODE = -1
#: Start times of the same process read twice agree far better than this.
_CREATE_TIME_TOLERANCE_S = 0.05
#: No system hands out pids this large (Linux stops at 2**22).
_PID_LIMIT = 2**31
_CORE_FIELDS = ("pid", "stdin", "stdout", "stderr", "returncode")
#: Longest name in UTF-8 bytes: ``<name>.meta.json`` must still fit in the
#: 255 bytes a file name may have.
MAX_NAME_BYTES = 200
_BAD_NAME = re.compile(r"[/\\\x00-\x1f\x7f]|\.\.")


def is_valid_name(name: str) -> bool:
    """Whether ``name`` can name a process folder (no path tricks)."""
    return (
        isinstance(name, str)
        and name not in ("", ".")
        and not _BAD_NAME.search(name)
        and len(name.encode("utf-8", "surrogateescape")) <= MAX_NAME_BYTES
    )


def check_name(name: str, what: str = "process") -> str:
    """Return ``name`` if it is safe as a file name, else raise ``ValueError``.

    ``what`` names the thing in the error message (a process, a job).
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


def utc_now() -> str:
    """The current time, UTC, ISO 8601."""
    return datetime.now(timezone.utc).isoformat()


def write_json_atomic(path: Path, data: Any) -> None:
    """Write ``data`` as JSON to ``path`` through a temporary file (0600)."""
    tmp = path.with_name(f".{path.name}.{os.getpid()}.tmp")
    payload = json.dumps(data).encode("utf-8")
    fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    try:
        with os.fdopen(fd, "wb") as fobj:
            fobj.write(payload)
        os.replace(tmp, path)
    except BaseException:
        try:
            os.unlink(tmp)
        except FileNotFoundError:
            pass
        raise


def _meta_path(path: str) -> str:
    if path.endswith(".json"):
        return f"{path[:-5]}.meta.json"
    return f"{path}.meta.json"


def _read_json(path: str) -> Any:
    with open(path, "rb") as fobj:
        data = fobj.read()
    if not data.strip():
        raise InvalidProcessInfoError(str(path), "the file is empty")
    try:
        return json.loads(data)
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

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> ProcessInfo:
        """Build from a dict; unknown keys are ignored, optional ones may be missing.

        Raises:
            ValueError: not a dict, no integer ``pid``, or a field of the wrong type.
        """
        if not isinstance(data, dict):
            raise ValueError("process information is not a JSON object")
        known: dict[str, Any] = {}
        for field in fields(cls):
            if field.name not in data:
                continue
            value = data[field.name]
            if isinstance(value, bool) or not isinstance(value, _TYPES[field.name]):
                raise ValueError(f"field '{field.name}' has a bad value {value!r}")
            known[field.name] = value
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
        data = _read_json(path)
        if not isinstance(data, dict):
            raise InvalidProcessInfoError(path, "not a JSON object")
        try:
            meta = _read_json(_meta_path(path))
        except (FileNotFoundError, InvalidProcessInfoError):
            meta = None
        if isinstance(meta, dict) and meta.get("pid") == data.get("pid"):
            data = {**meta, **data}
        try:
            return cls.from_dict(data)
        except ValueError as exc:
            raise InvalidProcessInfoError(path, str(exc)) from None

    def asdict(self) -> dict[str, Any]:
        """All fields as a dict."""
        return asdict(self)

    def dump(self, filename: StrPath) -> None:
        """Write atomically: 0.40's fields to ``filename``, the rest beside it."""
        path = Path(filename)
        data = self.asdict()
        extra = {k: v for k, v in data.items() if k not in _CORE_FIELDS}
        if any(v is not None for v in extra.values()):
            # Written first: the main file's returncode is what counts.
            meta = Path(_meta_path(os.fspath(path)))
            write_json_atomic(meta, {"pid": self.pid, **extra})
        write_json_atomic(path, {k: data[k] for k in _CORE_FIELDS})

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
            self.runner_pid, self.runner_create_time
        )

    def command_alive(self) -> bool:
        """Whether the recorded command itself still runs."""
        return process_alive(self.pid, self.create_time)


def process_alive(pid: int, create_time: float | None = None) -> bool:
    """Whether ``pid`` runs (not a zombie) and, if given, started at ``create_time``."""
    try:
        proc = psutil.Process(pid)
        if create_time is not None and (
            abs(proc.create_time() - create_time) > _CREATE_TIME_TOLERANCE_S
        ):
            return False
        return bool(proc.status() != psutil.STATUS_ZOMBIE)
    except psutil.NoSuchProcess:
        return False
    except psutil.AccessDenied:
        return True


def process_create_time(pid: int) -> float | None:
    """Start time of ``pid`` as psutil reports it, or None if it is gone."""
    try:
        return float(psutil.Process(pid).create_time())
    except psutil.Error:
        return None
