"""Liveness survives a step of the wall clock (NTP, resume, ``date -s``)."""

from __future__ import annotations

import json
import signal
from pathlib import Path

import pytest

from dvc_task.proc import ManagedProcess, ProcessManager
from dvc_task.proc.info import process_start_id

from conftest import wait_finished

pytestmark = pytest.mark.skipif(
    process_start_id(1) is None, reason="needs /proc (Linux): no clock-proof identity"
)


def step_the_clock(meta: Path, seconds: float) -> None:
    """Shift the recorded wall-clock start times as a clock step would.

    After a step, the wall-clock start time psutil computes for a live
    process (boot time + ticks) moves by the step while the recorded one
    stays: shifting the record is the same mismatch, without changing the
    machine's clock.
    """
    data = json.loads(meta.read_text())
    data["create_time"] += seconds
    data["runner_create_time"] += seconds
    meta.write_text(json.dumps(data))


def test_running_job_stays_running_after_a_clock_step(tmp_path: Path) -> None:
    ManagedProcess.spawn(["sleep", "60"], wdir=tmp_path / "job", name="job")
    manager = ProcessManager(tmp_path)
    assert manager["job"].start_id is not None

    step_the_clock(tmp_path / "job" / "job.meta.json", -3600)

    info = manager["job"]
    assert info.returncode is None
    assert info.is_alive()
    manager.cleanup()
    assert "job" in list(manager)  # a running job's folder is kept
    manager.send_signal("job", signal.SIGTERM, group=True)
    assert wait_finished(manager, "job", "the job to end").returncode == -15
