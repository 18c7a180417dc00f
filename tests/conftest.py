"""Fixtures shared by the whole suite: waiting on conditions, child processes."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any, Callable

import pytest

from dvc_task.proc import ProcessInfo, ProcessManager

HELPERS = Path(__file__).parent / "helpers"
TASKAPP = HELPERS / "taskapp.py"


def wait_for(
    predicate: Callable[[], Any], what: str, timeout: float = 60, interval: float = 0.02
) -> Any:
    """Poll ``predicate`` until it returns something truthy; fail after ``timeout``."""
    deadline = time.monotonic() + timeout
    while True:
        result = predicate()
        if result:
            return result
        if time.monotonic() > deadline:
            pytest.fail(f"timed out after {timeout}s waiting for {what}")
        time.sleep(interval)


def wait_finished(manager: ProcessManager, name: str, what: str) -> ProcessInfo:
    """Wait until process ``name`` is recorded finished; its record."""

    def finished() -> ProcessInfo | None:
        info = manager.get(name)
        return info if info is not None and info.returncode is not None else None

    result: ProcessInfo = wait_for(finished, what)
    return result


def lines(path: Path) -> list[str]:
    """Words a job wrote to ``path``, one per job (empty if none yet)."""
    return path.read_text().split() if path.exists() else []


class Processes:
    """Child processes started by a test, each in its own session.

    Every one still alive at the end of the test is killed with its whole
    process group, and the pipes to all of them are closed.
    """

    def __init__(self, env: dict[str, str]) -> None:
        self.env = env
        self.started: list[subprocess.Popen[bytes]] = []

    def start(
        self, *args: str | os.PathLike[str], **kwargs: Any
    ) -> subprocess.Popen[bytes]:
        kwargs.setdefault("env", self.env)
        proc = subprocess.Popen(
            [os.fspath(a) for a in args], start_new_session=True, **kwargs
        )
        self.started.append(proc)
        return proc

    def worker(
        self, wdir: Path, name: str = "w1", log: Path | None = None, **options: Any
    ) -> subprocess.Popen[bytes]:
        """Start ``tests/helpers/taskapp.py`` as a temporary worker on ``wdir``."""
        out = open(log or wdir / f"{name}.log", "ab")  # noqa: SIM115 - closed below
        try:
            return self.start(
                sys.executable,
                TASKAPP,
                "worker",
                wdir,
                name,
                json.dumps(options),
                stdout=out,
                stderr=subprocess.STDOUT,
            )
        finally:
            out.close()

    def kill_all(self) -> None:
        for proc in self.started:
            if proc.poll() is None:
                try:
                    os.killpg(proc.pid, signal.SIGKILL)
                except ProcessLookupError:
                    pass
                proc.wait()
            for pipe in (proc.stdin, proc.stdout, proc.stderr):
                if pipe is not None:
                    pipe.close()


@pytest.fixture
def umask() -> Iterator[Callable[[int], int]]:
    """Set the process umask for one test (restored after it)."""
    old = os.umask(0o022)
    yield os.umask
    os.umask(old)


def pytest_addoption(parser: pytest.Parser) -> None:
    parser.addoption(
        "--full",
        action="store_true",
        help="run the reliability suite at full size (nox -s reliability)",
    )


@pytest.fixture
def full(request: pytest.FixtureRequest) -> bool:
    """Whether the reliability suite runs at full size."""
    return bool(request.config.getoption("--full"))


@pytest.fixture(scope="session")
def figures() -> Iterator[dict[str, Any]]:
    """Figures the reliability tests report; printed (and saved) at the end."""
    collected: dict[str, Any] = {}
    yield collected
    if collected:
        text = json.dumps(collected, indent=2, sort_keys=True)
        print(f"\nreliability figures:\n{text}")
        target = os.environ.get("DVC_TASK_FIGURES")
        if target:
            Path(target).write_text(text)


@pytest.fixture
def processes() -> Iterator[Processes]:
    env = dict(os.environ)
    env["PYTHONPATH"] = os.pathsep.join(
        p for p in (str(HELPERS), env.get("PYTHONPATH", "")) if p
    )
    procs = Processes(env)
    try:
        yield procs
    finally:
        procs.kill_all()


@pytest.fixture
def wdir(tmp_path: Path) -> Path:
    path = tmp_path / "queue"
    path.mkdir()
    return path
