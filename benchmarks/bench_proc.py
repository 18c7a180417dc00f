"""Process manager: ours against dvc-task 0.40.2, side by side.

Measures follow() latency (from a line being written to it being yielded)
and processes() over 1,000 and 10,000 process folders. dvc-task 0.40.2 runs
from its own virtual environment (``--peer-040``, made by ``nox -s bench``);
both read the very same folders.
"""

from __future__ import annotations

import argparse
import json
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path

from common import HERE, median, p95, publish_report

DRIVER = str(HERE / "proc_driver.py")


def drive(python: str, *args: str) -> dict[str, object]:
    out = subprocess.run(
        [python, DRIVER, *args], check=True, capture_output=True, text=True
    ).stdout
    return json.loads(out.strip().splitlines()[-1])  # type: ignore[no-any-return]


def floor_run(count: int) -> float:
    """Seconds per ``subprocess.run(["true"])``, the same way as ``run``."""
    warm = count // 10
    start = 0.0
    for i in range(count):
        if i == warm:
            start = time.perf_counter()
        subprocess.run(["true"], check=True)
    return (time.perf_counter() - start) / (count - warm)


def managed_run_rows(peers: dict[str, str], work: Path, runs: int) -> list[list[str]]:
    """Rows: a managed run of `true`, and what it adds over the bare run."""
    count = 500
    costs: dict[str, list[float]] = {label: [] for label in peers}
    floors = []
    for i in range(runs):
        floors.append(floor_run(count))
        # Alternate who goes first (the file system slows as files pile up).
        for label, python in list(peers.items())[:: 1 if i % 2 == 0 else -1]:
            result = drive(python, "run", str(work / f"run-{label}-{i}"), str(count))
            costs[label].append(float(result["seconds"]))  # type: ignore[arg-type]
    base = median(floors)
    old, new = median(costs["0.40.2"]), median(costs["ours"])
    return [
        [
            f"`with ManagedProcess(['true'])`, {count} runs (ms; bare "
            f"subprocess.run {base * 1000:.2f})",
            f"{old * 1000:.2f}",
            f"{new * 1000:.2f}",
            f"{old / new:.2f}x",
        ],
        [
            "  what it adds over the bare run (ms)",
            f"{(old - base) * 1000:.2f}",
            f"{(new - base) * 1000:.2f}",
            f"{(new - base) / (old - base):.2f}x the cost of 0.40.2's",
        ],
    ]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--peer-040", required=True, help="python of dvc-task 0.40.2")
    parser.add_argument("--lines", type=int, default=40)
    parser.add_argument("--runs", type=int, default=5)
    parser.add_argument("--output", type=Path)
    args = parser.parse_args()
    peers = {"0.40.2": args.peer_040, "ours": sys.executable}

    rows = []
    with tempfile.TemporaryDirectory() as tmp:
        work = Path(tmp)
        rows += managed_run_rows(peers, work, args.runs)
        follow = {}
        for label, python in peers.items():
            delays = drive(
                python, "follow", str(work / f"follow-{label}"), str(args.lines)
            )
            follow[label] = [d * 1000 for d in delays["delays"]]  # type: ignore[union-attr]
        for stat, fn in (("median", median), ("p95", p95)):
            old, new = fn(follow["0.40.2"]), fn(follow["ours"])
            rows.append(
                [
                    f"follow() latency, {stat} (ms)",
                    f"{old:.1f}",
                    f"{new:.1f}",
                    f"{old / new:.0f}x lower",
                ]
            )
        for count in (1000, 10000):
            folder = work / f"procs-{count}"
            drive(sys.executable, "make", str(folder), str(count))
            # Records written in the last second are never cached (their
            # ctime may not have moved yet); finished jobs are older.
            time.sleep(1.1)
            cold = drive(sys.executable, "processes", str(folder), "1")["seconds"]
            times = {
                label: drive(python, "processes", str(folder), str(args.runs))[
                    "seconds"
                ]
                for label, python in peers.items()
            }
            old, new = float(times["0.40.2"]), float(times["ours"])  # type: ignore[arg-type]
            rows.append(
                [
                    f"processes() over {count:,} folders (ms)",
                    f"{old * 1000:.1f}",
                    f"{new * 1000:.1f}",
                    f"{old / new:.1f}x faster",
                ]
            )
            rows.append(
                [
                    f"  first listing, no cache yet, {count:,} (ms)",
                    f"{old * 1000:.1f}",
                    f"{float(cold) * 1000:.1f}",  # type: ignore[arg-type]
                    f"{old / float(cold):.1f}x",
                ]
            )  # type: ignore[arg-type]
            shutil.rmtree(folder)

    publish_report(
        "Process manager: ours vs dvc-task 0.40.2",
        (
            f"follow(): {args.lines} lines written 30 ms apart, default "
            "sleep_interval. processes(): median of "
            f"{args.runs} listings of finished processes, both versions on the "
            "same folders."
        ),
        ["measure", "dvc-task 0.40.2", "ours", "ours vs 0.40.2"],
        rows,
        args.output,
    )


if __name__ == "__main__":
    main()
