"""Make ``docs/top.svg``: ``dvc-task top`` on a realistic queue.

Usage: ``python examples/top_screenshot.py``. It queues a few jobs in a
temporary folder (a finished preparation, a failed run retried, training
runs drawing progress bars, jobs waiting for them, one held), lets a worker
of concurrency 2 run them, and saves what the monitor shows.
"""

from __future__ import annotations

import asyncio
import sys
import tempfile
from pathlib import Path

from dvc_task.jobs import JobQueue
from dvc_task.jobs.slots import Offer
from dvc_task.tui.app import TopApp

TRAIN = (
    "import sys, time\n"
    "print('epoch 1/3: loading data', flush=True)\n"
    "for step in range(0, 101, 2):\n"
    "    print(f'\\rtraining {step:3d}% ' + '#' * (step // 5), end='', flush=True)\n"
    "    time.sleep(0.2)\n"
    "print()\n"
)


def main() -> None:
    """Queue the jobs, run them, save the screenshot."""
    folder = Path(tempfile.mkdtemp(prefix="top-shot-")) / "q"
    queue = JobQueue(folder)
    py = sys.executable
    queue.submit(["sh", "-c", "echo cleaned 12000 rows"], name="prepare")
    queue.submit(
        ["sh", "-c", "echo no such file: data/extra.csv >&2; exit 2"],
        name="extra-data",
        retries=2,
    )
    for lr in ("0.1", "0.01"):
        queue.submit(
            [py, "-c", TRAIN, "--lr", lr],
            name=f"train-lr{lr}",
            after=["prepare"],
            resources={"mem": 32},
        )
    queue.submit(
        ["python", "evaluate.py"],
        name="evaluate",
        after=["train-lr0.1", "train-lr0.01"],
    )
    queue.submit(
        ["python", "sweep.py", "--trials", "50"], name="sweep", held=True, priority=-1
    )
    queue.start_workers(concurrency=2, offer=Offer([], {"mem": 64}))

    async def shoot() -> None:
        app = TopApp(queue)
        async with app.run_test(size=(130, 32)) as pilot:
            while not all(
                job.state == "running"
                for job in queue.jobs()
                if job.name.startswith("train")
            ):
                await pilot.pause(0.1)
            await pilot.pause(3.0)
            await pilot.press("down", "down")
            await pilot.pause(1.0)
            app.save_screenshot("top.svg", path="docs")

    asyncio.run(shoot())
    queue.stop_workers(kill=True)
    print("wrote docs/top.svg")


if __name__ == "__main__":
    main()
