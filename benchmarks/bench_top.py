"""``dvc-task top`` with 10,000 jobs: time to first paint, CPU while idle.

Usage: ``python benchmarks/bench_top.py [--jobs N] [--output FILE]``.

The monitor runs headless (Textual's pilot, a 160x50 screen) on a folder of
N finished jobs. First paint: from the app's start to its table holding
every job (median of 3). Idle CPU: the monitor's process CPU time over 10
seconds while nothing changes, as a share of one core. Side by side, what a
user runs instead: ``dvc-task status`` on the same folder (its whole run,
start-up included), once every 2 seconds as ``watch`` would.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

from dvc_task.jobs import JobQueue
from dvc_task.tui.app import TopApp
from dvc_task.tui.table import JobTable

from common import publish_report

SCRIPT = Path(sys.executable).parent / "dvc-task"
IDLE_S = 10.0


def make_jobs(folder: Path, count: int) -> JobQueue:
    queue = JobQueue(folder)
    queue.submit(["true"], name="first", held=True)
    base = json.loads((queue.backend.jobs_dir / "first.json").read_text())
    for i in range(count - 1):
        record = {
            **base,
            "name": f"j{i:05d}",
            "seq": i + 2,
            "phase": "succeeded" if i % 9 else "failed",
            "returncode": 0 if i % 9 else 1,
            "command": ["python", "train.py", f"--seed={i}"],
            "started_at": base["submitted_at"],
            "finished_at": base["submitted_at"],
        }
        (queue.backend.jobs_dir / f"j{i:05d}.json").write_text(json.dumps(record))
    return queue


async def first_paint_and_idle(
    queue: JobQueue, count: int, idle: bool
) -> tuple[float, float]:
    start = time.monotonic()
    app = TopApp(queue)
    async with app.run_test(size=(160, 50)) as pilot:
        table = app.query_one(JobTable)
        while len(table.jobs) < count:
            await pilot.pause(0.001)
        painted = time.monotonic() - start
        cpu = 0.0
        if idle:
            await pilot.pause(2.0)  # settle
            before = os.times()
            await asyncio.sleep(IDLE_S)
            after = os.times()
            cpu = (after.user + after.system - before.user - before.system) / IDLE_S
    return painted, cpu


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--jobs", type=int, default=10_000)
    parser.add_argument("--output", type=Path)
    options = parser.parse_args()
    folder = Path(tempfile.mkdtemp(prefix="bench-top-")) / "q"
    queue = make_jobs(folder, options.jobs)
    paints = []
    cpu = 0.0
    for run in range(3):
        painted, used = asyncio.run(first_paint_and_idle(queue, options.jobs, run == 2))
        paints.append(painted)
        cpu = used or cpu
    env = {**os.environ, "DVC_TASK_DIR": str(folder)}
    status = []
    for _ in range(3):
        started = time.monotonic()
        subprocess.run(
            [str(SCRIPT), "status"], env=env, capture_output=True, check=True
        )
        status.append(time.monotonic() - started)
    status_s = statistics.median(status)
    rows = [
        ["first paint", f"{statistics.median(paints):.2f} s", ""],
        ["CPU while nothing changes", f"{cpu * 100:.2f}% of a core", ""],
        ["`dvc-task status` (one run)", f"{status_s:.2f} s", ""],
        [
            "`watch -n 2 dvc-task status` CPU",
            f"about {status_s / 2 * 100:.0f}% of a core",
            "the peer",
        ],
    ]
    publish_report(
        "dvc-task top",
        f"{options.jobs} finished jobs, headless 160x50 screen, median of 3 "
        f"first paints; idle CPU over {IDLE_S:.0f} s.",
        ["what", "figure", "note"],
        rows,
        options.output,
    )


if __name__ == "__main__":
    main()
