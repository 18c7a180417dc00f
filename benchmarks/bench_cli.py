"""The command line as a user feels it: each command as a whole process.

20 runs of each (median and p95), side by side with what bounds them from
below (``python -c pass``, ``python -c "import click"``), with dvc-task
0.40.2's nearest equivalent (it has no command line: queueing a command
with its ``FSApp``), and with ``pueue add`` / ``ts`` when installed. Also
1,000 jobs queued at once (``run --from``), ``status`` with 1,000 and
10,000 finished jobs, and, where a ``redis-server`` is installed, ``status``
and ``top``'s first paint with 10,000 jobs on a Redis server.

The package runs from bytecode, as a ``pip install`` leaves it (an editable
install under ``PYTHONDONTWRITEBYTECODE`` would compile every module at
every run): it is compiled first.

    python benchmarks/bench_cli.py [--peer-040 PYTHON] [--output FILE]
"""

from __future__ import annotations

import argparse
import asyncio
import compileall
import os
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Callable

import dvc_task
from dvc_task.jobs import JobQueue, open_queue

from common import machine

RUNS = 20
DVC_TASK = str(Path(sys.executable).parent / "dvc-task")

#: The modules that ``run`` and ``status`` import before they do anything.
QUICK_IMPORTS = (
    "import dvc_task.cli, dvc_task.cli.jobs, dvc_task.jobs.queue, "
    "dvc_task.jobs.folder, dvc_task.jobs.lifecycle.queueing, "
    "dvc_task.jobs.submission, dvc_task.jobs.reading"
)
PEER_QUEUE = (
    "import sys; from dvc_task.app import FSApp; "
    "app = FSApp('peer', wdir=sys.argv[1], mkdir=True); "
    "app.send_task('dvc_task.proc.tasks.run', args=(['true'],))"
)


def timed(
    argv: list[str],
    env: dict[str, str],
    runs: int = RUNS,
    before: Callable[[], object] | None = None,
) -> list[float]:
    """Seconds each of ``runs`` runs of ``argv`` took, as a whole process.

    ``before`` is called (untimed) before each run.
    """
    times = []
    for _ in range(runs):
        if before is not None:
            before()
        begun = time.perf_counter()
        subprocess.run(argv, env=env, stdout=subprocess.DEVNULL, check=True)
        times.append(time.perf_counter() - begun)
    return times


def stopped(folder: Path, stop: list[str], env: dict[str, str]) -> None:
    """Stop the workers of ``folder`` and wait until none is left."""
    subprocess.run(stop, env=env, stdout=subprocess.DEVNULL, check=True)
    queue = JobQueue(folder)
    deadline = time.monotonic() + 60
    while queue.workers():
        if time.monotonic() > deadline:
            raise TimeoutError("the workers did not stop")
        time.sleep(0.01)


class Table:
    """Rows of commands, each also shown over ``import click``'s time."""

    def __init__(self) -> None:
        self.lines = [
            "| command | median | p95 | over `import click` | goal |",
            "|---|---|---|---|---|",
        ]
        self.click_ms = 0.0

    def add(self, label: str, times: list[float], goal: str = "") -> None:
        ordered = sorted(times)
        p95 = ordered[min(len(ordered) - 1, int(0.95 * len(ordered)))]
        median = statistics.median(times) * 1000
        over = f"+{median - self.click_ms:.0f} ms" if self.click_ms else ""
        self.lines.append(
            f"| {label} | {median:.0f} ms | {p95 * 1000:.0f} ms | {over} | {goal} |"
        )


def finished_queue(folder: Path, count: int) -> None:
    """A queue of ``count`` finished jobs."""
    queue = JobQueue(folder)
    for start in range(0, count, 1000):
        queue.submit_many([["true"]] * min(1000, count - start))
    queue.work(timeout=0.5, concurrency=4)


def redis_rows(table: Table, work: Path, env: dict[str, str], count: int) -> None:
    """``status`` and ``top``'s first paint with ``count`` jobs on Redis."""
    sys.path.insert(0, str(Path(__file__).parents[1] / "tests" / "helpers"))
    from redisserver import RedisServer, server_binary  # noqa: PLC0415

    from bench_top import first_paint_and_idle  # noqa: PLC0415

    binary = server_binary()
    if binary is None:
        return
    (work / "redis").mkdir()
    server = RedisServer(binary, work / "redis", "always")
    server.start()
    try:
        queue = open_queue(work / "on-redis", server.url)
        for start in range(0, count, 1000):
            queue.submit_many([["true"]] * min(1000, count - start))
        redis_env = {
            **env,
            "DVC_TASK_DIR": str(work / "on-redis"),
            "DVC_TASK_BROKER": server.url,
        }
        table.add(
            f"`status`, {count:,} queued jobs on Redis",
            timed([DVC_TASK, "status"], redis_env, runs=5),
            "1 s",
        )
        paints = [
            asyncio.run(first_paint_and_idle(queue, count, idle=False))[0]
            for _ in range(3)
        ]
        table.add(f"`top` first paint, {count:,} queued jobs on Redis", paints, "1 s")
    finally:
        server.kill()


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--peer-040", help="python of a dvc-task 0.40.2 venv")
    parser.add_argument("--output", type=Path)
    args = parser.parse_args()
    compileall.compile_dir(Path(dvc_task.__file__).parent, quiet=1)
    work = Path(tempfile.mkdtemp(prefix="bench-cli-"))
    env = {**os.environ, "DVC_TASK_DIR": str(work / "q")}
    table = Table()
    table.add("`python -c pass`", timed([sys.executable, "-c", "pass"], env))
    click_times = timed([sys.executable, "-c", "import click"], env)
    table.add('`python -c "import click"`', click_times)
    table.click_ms = statistics.median(click_times) * 1000
    table.add(
        "`python -c` importing what `run` and `status` import",
        timed([sys.executable, "-c", QUICK_IMPORTS], env),
    )
    table.add(
        "`run --no-start -- true`",
        timed([DVC_TASK, "run", "--no-start", "--", "true"], env),
        "50 ms",
    )
    if args.peer_040:
        table.add(
            "0.40.2: queue a command with FSApp.send_task",
            timed([args.peer_040, "-c", PEER_QUEUE, str(work / "peer")], env),
        )
    for program, argv in (
        ("pueue", ["pueue", "add", "--", "true"]),
        ("ts", ["ts", "true"]),
    ):
        if shutil.which(program):
            table.add(f"`{' '.join(argv)}`", timed(argv, env))
    table.add("`logs 1`", timed([DVC_TASK, "logs", "1"], env), "50 ms")
    stop = [DVC_TASK, "stop"]
    table.add(
        "`run --wait -- true`, no worker (it starts one)",
        timed(
            [DVC_TASK, "run", "--wait", "--", "true"],
            env,
            runs=10,
            before=lambda: stopped(work / "q", stop, env),
        ),
        "300 ms",
    )
    subprocess.run([DVC_TASK, "start", "--timeout", "120"], env=env, check=True)
    subprocess.run([DVC_TASK, "run", "--wait", "--", "true"], env=env, check=True)
    table.add(
        "`run --wait -- true`, a worker alive",
        timed([DVC_TASK, "run", "--wait", "--", "true"], env),
        "80 ms",
    )
    table.add(
        "`run -- true`, a worker alive",
        timed([DVC_TASK, "run", "--", "true"], env),
        "50 ms",
    )
    subprocess.run(stop, env=env, check=True)
    sweep = work / "sweep.txt"
    sweep.write_text("".join(f"echo {n}\n" for n in range(1000)))
    batch_env = dict(env)
    batches = iter(range(5))

    def new_batch_folder() -> None:
        # A new queue each run: deleting the last one would leave the disk
        # busy writing the deletion back during the next run.
        batch_env["DVC_TASK_DIR"] = str(work / f"batch-{next(batches)}")

    table.add(
        "`run --no-start --from` 1,000 lines",
        timed(
            [DVC_TASK, "run", "--no-start", "--from", str(sweep), "--name", "b-{n}"],
            batch_env,
            runs=5,
            before=new_batch_folder,
        ),
        "1 s",
    )
    for count, goal in ((1000, "50 ms"), (10000, "150 ms")):
        folder = work / f"done-{count}"
        finished_queue(folder, count)
        status_env = {**env, "DVC_TASK_DIR": str(folder)}
        for argv in (["status"], ["status", "--json"]):
            subprocess.run(  # makes the index
                [DVC_TASK, *argv], env=status_env, stdout=subprocess.DEVNULL, check=True
            )
            table.add(
                f"`{' '.join(argv)}`, {count:,} finished jobs",
                timed([DVC_TASK, *argv], status_env),
                goal,
            )
    redis_rows(table, work, env, 10_000)
    shutil.rmtree(work, ignore_errors=True)
    text = "\n".join(
        [
            "## The command line: each command as a whole process",
            "",
            f"{RUNS} runs each (fewer where the row says), median and p95 "
            f"({machine()}).",
            "",
            *table.lines,
        ]
    )
    print(text)
    if args.output:
        args.output.write_text(text + "\n")


if __name__ == "__main__":
    main()
