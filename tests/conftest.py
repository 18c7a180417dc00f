"""Fixtures shared by the whole suite: waiting on conditions, child processes."""

from __future__ import annotations

import compileall
import fcntl
import json
import os
import signal
import subprocess
import sys
import time
from collections.abc import Iterator
from datetime import datetime, timedelta, timezone
from pathlib import Path
from typing import Any, Callable

import psutil
import pytest

import dvc_task
from dvc_task.jobs import JobQueue
from dvc_task.proc import ProcessInfo, ProcessManager

HELPERS = Path(__file__).parent / "helpers"
SCRIPT = Path(sys.executable).parent / "dvc-task"
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


STRAY_MARK = "DVC_TASK_TEST_MARK"


def _marked(mark: str) -> list[psutil.Process]:
    found = []
    for proc in psutil.process_iter():
        if proc.pid == os.getpid():
            continue
        try:
            if proc.environ().get(STRAY_MARK) == mark and (
                proc.status() != psutil.STATUS_ZOMBIE
            ):
                found.append(proc)
        except (psutil.Error, OSError):
            continue
    return found


@pytest.fixture(autouse=True)
def no_strays(
    request: pytest.FixtureRequest, monkeypatch: pytest.MonkeyPatch
) -> Iterator[None]:
    """End every process the test started, also when it fails.

    Each test's processes inherit a mark in their environment (workers,
    detached runners and their commands included); whatever still runs with
    it after the test is killed.
    """
    mark = f"{os.getpid()}:{request.node.nodeid}"
    monkeypatch.setenv(STRAY_MARK, mark)
    yield
    strays = _marked(mark)
    for proc in strays:
        try:
            proc.kill()
        except psutil.Error:
            pass
    # Gone, or a zombie that its parent (maybe not us) has yet to reap.
    wait_for(lambda: not _marked(mark), "the test's processes to end", timeout=30)


@pytest.fixture
def umask() -> Iterator[Callable[[int], int]]:
    """Set the process umask for one test (restored after it)."""
    old = os.umask(0o022)
    yield os.umask
    os.umask(old)


def pytest_sessionstart(session: pytest.Session) -> None:
    """Run the package from bytecode, as a pip install leaves it.

    Under ``PYTHONDONTWRITEBYTECODE`` an editable install is compiled anew
    in every process the tests start (about 35 ms each, thousands of them).
    A module edited later is still read from its source: Python compares
    the times.
    """
    del session
    compileall.compile_dir(Path(dvc_task.__file__).parent, quiet=1)


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


# --- the command line ------------------------------------------------------


class Cli:
    """Runs ``dvc-task`` on one queue folder, from a chosen directory."""

    def __init__(self, folder: Path, cwd: Path, env: dict[str, str]) -> None:
        self.folder = folder
        self.cwd = cwd
        self.env = {**env, "DVC_TASK_DIR": str(folder)}

    def __call__(
        self,
        *args: str,
        check: int | None = 0,
        cwd: Path | None = None,
        env: dict[str, str] | None = None,
        timeout: float = 300,
    ) -> subprocess.CompletedProcess[str]:
        done = subprocess.run(
            [str(SCRIPT), *args],
            capture_output=True,
            text=True,
            env={**self.env, **(env or {})},
            cwd=cwd or self.cwd,
            timeout=timeout,
            check=False,
        )
        if check is not None:
            assert done.returncode == check, (done.stdout, done.stderr)
        return done

    def states(self) -> dict[str, dict[str, Any]]:
        """``name -> status --json row``."""
        rows = json.loads(self("status", "--json").stdout)
        return {row["name"]: row for row in rows}

    def state(self, name: str) -> str | None:
        """The state of job ``name`` (None if it is not listed)."""
        row = self.states().get(name)
        return None if row is None else str(row["state"])

    def wait_state(self, name: str, *states: str, timeout: float = 120) -> None:
        """Wait until job ``name`` is in one of ``states``."""
        wait_for(
            lambda: self.state(name) in states,
            f"job {name} to be {' or '.join(states)}",
            timeout=timeout,
        )

    def workers(self) -> list[dict[str, Any]]:
        """``workers --json``."""
        found: list[dict[str, Any]] = json.loads(self("workers", "--json").stdout)
        return found


def end_all(folder: Path) -> None:
    """Kill every job process and worker of ``folder``, and wait for them."""
    if not (folder / "jobs").is_dir():
        return
    queue = JobQueue(folder)
    for job in queue.jobs():
        if job.pid is not None and job.pid > 1 and not job.finished:
            try:
                os.killpg(job.pid, signal.SIGKILL)
            except ProcessLookupError:
                pass

    def killed_all() -> bool:
        # A worker being spawned has no pid yet: killed once it has one.
        workers = queue.workers()
        for worker in workers:
            if worker.pid is not None and worker.pid > 1:
                try:
                    os.kill(worker.pid, signal.SIGKILL)
                except ProcessLookupError:
                    pass
        return not workers

    wait_for(killed_all, "the workers to be gone", timeout=30)


@pytest.fixture
def queue(tmp_path: Path) -> Iterator[JobQueue]:
    """A ``JobQueue`` on ``tmp_path/q``; its jobs and workers end with the test."""
    folder = tmp_path / "q"
    try:
        yield JobQueue(folder)
    finally:
        end_all(folder)


@pytest.fixture
def cli(tmp_path: Path, processes: Processes) -> Iterator[Cli]:
    """``dvc-task`` on ``tmp_path/q``; its jobs and workers end with the test."""
    folder = tmp_path / "q"
    runner = Cli(folder, tmp_path, processes.env)
    try:
        yield runner
    finally:
        end_all(folder)


class JobsLock:
    """Holds the jobs folder's lock: workers stop before they start a job."""

    def __init__(self, folder: Path) -> None:
        (folder / "jobs").mkdir(mode=0o700, parents=True, exist_ok=True)
        self.fd = os.open(folder / "jobs" / ".lock", os.O_RDWR | os.O_CREAT, 0o600)
        fcntl.flock(self.fd, fcntl.LOCK_EX)

    def release(self) -> None:
        if self.fd >= 0:
            os.close(self.fd)
            self.fd = -1


def age_record(folder: Path, name: str, seconds: float) -> None:
    """Make job ``name``'s record look ``seconds`` older (past being queued)."""
    path = folder / "jobs" / f"{name}.json"
    data = json.loads(path.read_text())
    for key in ("submitted_at", "queued_at"):
        if data.get(key):
            when = datetime.fromisoformat(data[key]) - timedelta(seconds=seconds)
            data[key] = when.astimezone(timezone.utc).isoformat()
    path.write_text(json.dumps(data))


def sigkill_the_worker(queue: JobQueue) -> None:
    """Kill the queue's only worker with SIGKILL and wait until it is gone."""
    (worker,) = queue.workers()
    assert worker.pid is not None
    assert worker.pid > 1  # never signal our own process group
    os.kill(worker.pid, signal.SIGKILL)
    wait_for(lambda: not queue.workers(), "the worker to be gone")
