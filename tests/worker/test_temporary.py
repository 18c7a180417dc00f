"""TemporaryWorker: leaves when the queue is empty, never with work left."""

from __future__ import annotations

import os
import signal
import sys
import time
from pathlib import Path
from typing import Any

import psutil
import pytest

from conftest import HELPERS, Processes, lines, wait_for

sys.path.insert(0, str(HELPERS))
from dvc_task.worker import TemporaryWorker

from taskapp import make_app


def queue_ticking_job(app: Any, tmp_path: Path) -> tuple[Path, Path]:
    """Queue a job that writes a tick every 50 ms until the release file exists."""
    ticks, release = tmp_path / "ticks", tmp_path / "release"
    app.send_task("tick", args=[str(ticks), str(release)])
    return ticks, release


@pytest.mark.parametrize(
    ("pool", "concurrency", "prefetch"),
    [
        ("threads", 1, 1),
        ("threads", 4, 4),
        ("prefork", 2, 1),
        ("prefork", 2, 4),
        ("solo", 1, 4),
    ],
)
def test_worker_drains_the_queue_then_exits(
    wdir: Path,
    processes: Processes,
    tmp_path: Path,
    pool: str,
    concurrency: int,
    prefetch: int,
) -> None:
    app = make_app(str(wdir))
    done = tmp_path / "done"
    for i in range(40):
        app.send_task("record", args=[str(done), str(i)])

    worker = processes.worker(
        wdir,
        timeout=0.5,
        pool=pool,
        concurrency=concurrency,
        prefetch_multiplier=prefetch,
        acks_late=True,
    )

    assert worker.wait(timeout=120) == 0
    assert sorted(lines(done), key=int) == [str(i) for i in range(40)]
    assert not list(app.iter_queued())


def test_worker_does_not_exit_while_a_job_runs(
    wdir: Path, processes: Processes, tmp_path: Path
) -> None:
    app = make_app(str(wdir))
    ticks, release = queue_ticking_job(app, tmp_path)
    worker = processes.worker(wdir, timeout=0.2)

    # 20 ticks are at least a second: five idle timeouts.
    wait_for(lambda: len(lines(ticks)) >= 20, "the job to run for a while")
    assert worker.poll() is None
    release.touch()
    assert worker.wait(timeout=120) == 0


def test_worker_waits_for_a_scheduled_job(
    wdir: Path, processes: Processes, tmp_path: Path
) -> None:
    app = make_app(str(wdir))
    done = tmp_path / "done"
    app.send_task("record", args=[str(done), "later"], countdown=2)

    assert processes.worker(wdir, timeout=0.2).wait(timeout=120) == 0

    assert lines(done) == ["later"]


def test_job_queued_while_idle_is_run(
    wdir: Path, processes: Processes, tmp_path: Path
) -> None:
    app = make_app(str(wdir))
    done = tmp_path / "done"
    app.send_task("record", args=[str(done), "first"])
    worker = processes.worker(wdir, timeout=30)
    wait_for(lambda: lines(done) == ["first"], "the first job")

    app.send_task("record", args=[str(done), "second"])

    wait_for(lambda: lines(done) == ["first", "second"], "the second job")
    assert worker.poll() is None


def test_second_worker_of_the_same_name_returns_at_once(
    wdir: Path, processes: Processes, tmp_path: Path
) -> None:
    app = make_app(str(wdir))
    ticks, release = queue_ticking_job(app, tmp_path)
    first = processes.worker(wdir, name="same", timeout=0.2)
    wait_for(lambda: lines(ticks), "the first worker to start its job")

    log = tmp_path / "second.log"
    second = processes.worker(wdir, name="same", timeout=0.2, log=log)

    assert second.wait(timeout=120) == 0
    assert "already running" in log.read_text()
    assert first.poll() is None
    release.touch()
    assert first.wait(timeout=120) == 0


def test_lock_of_a_killed_worker_does_not_block_a_new_one(
    wdir: Path, processes: Processes, tmp_path: Path
) -> None:
    app = make_app(str(wdir))
    ticks, release = queue_ticking_job(app, tmp_path)
    done = tmp_path / "done"
    first = processes.worker(wdir, name="same", timeout=0.2)
    wait_for(lambda: lines(ticks), "the first worker to start its job")
    os.killpg(first.pid, signal.SIGKILL)
    first.wait()
    release.touch()
    app.send_task("record", args=[str(done), "after"])

    assert processes.worker(wdir, name="same", timeout=0.2).wait(timeout=120) == 0

    assert lines(done) == ["after"]


def test_sigterm_lets_the_running_job_finish_and_loses_nothing(
    wdir: Path, processes: Processes, tmp_path: Path
) -> None:
    app = make_app(str(wdir))
    ticks, release = queue_ticking_job(app, tmp_path)
    done = tmp_path / "done"
    app.send_task("record", args=[str(done), "next"])
    worker = processes.worker(wdir, timeout=0.2, prefetch_multiplier=4, acks_late=True)
    wait_for(lambda: lines(ticks), "the job to start")
    wait_for(lambda: not list(app.iter_queued()), "the next job to be prefetched")

    os.kill(worker.pid, signal.SIGTERM)
    count = len(lines(ticks))
    wait_for(lambda: len(lines(ticks)) > count + 2, "the job to go on after SIGTERM")
    assert worker.poll() is None
    release.touch()
    assert worker.wait(timeout=120) == 0

    result = app.AsyncResult(
        next(m for m in app.iter_processed() if m.headers["task"] == "tick").headers[
            "id"
        ]
    )
    assert result.get(timeout=30) == "released"
    # The prefetched job either ran during the warm shutdown (the threads
    # pool had it already) or went back to the queue: never lost, never twice.
    queued = [m.headers["task"] for m in app.iter_queued()]
    assert (lines(done), queued) in ((["next"], []), ([], ["record"]))
    assert processes.worker(wdir, name="w2", timeout=0.2).wait(timeout=120) == 0
    assert lines(done) == ["next"]


def test_broadcast_inspect_ping_and_shutdown_reach_the_worker(
    wdir: Path, processes: Processes, tmp_path: Path
) -> None:
    app = make_app(str(wdir))
    ticks, release = tmp_path / "ticks", tmp_path / "release"
    result = app.send_task("tick", args=[str(ticks), str(release)])
    worker = processes.worker(wdir, name="ctl", timeout=60)
    wait_for(lambda: lines(ticks), "the job to start")

    active = wait_for(lambda: app.control.inspect(timeout=5).active(), "a reply")
    assert [task["id"] for task in active["celery@ctl"]] == [result.id]
    assert TemporaryWorker(app).ping("ctl", timeout=5)

    app.control.shutdown(destination=["celery@ctl"])
    release.touch()
    assert worker.wait(timeout=120) == 0
    assert result.get(timeout=30) == "released"


def test_worker_stays_while_jobs_keep_arriving(
    wdir: Path, processes: Processes, tmp_path: Path
) -> None:
    app = make_app(str(wdir))
    done = tmp_path / "done"
    worker = processes.worker(wdir, timeout=1.0)
    app.send_task("record", args=[str(done), "0"])
    wait_for(lambda: lines(done), "the first job")

    # Each job takes milliseconds: most arrive and finish between two looks
    # of the idle monitor, yet each must restart its idle clock.
    for i in range(1, 25):
        time.sleep(0.15)  # the arrival schedule, not a wait for anything
        assert worker.poll() is None, f"the worker left with job {i} arriving"
        app.send_task("record", args=[str(done), str(i)])

    assert worker.wait(timeout=120) == 0
    assert sorted(lines(done), key=int) == [str(i) for i in range(25)]


def test_monitor_stops_a_worker_of_another_process_once_idle(
    wdir: Path, processes: Processes, tmp_path: Path
) -> None:
    app = make_app(str(wdir))
    done = tmp_path / "done"
    app.send_task("record", args=[str(done), "1"])
    worker = processes.worker(wdir, timeout=600)
    wait_for(lambda: lines(done), "the job")

    TemporaryWorker(app, timeout=0.5).monitor("w1")

    assert worker.wait(timeout=60) == 0
    # With the worker gone, monitoring it again returns at once.
    TemporaryWorker(app, timeout=0.5).monitor("w1")


@pytest.mark.parametrize("pool", ["threads", "prefork", "solo"])
def test_worker_exits_soon_after_its_timeout_in_every_pool(
    wdir: Path, processes: Processes, tmp_path: Path, pool: str
) -> None:
    app = make_app(str(wdir))
    done = tmp_path / "done"
    app.send_task("record", args=[str(done), "1"])
    worker = processes.worker(wdir, timeout=1.0, pool=pool, loglevel="WARNING")
    wait_for(lambda: lines(done), "the job")

    assert worker.wait(timeout=60) == 0
    exited = time.time()

    # The exit lag of the old way out was a second or more beyond the
    # timeout (fixed sleeps in the pool and in a watching thread).
    assert exited - done.stat().st_mtime < 1.0 + 0.5


def test_idle_worker_with_two_queues_and_a_full_window_stays_quiet(
    wdir: Path, processes: Processes, tmp_path: Path
) -> None:
    app = make_app(str(wdir))
    started, release, done = tmp_path / "started", tmp_path / "release", tmp_path / "d"
    app.send_task("block", args=[str(started), str(release), str(done), "0"])
    app.send_task("record", args=[str(done), "1"], queue="other")
    worker = processes.worker(
        wdir,
        timeout=60,
        pool="prefork",
        queues=["celery", "other"],
        prefetch_multiplier=1,
    )
    wait_for(lambda: lines(started), "the blocking job")
    parent = psutil.Process(worker.pid)
    before = sum(parent.cpu_times()[:2])
    start = time.monotonic()

    time.sleep(3)  # the span measured, not a wait for anything

    used = (sum(parent.cpu_times()[:2]) - before) / (time.monotonic() - start)
    assert used < 0.05, f"an idle worker used {used:.0%} of a core"
    release.touch()
    wait_for(lambda: len(lines(done)) == 2, "both jobs")


def test_worker_runs_celerys_event_loop_on_the_folder_queue(
    wdir: Path, processes: Processes, tmp_path: Path
) -> None:
    app = make_app(str(wdir))
    with app.connection_for_read() as conn:
        assert conn.transport.implements.asynchronous
    done = tmp_path / "done"
    app.send_task("record", args=[str(done), "1"])
    log = tmp_path / "worker.log"

    worker = processes.worker(wdir, timeout=0.3, loglevel="DEBUG", log=log)

    assert worker.wait(timeout=60) == 0
    assert lines(done) == ["1"]
    # Celery registers the event loop's parts only when it runs one.
    assert "Hub.register" in log.read_text()
