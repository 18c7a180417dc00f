"""The command line as a user feels it: each command as a whole process.

20 runs of each (median and p95), side by side with what bounds them from
below (``python -c pass``, ``python -c "import click"``), with dvc-task
0.40.2's nearest equivalent (it has no command line: queueing a command
with its ``FSApp``), and with ``pueue add`` / ``ts`` when installed. Also
1,000 jobs queued at once (``run --from``) and ``status`` with 1,000 and
10,000 finished jobs.

    python benchmarks/bench_cli.py [--peer-040 PYTHON] [--output FILE]
"""

from __future__ import annotations

import argparse
import os
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

from dvc_task.jobs import JobQueue

from common import machine

RUNS = 20
DVC_TASK = str(Path(sys.executable).parent / "dvc-task")

PEER_QUEUE = (
    "import sys; from dvc_task.app import FSApp; "
    "app = FSApp('peer', wdir=sys.argv[1], mkdir=True); "
    "app.send_task('dvc_task.proc.tasks.run', args=(['true'],))"
)


def timed(argv: list[str], env: dict[str, str], runs: int = RUNS) -> list[float]:
    """Seconds each of ``runs`` runs of ``argv`` took, as a whole process."""
    times = []
    for _ in range(runs):
        begun = time.perf_counter()
        subprocess.run(argv, env=env, stdout=subprocess.DEVNULL, check=True)
        times.append(time.perf_counter() - begun)
    return times


def row(label: str, times: list[float], goal: str = "") -> str:
    ordered = sorted(times)
    p95 = ordered[min(len(ordered) - 1, int(0.95 * len(ordered)))]
    median = statistics.median(times) * 1000
    return f"| {label} | {median:.0f} ms | {p95 * 1000:.0f} ms | {goal} |"


def finished_queue(folder: Path, count: int) -> None:
    """A queue of ``count`` finished jobs."""
    queue = JobQueue(folder)
    for start in range(0, count, 1000):
        queue.submit_many([["true"]] * min(1000, count - start))
    queue.work(timeout=0.5, concurrency=4)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--peer-040", help="python of a dvc-task 0.40.2 venv")
    parser.add_argument("--output", type=Path)
    args = parser.parse_args()
    work = Path(tempfile.mkdtemp(prefix="bench-cli-"))
    env = {**os.environ, "DVC_TASK_DIR": str(work / "q")}
    lines = [
        "## The command line: each command as a whole process",
        "",
        f"{RUNS} runs each, median and p95 ({machine()}).",
        "",
        "| command | median | p95 | goal |",
        "|---|---|---|---|",
        row("`python -c pass`", timed([sys.executable, "-c", "pass"], env)),
        row(
            '`python -c "import click"`',
            timed([sys.executable, "-c", "import click"], env),
        ),
    ]
    lines.append(
        row(
            "`run --no-start -- true`",
            timed([DVC_TASK, "run", "--no-start", "--", "true"], env),
            "50 ms",
        )
    )
    if args.peer_040:
        lines.append(
            row(
                "0.40.2: queue a command with FSApp.send_task",
                timed([args.peer_040, "-c", PEER_QUEUE, str(work / "peer")], env),
            )
        )
    for program, argv in (
        ("pueue", ["pueue", "add", "--", "true"]),
        ("ts", ["ts", "true"]),
    ):
        if shutil.which(program):
            lines.append(row(f"`{' '.join(argv)}`", timed(argv, env)))
    lines.append(row("`logs 1`", timed([DVC_TASK, "logs", "1"], env), "50 ms"))
    subprocess.run([DVC_TASK, "start", "--timeout", "120"], env=env, check=True)
    subprocess.run([DVC_TASK, "run", "--wait", "--", "true"], env=env, check=True)
    lines.append(
        row(
            "`run --wait -- true`, a worker alive",
            timed([DVC_TASK, "run", "--wait", "--", "true"], env),
            "80 ms",
        )
    )
    lines.append(
        row(
            "`run -- true`, a worker alive",
            timed([DVC_TASK, "run", "--", "true"], env),
            "50 ms",
        )
    )
    subprocess.run([DVC_TASK, "stop"], env=env, check=True)
    sweep = work / "sweep.txt"
    sweep.write_text("".join(f"echo {n}\n" for n in range(1000)))
    batch_env = {**env, "DVC_TASK_DIR": str(work / "batch")}
    lines.append(
        row(
            "`run --no-start --from` 1,000 lines",
            timed(
                [
                    DVC_TASK,
                    "run",
                    "--no-start",
                    "--from",
                    str(sweep),
                    "--name",
                    "b-{n}",
                ],
                batch_env,
                runs=1,
            ),
            "1 s",
        )
    )
    for count, goal in ((1000, "50 ms"), (10000, "150 ms")):
        folder = work / f"done-{count}"
        finished_queue(folder, count)
        status_env = {**env, "DVC_TASK_DIR": str(folder)}
        lines.append(
            row(
                f"`status`, {count:,} finished jobs",
                timed([DVC_TASK, "status"], status_env),
                goal,
            )
        )
        lines.append(
            row(
                f"`status --json`, {count:,} finished jobs",
                timed([DVC_TASK, "status", "--json"], status_env),
                goal,
            )
        )
    shutil.rmtree(work, ignore_errors=True)
    text = "\n".join(lines) + "\n"
    print(text)
    if args.output:
        args.output.write_text(text)


if __name__ == "__main__":
    main()
