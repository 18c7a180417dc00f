"""Wall time of 10 queued DVC experiments: DVC on ours vs DVC on 0.40.2.

Each side is a virtual environment with the same DVC release: ``--ours`` and
``--peer-040`` name their ``dvc`` executables. The time runs from ``dvc queue
start`` until ``dvc queue status`` shows nothing queued or running.
"""

from __future__ import annotations

import argparse
import os
import subprocess
import tempfile
import time
from pathlib import Path

from common import median, publish_report

TRAIN = (
    "import json\n"
    "p = dict(l.split(': ') for l in open('params.yaml').read().splitlines())\n"
    "json.dump({'score': int(p['x']) * 2}, open('metrics.json', 'w'))\n"
)
STAGE = (
    "stages:\n  train:\n    cmd: python train.py\n    deps: [train.py]\n"
    "    params: [x]\n    metrics:\n      - metrics.json:\n          cache: false\n"
)


#: A queue still not done after this long has stalled.
DEADLINE_S = 600.0


def env_for(dvc: str) -> dict[str, str]:
    """DVC spawns its queue worker as plain ``dvc``: find it in its own env."""
    return {**os.environ, "PATH": f"{Path(dvc).parent}{os.pathsep}{os.environ['PATH']}"}


def sh(cwd: Path, *args: str) -> str:
    return subprocess.run(
        list(args),
        cwd=cwd,
        check=True,
        capture_output=True,
        text=True,
        env=env_for(args[0]) if args[0].endswith("dvc") else None,
    ).stdout


def queue_and_run(dvc: str, work: Path, count: int) -> float:
    repo = work / "repo"
    repo.mkdir(parents=True)
    (repo / "train.py").write_text(TRAIN)
    (repo / "params.yaml").write_text("x: 1\n")
    (repo / "dvc.yaml").write_text(STAGE)
    sh(repo, "git", "init", "-q")
    sh(repo, "git", "config", "user.email", "bench@example.com")
    sh(repo, "git", "config", "user.name", "bench")
    sh(repo, dvc, "init", "-q")
    sh(repo, "git", "add", "-A")
    sh(repo, "git", "commit", "-qm", "project")
    sh(repo, dvc, "repro")
    sh(repo, "git", "add", "-A")
    sh(repo, "git", "commit", "-qm", "baseline")
    for x in range(2, 2 + count):
        sh(repo, dvc, "exp", "run", "--queue", "-S", f"x={x}")
    start = time.monotonic()
    # Not through a pipe: with 0.40 the spawned worker inherits it.
    subprocess.run(
        [dvc, "queue", "start"],
        cwd=repo,
        check=True,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    while any(s in sh(repo, dvc, "queue", "status") for s in ("Queued", "Running")):
        if time.monotonic() - start > DEADLINE_S:
            return float("inf")  # the queue stalled
        time.sleep(0.2)
    elapsed = time.monotonic() - start
    sh(repo, dvc, "queue", "stop")
    return elapsed


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--ours", required=True, help="dvc of the env with ours")
    parser.add_argument("--peer-040", required=True, help="dvc of the 0.40.2 env")
    parser.add_argument("--count", type=int, default=10)
    parser.add_argument("--runs", type=int, default=3)
    parser.add_argument("--output", type=Path)
    args = parser.parse_args()
    times = {}
    with tempfile.TemporaryDirectory() as tmp:
        for label, dvc in (("0.40.2", args.peer_040), ("ours", args.ours)):
            times[label] = median(
                [
                    queue_and_run(dvc, Path(tmp, f"{label}-{i}"), args.count)
                    for i in range(args.runs)
                ]
            )
    old, new = times["0.40.2"], times["ours"]
    publish_report(
        "DVC's queue: ours vs dvc-task 0.40.2 (same DVC)",
        f"Median of {args.runs} runs: {args.count} small experiments queued, "
        "then `dvc queue start` until `dvc queue status` shows none queued or "
        "running.",
        ["measure", "dvc-task 0.40.2", "ours", "ours vs 0.40.2"],
        [
            [
                f"{args.count} experiments, start to all done (s)",
                f"{old:.1f}",
                f"{new:.1f}",
                f"{old / new:.1f}x faster",
            ]
        ],
        args.output,
    )


if __name__ == "__main__":
    main()
