"""The operating system's own timer runs ``dvc-task schedule tick`` each minute.

Where a systemd user manager runs, a user timer and its service
(``~/.config/systemd/user/dvc-task-tick-<id>.{timer,service}``, ``<id>``
from the queue's folder); elsewhere one line of the user's crontab, marked
with that id. :func:`uninstall` removes exactly what :func:`install` added.
"""

from __future__ import annotations

import hashlib
import os
import shlex
import shutil
import subprocess
from pathlib import Path

from dvc_task.exceptions import DvcTaskError
from dvc_task.files import unlink_quietly, write_atomic

_PREFIX = "dvc-task-tick-"


class TimerError(DvcTaskError):
    """The OS timer could not be set up or removed; the message says why."""


def unit_name(folder: Path) -> str:
    """``dvc-task-tick-<id>``: the name of the timer of the queue in ``folder``."""
    return _PREFIX + hashlib.sha256(str(folder).encode()).hexdigest()[:12]


def tick_command(folder: Path, python: str) -> list[str]:
    """The command the timer runs."""
    return [python, "-m", "dvc_task", "--dir", str(folder), "schedule", "tick"]


def _units_dir() -> Path:
    config = os.environ.get("XDG_CONFIG_HOME") or os.path.expanduser("~/.config")
    return Path(config) / "systemd" / "user"


def _systemd() -> bool:
    """Whether a systemd user manager answers here."""
    if shutil.which("systemctl") is None:
        return False
    done = subprocess.run(
        ["systemctl", "--user", "show-environment"],
        capture_output=True,
        check=False,
        timeout=30,
    )
    return done.returncode == 0


def _run(*args: str, stdin: str | None = None) -> subprocess.CompletedProcess[str]:
    try:
        return subprocess.run(
            list(args),
            input=stdin,
            capture_output=True,
            text=True,
            check=False,
            timeout=60,
        )
    except OSError as exc:
        raise TimerError(f"cannot run {args[0]}: {exc}") from None


def install(folder: Path, broker: str | None, python: str) -> str:
    """Have the OS run ``schedule tick`` for ``folder`` every minute; what was done.

    Raises:
        TimerError: neither systemd nor crontab could take it.
    """
    name = unit_name(folder)
    command = tick_command(folder, python)
    env = {"DVC_TASK_BROKER": broker} if broker else {}
    if _systemd():
        units = _units_dir()
        units.mkdir(parents=True, exist_ok=True)
        lines = [f'Environment="{k}={v}"' for k, v in env.items()]
        write_atomic(
            units / f"{name}.service",
            "\n".join(
                [
                    "[Unit]",
                    f"Description=dvc-task schedules of {folder}",
                    "[Service]",
                    "Type=oneshot",
                    *lines,
                    f"ExecStart={shlex.join(command)}",
                    "",
                ]
            ).encode(),
        )
        write_atomic(
            units / f"{name}.timer",
            "\n".join(
                [
                    "[Unit]",
                    f"Description=dvc-task schedules of {folder}, every minute",
                    "[Timer]",
                    "OnCalendar=*-*-* *:*:00",
                    "AccuracySec=1s",
                    "Persistent=true",
                    "[Install]",
                    "WantedBy=timers.target",
                    "",
                ]
            ).encode(),
        )
        for args in (("daemon-reload",), ("enable", "--now", f"{name}.timer")):
            done = _run("systemctl", "--user", *args)
            if done.returncode != 0:
                raise TimerError(
                    f"systemctl --user {' '.join(args)}: {done.stderr.strip()}"
                )
        return f"installed the systemd user timer {name}.timer (every minute)"
    prefix = " ".join(f"{k}={shlex.quote(v)}" for k, v in env.items())
    line = f"* * * * * {prefix + ' ' if prefix else ''}{shlex.join(command)} # {name}"
    kept = [entry for entry in _crontab() if not entry.endswith(f"# {name}")]
    _write_crontab([*kept, line])
    return f"installed a crontab line that runs 'schedule tick' every minute ({name})"


def uninstall(folder: Path) -> str:
    """Remove what :func:`install` added for ``folder``; what was done.

    Raises:
        TimerError: the OS's scheduler refused.
    """
    name = unit_name(folder)
    removed = []
    units = _units_dir()
    if (units / f"{name}.timer").exists():
        if _systemd():
            _run("systemctl", "--user", "disable", "--now", f"{name}.timer")
        for suffix in (".timer", ".service"):
            unlink_quietly(units / f"{name}{suffix}")
        if _systemd():
            _run("systemctl", "--user", "daemon-reload")
        removed.append(f"the systemd user timer {name}.timer")
    if shutil.which("crontab") is not None:
        lines = _crontab()
        kept = [entry for entry in lines if not entry.endswith(f"# {name}")]
        if kept != lines:
            _write_crontab(kept)
            removed.append("its crontab line")
    if not removed:
        return "nothing was installed for this queue"
    return f"removed {' and '.join(removed)}"


def _crontab() -> list[str]:
    """The user's crontab, line by line (none: empty)."""
    if shutil.which("crontab") is None:
        raise TimerError(
            "neither a systemd user manager nor crontab is available: run "
            "'dvc-task schedule tick' every minute some other way, or start a "
            "worker with --beat"
        )
    done = _run("crontab", "-l")
    return done.stdout.splitlines() if done.returncode == 0 else []


def _write_crontab(lines: list[str]) -> None:
    done = _run("crontab", "-", stdin="".join(f"{line}\n" for line in lines))
    if done.returncode != 0:
        raise TimerError(f"crontab: {done.stderr.strip()}")
