"""ManagedProcess: runs one command, records it, detaches when spawned."""

from __future__ import annotations

import json
import os
import stat
import subprocess
import sys
from datetime import datetime
from pathlib import Path

import psutil
import pytest

from dvc_task.proc import ManagedProcess, ProcessInfo, ProcessManager
from dvc_task.proc.exceptions import ProcessNotTerminatedError, TimeoutExpired

from conftest import Processes, wait_finished, wait_for

CORE = {"pid", "stdin", "stdout", "stderr", "returncode"}


def test_run_records_output_and_return_code(tmp_path: Path) -> None:
    wdir = tmp_path / "procs" / "job"
    with ManagedProcess(
        "sh -c 'echo out; echo err >&2; exit 3'", wdir=wdir, name="job"
    ) as proc:
        pass

    assert proc.returncode == 3
    assert Path(proc.stdout_path).read_text() == "out\nerr\n"
    record = json.loads(Path(proc.info_path).read_text())
    assert set(record) == CORE  # exactly what dvc-task 0.40 can read
    assert record["returncode"] == 3
    assert Path(proc.pidfile_path).read_text().strip() == str(proc.pid)
    info = ProcessInfo.load(proc.info_path)
    assert info.args == ["sh", "-c", "echo out; echo err >&2; exit 3"]
    assert datetime.fromisoformat(info.started_at or "").tzinfo is not None
    assert datetime.fromisoformat(info.finished_at or "") >= datetime.fromisoformat(
        info.started_at or ""
    )
    for path in (wdir, wdir.parent):
        assert stat.S_IMODE(path.stat().st_mode) == 0o700
    for path in wdir.iterdir():
        assert stat.S_IMODE(path.stat().st_mode) == 0o600, path


def test_command_leads_its_own_process_group(tmp_path: Path) -> None:
    with ManagedProcess(["sleep", "30"], wdir=tmp_path, name="g") as proc:
        try:
            assert os.getpgid(proc.pid) == proc.pid
            assert os.getpgid(proc.pid) != os.getpgrp()
        finally:
            os.kill(proc.pid, 9)


def test_wait_with_timeout_raises_and_keeps_running(tmp_path: Path) -> None:
    proc = ManagedProcess(["sleep", "30"], wdir=tmp_path, name="t")
    proc.run()
    try:
        with pytest.raises(TimeoutExpired):
            proc.wait(timeout=0.01)
        assert psutil.pid_exists(proc.pid)
    finally:
        os.kill(proc.pid, 9)
        assert proc.wait() == -9
    assert ProcessInfo.load(proc.info_path).returncode == -9


def test_program_that_does_not_exist_fails_cleanly(tmp_path: Path) -> None:
    proc = ManagedProcess(["no-such-program-xyz"], wdir=tmp_path, name="missing")
    with pytest.raises(FileNotFoundError):
        proc.run()
    assert not Path(proc.info_path).exists()


def test_spawned_runner_holds_none_of_the_callers_pipes(
    tmp_path: Path, processes: Processes
) -> None:
    wdir = tmp_path / "procs"
    caller = processes.start(
        sys.executable,
        "-c",
        "import sys; from dvc_task.proc import ManagedProcess;"
        "print(ManagedProcess.spawn(['sleep', '60'], wdir=sys.argv[1], name='bg'))",
        wdir / "bg",
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
    )

    out, _ = caller.communicate(timeout=60)  # EOF although the job still runs
    runner = int(out)
    manager = ProcessManager(wdir)
    try:
        info = wait_for(lambda: manager.get("bg"), "the spawned job's record")
        assert info.returncode is None
        assert os.getsid(runner) == runner
        assert os.getpgid(runner) == runner
        assert psutil.Process(info.pid).ppid() == runner
    finally:
        manager.remove("bg", force=True)
    wait_for(lambda: not psutil.pid_exists(runner), "the runner to exit")


def test_spawned_runner_is_not_the_callers_child(
    tmp_path: Path, processes: Processes
) -> None:
    # A long-lived caller (DVC's `exp run --run-all`) must not collect
    # zombies, nor hear "subprocess is still running" (a ResourceWarning,
    # an error in DVC's test suite) when it lets go of the runner.
    manager = ProcessManager(tmp_path)
    runner = ManagedProcess.spawn(["true"], wdir=tmp_path / "quick", name="quick")
    assert runner is not None
    assert psutil.Process(runner).ppid() != os.getpid()
    info = wait_finished(manager, "quick", "the quick job to finish")
    assert info.returncode == 0
    assert not any(c.pid == runner for c in psutil.Process().children())


def test_spawned_runner_ignores_modules_in_the_current_directory(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    # DVC spawns from the project folder; a project's copy.py must not
    # shadow the standard library module of that name in the runner.
    project = tmp_path / "project"
    project.mkdir()
    (project / "copy.py").write_text("raise SystemExit('shadowed copy.py imported')\n")
    monkeypatch.chdir(project)
    manager = ProcessManager(tmp_path / "procs")

    ManagedProcess.spawn(["pwd"], wdir=tmp_path / "procs" / "job", name="job")

    info = wait_finished(manager, "job", "the job to finish")
    assert info.returncode == 0
    assert Path(info.stdout or "").read_text() == f"{project}\n"


def _spawned(tmp_path: Path, name: str, args: list[str]) -> ProcessInfo:
    ManagedProcess.spawn(args, wdir=tmp_path / name, name=name)
    manager = ProcessManager(tmp_path)
    return wait_for(lambda: manager.get(name), f"{name} to start")


def test_run_again_after_a_dead_runner_stops_the_orphaned_command(
    tmp_path: Path,
) -> None:
    old = _spawned(tmp_path, "job", ["sleep", "60"])
    assert old.runner_pid is not None  # never signal pid 0: the test's own group
    os.kill(old.runner_pid, 9)
    wait_for(lambda: not old.runner_alive(), "the runner to die")
    assert old.command_alive()

    with ManagedProcess(["sh", "-c", "echo again"], wdir=tmp_path / "job", name="job"):
        pass

    assert not old.command_alive()
    info = ProcessManager(tmp_path)["job"]
    assert info.returncode == 0
    assert info.pid != old.pid


def test_run_of_a_name_whose_runner_lives_is_refused(tmp_path: Path) -> None:
    _spawned(tmp_path, "busy", ["sleep", "60"])
    try:
        with pytest.raises(ProcessNotTerminatedError):
            ManagedProcess(["true"], wdir=tmp_path / "busy", name="busy").run()
    finally:
        ProcessManager(tmp_path).remove("busy", force=True)
