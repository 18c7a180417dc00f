"""The job command line as users run it: logs vs cat, run --wait, status.

Usage: ``python benchmarks/bench_jobs.py [--output FILE]``. Every figure is
a whole ``dvc-task`` command run as a subprocess (its start-up included),
median of 5 runs, output read through a pipe as a shell would.
"""

from __future__ import annotations

import argparse
import os
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path

from common import median, publish_report

SCRIPT = Path(sys.executable).parent / "dvc-task"
RUNS = 5
BIG = 50_000_000


def timed(args: list[str], env: dict[str, str]) -> tuple[float, int]:
    """Seconds to run ``args`` with stdout read through a pipe; bytes read."""
    started = time.monotonic()
    done = subprocess.run(args, stdout=subprocess.PIPE, env=env, check=True)
    return time.monotonic() - started, len(done.stdout)


def queue_big(cli: list[str], env: dict[str, str], *options: str) -> None:
    """``dvc-task run OPTIONS`` of a job that writes 50 MB of short lines."""
    subprocess.run(
        [*cli, "run", *options, "--", "sh", "-c", f"yes | head -c {BIG}"],
        stdout=subprocess.DEVNULL,
        env=env,
        check=True,
    )


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--output", type=Path)
    options = parser.parse_args()
    folder = Path(tempfile.mkdtemp(prefix="bench-jobs-"))
    env = {**os.environ, "DVC_TASK_DIR": str(folder / "q")}
    cli = [str(SCRIPT)]
    try:
        rows = []
        # Output of a finished job: 50 MB of short lines.
        queue_big(cli, env, "--wait", "--name", "big")
        out = folder / "q" / "procs" / "big" / "big.out"
        cat = median([timed(["cat", str(out)], env)[0] for _ in range(RUNS)])
        logs = median([timed([*cli, "logs", "big"], env)[0] for _ in range(RUNS)])
        follow = median(
            [timed([*cli, "logs", "-f", "big"], env)[0] for _ in range(RUNS)]
        )
        subprocess.run(
            [*cli, "run", "--wait", "--name", "empty", "--", "true"],
            stdout=subprocess.DEVNULL,
            env=env,
            check=True,
        )
        startup = median([timed([*cli, "logs", "empty"], env)[0] for _ in range(RUNS)])
        rows.append(["`cat` of the output (s)", f"{cat:.3f}", "1x"])
        rows.append(
            ["`logs` of an empty output: start-up alone (s)", f"{startup:.3f}", ""]
        )
        rows.append(
            [
                "`logs` (s)",
                f"{logs:.3f}",
                f"{logs / cat:.1f}x ({(logs - startup) / cat:.1f}x past start-up)",
            ]
        )
        rows.append(
            [
                "`logs -f` of the finished job (s)",
                f"{follow:.3f}",
                f"{follow / cat:.1f}x ({(follow - startup) / cat:.1f}x past start-up)",
            ]
        )
        # Following a job while it writes the 50 MB.
        live = []
        for i in range(RUNS):
            name = f"live{i}"
            queue_big(cli, env, "--name", name)
            seconds, size = timed([*cli, "logs", "-f", name], env)
            assert size == BIG, size
            live.append(seconds)
        rows.append(
            [
                "`logs -f` from queueing to the end of a live job (s)",
                f"{median(live):.3f}",
                f"{median(live) / cat:.1f}x",
            ]
        )
        # Round trips with a warm worker, and status of many jobs.
        waits = [
            timed([*cli, "run", "--wait", "--", "true"], env)[0] for _ in range(RUNS)
        ]
        rows.append(
            ["`run --wait -- true`, warm worker (s)", f"{median(waits):.3f}", ""]
        )
        subprocess.run([*cli, "stop"], stdout=subprocess.DEVNULL, env=env, check=True)
        deadline = time.monotonic() + 60
        while subprocess.run(
            [*cli, "workers", "--json"], capture_output=True, env=env, check=True
        ).stdout.strip() not in (b"[]", b""):
            if time.monotonic() > deadline:
                raise TimeoutError("the worker did not stop")
            time.sleep(0.1)
        subprocess.run(
            [sys.executable, "-c", SUBMIT, str(folder / "q"), "1000"],
            env=env,
            check=True,
        )
        status = median(
            [timed([*cli, "status", "--json"], env)[0] for _ in range(RUNS)]
        )
        rows.append(["`status --json` of 1,000 queued jobs (s)", f"{status:.3f}", ""])
        publish_report(
            "Jobs: the command line",
            f"Whole commands, start-up included, median of {RUNS}; 50 MB of `yes` "
            "output (short lines). Ratios against `cat` of the same file.",
            ["measure", "time", "vs cat"],
            rows,
            options.output,
        )
    finally:
        subprocess.run(
            [*cli, "stop", "--kill"], env=env, capture_output=True, check=False
        )
        shutil.rmtree(folder, ignore_errors=True)


SUBMIT = """
import sys
from dvc_task.jobs import JobQueue
queue = JobQueue(sys.argv[1])
for _ in range(int(sys.argv[2])):
    queue.submit(["true"])
"""


if __name__ == "__main__":
    main()
