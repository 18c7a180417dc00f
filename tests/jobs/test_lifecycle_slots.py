"""Jobs that wait for slots, held, released, or whose start cannot be recorded.

A worker with two job slots and one unit of ``mem``: job ``a`` (mem=1) runs
behind a gate file, job ``c`` (mem=1) is taken by the worker's second slot,
finds no ``mem`` left and waits for slots. ``c`` is then held.
"""

from __future__ import annotations

import contextlib
import errno
import resource
import signal
from collections.abc import Iterator
from datetime import datetime, timezone
from pathlib import Path

import pytest

from dvc_task.jobs import JobQueue, lifecycle, slots
from dvc_task.jobs.slots import Offer

from conftest import wait_for

WORKER = "celery@w1"


def gated(gate: Path) -> list[str]:
    return ["sh", "-c", f"while [ ! -e {gate} ]; do sleep 0.05; done"]


def hold_a_job_waiting_for_slots(
    queue: JobQueue, tmp_path: Path, patience: float
) -> Path:
    """``a`` runs (holding mem) behind a gate; ``c`` waits for slots and is held."""
    gate = tmp_path / "gate"
    queue.submit(gated(gate), name="a", resources={"mem": 1})
    queue.submit(["true"], name="c", resources={"mem": 1})
    queue.start_workers(
        concurrency=2, timeout=120, offer=Offer([], {"mem": 1}, patience=patience)
    )
    wait_for(lambda: queue.job("a").state == "running", "a to run", timeout=60)
    wait_for(lambda: queue.job("c").state == "waiting", "c to wait for slots")
    assert queue.hold("c")
    assert queue.job("c").state == "held"
    return gate


def test_a_released_job_that_waited_for_slots_runs_once_slots_are_free(
    queue: JobQueue, tmp_path: Path
) -> None:
    gate = hold_a_job_waiting_for_slots(queue, tmp_path, patience=60)
    # "b" waits for "a": the worker's promote after "a" ends queues it, and
    # looks at the held "c" in the same pass (its slots were freed).
    queue.submit(["true"], name="b", after=["a"])
    gate.touch()
    assert queue.wait("b", timeout=60).state == "succeeded"
    assert queue.job("c").state == "held"

    queue.release("c")

    # Nothing holds mem any more: "c" must run. On the buggy code it is
    # never queued again and ends up listed "lost".
    job = wait_for(
        lambda: (j := queue.job("c")).finished and j,
        "c to finish after its release",
        timeout=25,
    )
    assert job.state == "succeeded", job


def test_a_held_job_does_not_block_younger_slot_jobs(
    queue: JobQueue, tmp_path: Path
) -> None:
    # Patience 0: an older job that waits for slots is never overtaken. A
    # held job does not wait for slots: it must not count.
    gate = hold_a_job_waiting_for_slots(queue, tmp_path, patience=0)
    gate.touch()
    assert queue.wait("a", timeout=60).state == "succeeded"

    queue.submit(["true"], name="d", resources={"mem": 1})

    # mem is free and the only older slot job is held: "d" must run.
    job = queue.wait("d", timeout=20)
    assert job.state == "succeeded", job


@contextlib.contextmanager
def files_limited_to(size: int) -> Iterator[None]:
    """A real write failure: files of this process cannot grow past ``size``.

    Writing past it fails with EFBIG (SIGXFSZ ignored meanwhile), as a write
    on a full disk fails with ENOSPC: an OSError from the record's write.
    """
    soft, hard = resource.getrlimit(resource.RLIMIT_FSIZE)
    old_handler = signal.signal(signal.SIGXFSZ, signal.SIG_IGN)
    resource.setrlimit(resource.RLIMIT_FSIZE, (size, hard))
    try:
        yield
    finally:
        resource.setrlimit(resource.RLIMIT_FSIZE, (soft, hard))
        signal.signal(signal.SIGXFSZ, old_handler)


def test_a_job_whose_start_cannot_be_recorded_gives_its_slot_back(
    queue: JobQueue,
) -> None:
    offer = Offer([], {"mem": 1})
    queue.submit(["true"], name="first", resources={"mem": 1})
    queue.submit(["true"], name="second", resources={"mem": 1})
    first = queue.backend.load("first")
    slot_folder = queue.backend.app_dir / "slots" / WORKER
    with files_limited_to(1), pytest.raises(OSError, match="too large") as failed:
        lifecycle.take(
            queue.backend,
            "first",
            first.task_id,
            worker=WORKER,
            offer=offer,
            slot_folder=slot_folder,
        )
    assert failed.value.errno == errno.EFBIG
    del failed  # its traceback would keep the frames (and their locks) alive
    assert queue.backend.load("first").phase == first.phase  # nothing was written

    # The only "mem" unit is free again for the next job of that worker.
    held = slots.take(queue.backend.load("second"), offer, slot_folder)
    assert held is not None, "the slot of a job whose start failed is still taken"
    held.release()


def test_holding_a_job_first_in_line_for_slots_lets_younger_ones_go(
    queue: JobQueue,
) -> None:
    # "big" can never get its slots from this worker (mem=2 of 1), and once
    # its patience is over it keeps younger slot jobs waiting behind it.
    queue.submit(["true"], name="big", resources={"mem": 2})
    queue.start_workers(timeout=60, offer=Offer([], {"mem": 1}, patience=0.2))
    wait_for(lambda: queue.job("big").state == "waiting", "big to wait for slots")
    since = queue.backend.load("big").waiting_since
    assert since is not None
    wait_for(
        lambda: (
            (datetime.now(timezone.utc) - datetime.fromisoformat(since)).total_seconds()
            > 0.5
        ),
        "big's patience to be over",
    )
    queue.submit(["true"], name="small", resources={"mem": 1})
    wait_for(lambda: queue.job("small").state == "waiting", "small to wait behind big")

    queue.hold("big")

    assert queue.wait("small", timeout=30).state == "succeeded"
    assert queue.job("big").state == "held"
