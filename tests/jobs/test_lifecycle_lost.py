"""Jobs whose message vanished, or moved while the queue was read.

A job whose message is nowhere (quarantined before any worker took it) is
lost; ``status``, ``JobQueue.job`` and ``JobQueue.wait`` tell the same
story about the jobs that wait for it. A message that moves back to the
queue while the queue is read (a dead worker's claim recovered, a requeue)
is still found: its job is not taken for lost.
"""

from __future__ import annotations

import os
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from dvc_task.app.folderqueue import FolderQueue
from dvc_task.files import lock_is_held
from dvc_task.jobs import JobQueue

from conftest import Cli, JobsLock, age_record, sigkill_the_worker, wait_for


def lose_a_before_it_starts(cli: Cli) -> JobQueue:
    """``a`` lost before it started (message quarantined), ``d`` waits for it."""
    cli("run", "--no-start", "--name", "a", "--", "true")
    cli("run", "--no-start", "--name", "d", "--after", "a", "--", "true")
    inbox = cli.folder / "app" / "broker" / "in"
    (message,) = [n for n in os.listdir(inbox) if n.endswith(".msg")]
    quarantine = cli.folder / "app" / "broker" / "quarantine"
    quarantine.mkdir(mode=0o700, exist_ok=True)
    os.rename(inbox / message, quarantine / message)
    for name in ("a", "d"):
        age_record(cli.folder, name, 60)

    # A worker comes and goes over the queue (it promotes the waiting jobs).
    cli("start", "--timeout", "30")
    lock = cli.folder / "app" / "broker" / "worker-celery@dvc-task-worker.lock"
    wait_for(lambda: lock_is_held(lock), "the worker to be running")

    queue = JobQueue(cli.folder)
    assert cli.state("a") == "lost"
    assert queue.job("a").state == "lost"
    return queue


def test_job_says_what_status_says_of_a_dependant_of_a_job_lost_before_start(
    cli: Cli,
) -> None:
    queue = lose_a_before_it_starts(cli)
    listed = cli.state("d")
    assert listed == "dependency failed"
    assert queue.job("d").state == listed


def test_wait_returns_for_a_dependant_of_a_job_lost_before_start(cli: Cli) -> None:
    queue = lose_a_before_it_starts(cli)
    # "d" will never run: waiting for it must return, as status lists it.
    job = queue.wait("d", timeout=15)
    assert job.state == cli.state("d") == "dependency failed"


def claimed_by_a_dead_worker(queue: JobQueue, tmp_path: Path) -> None:
    """Queue job ``j``; a worker claims its message and dies before starting it."""
    queue.submit(["touch", str(tmp_path / "ran")], name="j")
    lock = JobsLock(queue.folder)
    try:
        queue.start_workers(timeout=60)
        wait_for(lambda: queue.job("j").state == "starting", "a worker to claim j")
        sigkill_the_worker(queue)
    finally:
        lock.release()
    age_record(queue.folder, "j", 60)
    # A dead worker's claim waits to go back to the queue: "j" is queued.
    assert queue.job("j").state == "queued"


@pytest.fixture
def recovered_between_reads(queue: JobQueue) -> Iterator[None]:
    """The next read of the claims finds the dead claims just recovered."""
    claims = FolderQueue.claims
    armed = [True]

    def claims_after_recovery(self: FolderQueue) -> Iterator[Any]:
        if armed:
            armed.clear()
            assert FolderQueue(queue.backend.tasks.folders).recover() == 1
        return claims(self)

    mp = pytest.MonkeyPatch()
    mp.setattr(FolderQueue, "claims", claims_after_recovery)
    try:
        yield
    finally:
        mp.undo()


def test_a_job_whose_message_returns_to_the_queue_is_not_lost(
    queue: JobQueue, tmp_path: Path, request: pytest.FixtureRequest
) -> None:
    claimed_by_a_dead_worker(queue, tmp_path)
    request.getfixturevalue("recovered_between_reads")

    assert queue.job("j").state == "queued"


def test_wait_does_not_return_while_the_message_returns_to_the_queue(
    queue: JobQueue, tmp_path: Path, request: pytest.FixtureRequest
) -> None:
    claimed_by_a_dead_worker(queue, tmp_path)
    request.getfixturevalue("recovered_between_reads")

    # No worker runs: "j" cannot finish, and waiting must time out.
    with pytest.raises(TimeoutError, match="still queued"):
        queue.wait("j", timeout=3)
    queue.start_workers()
    assert queue.wait("j", timeout=20).state == "succeeded"
    assert (tmp_path / "ran").exists()
