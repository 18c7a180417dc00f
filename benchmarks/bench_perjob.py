"""Per-job cost and exit lag of a temporary worker: ours, 0.40.2, the floor.

Each run queues ``--jobs`` managed ``true`` jobs through ``run_signature``
and drains them with a ``TemporaryWorker`` in one of three settings (DVC's,
Celery's defaults with prefork, solo), from ``perjob_driver.py`` run by each
dvc-task's own interpreter. Per job is the steady state: the time between
the finish of job ``--warmup`` and of the last job, divided by the jobs in
between (no cold start in it). Exit lag is the time from the last job's
finish to the worker's process exit, beyond its idle ``timeout``. The floor
runs ``subprocess.run(["true"])`` in a loop. Every folder is kept until all
runs end (deleting thousands of files slows the next run's file creation
on some file systems).
"""

from __future__ import annotations

import argparse
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path

from common import HERE, median, publish_report

DRIVER = str(HERE / "perjob_driver.py")
PROFILES = ("dvc", "prefork", "solo")
LABELS = {
    "dvc": "DVC's settings (threads, prefetch 1, late ack)",
    "prefork": "Celery's defaults (prefork, concurrency 1)",
    "solo": "solo pool",
}


def finish_times(procs: Path) -> list[float]:
    """When each job finished: the newest file time of its process folder."""
    times = []
    for folder in os.scandir(procs):
        stamps = [entry.stat().st_mtime for entry in os.scandir(folder.path)]
        times.append(max(stamps))
    return sorted(times)


def drain(
    python: str, work: Path, jobs: int, profile: str, timeout: float
) -> tuple[float, float]:
    """(per-job seconds in steady state, exit lag seconds) of one drain."""
    work.mkdir(parents=True)
    proc = subprocess.Popen(
        [python, DRIVER, str(work), str(jobs), profile, str(timeout)],
        stdout=subprocess.DEVNULL,
        stderr=subprocess.PIPE,
    )
    _, err = proc.communicate(timeout=600)
    exited = time.time()
    if proc.returncode != 0:
        raise RuntimeError(f"{python} {profile}: {err.decode()[-2000:]}")
    times = finish_times(work / "procs")
    if len(times) != jobs:
        raise RuntimeError(f"{python} {profile}: {len(times)} of {jobs} jobs ran")
    warmup = min(WARMUP, jobs // 4)
    cost = (times[-1] - times[warmup]) / (jobs - 1 - warmup)
    return cost, exited - times[-1] - timeout


#: Jobs left out of the per-job time: the worker's start and first jobs.
WARMUP = 50
#: dvc-task 0.40.2 in DVC's settings runs one job a second (it polls the
#: folder every second with one prefetch slot): it drains this many.
SLOW_JOBS = 20


def floor(jobs: int) -> float:
    for _ in range(WARMUP):
        subprocess.run(["true"], check=True)
    start = time.perf_counter()
    for _ in range(jobs - WARMUP):
        subprocess.run(["true"], check=True)
    return (time.perf_counter() - start) / (jobs - WARMUP)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--peer-040", required=True, help="python of dvc-task 0.40.2")
    parser.add_argument("--runs", type=int, default=3)
    parser.add_argument("--jobs", type=int, default=300)
    parser.add_argument("--timeout", type=float, default=1.0)
    parser.add_argument("--output", type=Path)
    args = parser.parse_args()
    peers = {"ours": sys.executable, "0.40.2": args.peer_040}
    per_job: dict[tuple[str, str], list[float]] = {}
    lags: dict[tuple[str, str], list[float]] = {}
    floors = []
    with tempfile.TemporaryDirectory() as tmp:
        for run in range(args.runs):
            floors.append(floor(args.jobs))
            for profile in PROFILES:
                # Alternate who goes first: a file system slows down as runs
                # pile up files, and neither should always pay for it.
                order = list(peers.items())[:: 1 if run % 2 == 0 else -1]
                for label, python in order:
                    work = Path(tmp, f"{label}-{profile}-{run}")
                    jobs = (
                        SLOW_JOBS
                        if (label, profile) == ("0.40.2", "dvc")
                        else args.jobs
                    )
                    cost, lag = drain(python, work, jobs, profile, args.timeout)
                    per_job.setdefault((label, profile), []).append(cost)
                    lags.setdefault((label, profile), []).append(lag)
    base = median(floors)
    rows = []
    for profile in PROFILES:
        ours = median(per_job["ours", profile])
        old = median(per_job["0.40.2", profile])
        rows.append(
            [
                f"per job, {LABELS[profile]} (ms)",
                f"{ours * 1000:.2f}",
                f"{old * 1000:.2f}",
                f"{base * 1000:.2f}",
                f"{ours / base:.2f}x",
                f"{old / ours:.2f}x",
            ]
        )
    for profile in PROFILES:
        ours = median(lags["ours", profile])
        old = median(lags["0.40.2", profile])
        rows.append(
            [
                f"exit lag beyond timeout={args.timeout:g} s, {LABELS[profile]} (s)",
                f"{ours:.3f}",
                f"{old:.3f}",
                "",
                "",
                f"{old / ours:.1f}x" if ours > 0 else "n/a",
            ]
        )
    where = tempfile.gettempdir()
    publish_report(
        f"Per job and exit lag: ours vs dvc-task 0.40.2 vs the floor (in {where})",
        (
            f"Median of {args.runs} runs of {args.jobs} managed `true` jobs queued "
            f"with run_signature ({SLOW_JOBS} for 0.40.2 in DVC's settings, which "
            "runs one a second); per job in steady state (after the first quarter, "
            f"at most {WARMUP} jobs); "
            "exit lag as process exit after the last job's finish, beyond the "
            "timeout. Floor: subprocess.run(['true']) in a loop. 'ours vs 0.40.2' "
            "above 1x: ours is better. Ours fsyncs each finished process's record "
            "(its return code survives a power loss); 0.40.2 does not."
        ),
        ["measure", "ours", "0.40.2", "floor", "ours / floor", "ours vs 0.40.2"],
        rows,
        args.output,
    )


if __name__ == "__main__":
    main()
