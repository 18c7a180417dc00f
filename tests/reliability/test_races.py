"""Record races driven step by step: a loss is never written over real data."""

from __future__ import annotations

import os
import signal
import threading
from pathlib import Path

import pytest

from dvc_task.proc import ManagedProcess, ProcessManager
from dvc_task.proc.info import ProcessInfo

from conftest import wait_finished, wait_for


def lost_run(tmp_path: Path) -> ProcessManager:
    """A run of ``job`` whose runner and command were killed before recording."""
    ManagedProcess.spawn(["sleep", "60"], wdir=tmp_path / "job", name="job")
    manager = ProcessManager(tmp_path)
    info = manager["job"]
    assert info.runner_pid is not None  # never signal pid 0: our own group
    os.kill(info.runner_pid, signal.SIGKILL)
    os.killpg(info.pid, signal.SIGKILL)
    wait_for(lambda: not info.is_alive(), "the runner and its command to die")
    return manager


def test_new_run_started_while_a_loss_is_recorded_keeps_its_record(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    # The hook: at the last liveness check before the loss is written, a new
    # run of the same name starts and writes its record. Without the folder
    # lock, the old run's -1 replaced the new run's record.
    manager = lost_run(tmp_path)
    new = ManagedProcess(["sleep", "60"], wdir=tmp_path / "job", name="job")
    started = threading.Thread(target=new.run)
    checks = []
    real_is_alive = ProcessInfo.is_alive

    def is_alive(info: ProcessInfo) -> bool:
        checks.append(info.pid)
        if len(checks) == 2:  # the check inside the loss recording
            started.start()
            started.join(timeout=1)  # blocks on the lock now
        return real_is_alive(info)

    monkeypatch.setattr(ProcessInfo, "is_alive", is_alive)
    try:
        assert manager["job"].returncode == -1  # the old run, as it was read
        started.join(timeout=60)
        assert not started.is_alive()
        monkeypatch.undo()

        info = manager["job"]
        assert new._proc is not None
        assert info.pid == new._proc.pid
        assert info.returncode is None
        assert info.is_alive()
    finally:
        if new._proc is not None:
            new._proc.kill()
        new.wait()
    assert wait_finished(manager, "job", "the new run to end").returncode == -9


def test_return_code_written_before_the_runner_died_is_kept(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    # The hook: the runner writes its return code and exits right after the
    # manager first read the record, just before the manager finds it dead.
    manager = lost_run(tmp_path)
    record = tmp_path / "job" / "job.json"
    real_is_alive = ProcessInfo.is_alive

    def is_alive(info: ProcessInfo) -> bool:
        written = ProcessInfo.load(str(record))
        if written.returncode is None:
            written.returncode = 0
            written.dump(str(record))
        return real_is_alive(info)

    monkeypatch.setattr(ProcessInfo, "is_alive", is_alive)
    assert manager["job"].returncode == 0
    monkeypatch.undo()
    assert manager["job"].returncode == 0
