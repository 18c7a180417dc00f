"""Liveness survives a step of the wall clock (NTP, resume, ``date -s``)."""

from __future__ import annotations

import json
import os
import signal
from pathlib import Path

import pytest

from dvc_task.jobs.record import STARTED, STARTING, JobRecord
from dvc_task.jobs.view import derive
from dvc_task.proc import ManagedProcess, ProcessManager
from dvc_task.proc.info import process_create_time, process_start_id

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


def test_job_whose_worker_is_starting_it_stays_starting_after_a_clock_step() -> None:
    # A job marked started by a live worker, before its process record
    # exists: the worker is told by its clock-proof identity, so a step of
    # the wall clock does not make the job look lost.
    me = os.getpid()
    record = JobRecord(
        name="job",
        seq=1,
        command=["true"],
        cwd="/",
        env={},
        submitted_at="2026-01-01T00:00:00+00:00",
        task_id="t",
        phase=STARTED,
        worker="w",
        worker_pid=me,
        worker_create_time=(process_create_time(me) or 0.0) - 3600,
        worker_start_id=process_start_id(me),
    )

    assert derive(record, {}, None, None).state == STARTING
