"""Job control latency: a dependency's end to its dependant's start, and a
GPU slot freeing to the next GPU job's start.

Usage: ``python benchmarks/bench_control.py [--jobs N] [--output FILE]``.

Jobs are queued with ``JobQueue.submit`` (what ``dvc-task run`` calls) and
run by a detached worker as ``dvc-task run`` starts one (threads pool,
prefetch 1). Each gap is the next job's start (its process record) minus the
previous job's end, median over N jobs. Side by side, on the same machine
and settings: the same jobs queued at once without dependencies or slots,
where a worker goes straight from one job to the next (the floor).
The GPU runs use a stand-in ``nvidia-smi`` that lists one device.
"""

from __future__ import annotations

import argparse
import os
import statistics
import tempfile
from collections.abc import Callable
from datetime import datetime
from pathlib import Path

from dvc_task.jobs import JobQueue
from dvc_task.jobs.slots import Offer

from common import publish_report


def gaps(queue: JobQueue, names: list[str], order_by_start: bool) -> list[float]:
    jobs = {job.name: job for job in queue.jobs()}
    ordered = [jobs[name] for name in names]
    if order_by_start:
        ordered.sort(key=lambda job: job.started_at or "")
    assert all(job.state == "succeeded" for job in ordered), [
        (job.name, job.state) for job in ordered
    ]

    def at(when: str | None) -> float:
        assert when is not None
        return datetime.fromisoformat(when).timestamp()

    return [at(b.started_at) - at(a.finished_at) for a, b in zip(ordered, ordered[1:])]


def run(
    folder: Path,
    count: int,
    submit: Callable[[JobQueue, int], str],
    offer: Offer | None = None,
    concurrency: int = 1,
) -> list[float]:
    queue = JobQueue(folder)
    names = [submit(queue, i) for i in range(count)]
    queue.start_workers(concurrency=concurrency, offer=offer)
    for name in names:
        queue.wait(name, timeout=300)
    return gaps(queue, names, order_by_start=offer is not None)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--jobs", type=int, default=40)
    parser.add_argument("--output", type=Path)
    options = parser.parse_args()
    work = Path(tempfile.mkdtemp(prefix="bench-control-"))
    bin_dir = work / "bin"
    bin_dir.mkdir()
    fake = bin_dir / "nvidia-smi"
    fake.write_text("#!/bin/sh\necho 0\n")
    fake.chmod(0o755)
    os.environ["PATH"] = f"{bin_dir}{os.pathsep}{os.environ['PATH']}"
    os.environ["DVC_TASK_GPU_LOCKS"] = str(work / "gpu-locks")
    count = options.jobs

    def plain(queue: JobQueue, i: int) -> str:
        return queue.submit(["true"], name=f"j{i}").name

    def chained(queue: JobQueue, i: int) -> str:
        after = [f"j{i - 1}"] if i else []
        return queue.submit(["true"], name=f"j{i}", after=after).name

    def gpu(queue: JobQueue, i: int) -> str:
        return queue.submit(["true"], name=f"j{i}", gpus=1).name

    results = {}
    for label, submit, offer, concurrency in (
        ("plain queue (floor)", plain, None, 1),
        ("dependency end -> dependant start", chained, None, 1),
        ("GPU slot freed -> next GPU job start", gpu, Offer(["0"], {}), 2),
    ):
        key = label.split(" ")[0]
        results[label] = run(work / key, count, submit, offer, concurrency)

    floor = statistics.median(results["plain queue (floor)"])
    rows = []
    for label, values in results.items():
        med = statistics.median(values)
        p90 = statistics.quantiles(values, n=10)[-1]
        rows.append(
            [
                label,
                f"{med * 1000:.1f} ms",
                f"{p90 * 1000:.1f} ms",
                f"{med / floor:.2f}x",
            ]
        )
    publish_report(
        "Job control latency",
        f"{count} `true` jobs per row, one detached worker (threads pool, "
        "prefetch 1; concurrency 2 and one GPU for the GPU row). Gap: a job's "
        "start minus the previous one's end; goal: median under 50 ms.",
        ["path", "median gap", "p90 gap", "vs floor"],
        rows,
        options.output,
    )


if __name__ == "__main__":
    main()
