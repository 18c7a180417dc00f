"""Wall time of 10 queued DVC experiments: DVC on ours vs DVC on 0.40.2.

Each side is a virtual environment with the same DVC release: ``--ours`` and
``--peer-040`` name their ``dvc`` executables. Timed apart: queueing the
experiments (``dvc exp run --queue``), then from ``dvc queue start`` until
every experiment has its git ref and ``dvc queue status`` shows it succeeded.
"""

from __future__ import annotations

import argparse
import os
import re
import subprocess
import tempfile
import time
from pathlib import Path
from typing import NamedTuple

from common import median, publish_report, wait_until

TRAIN = (
    "import json\n"
    "p = dict(l.split(': ') for l in open('params.yaml').read().splitlines())\n"
    "json.dump({'score': int(p['x']) * 2}, open('metrics.json', 'w'))\n"
)
STAGE = (
    "stages:\n  train:\n    cmd: python train.py\n    deps: [train.py]\n"
    "    params: [x]\n    metrics:\n      - metrics.json:\n          cache: false\n"
)


class Timing(NamedTuple):
    """Seconds spent queueing the experiments and then running them."""

    queue: float
    run: float


#: A finished experiment's ref (the queue's own refs are ``refs/exps/celery/...``
#: and ``refs/exps/exec/...``): ``refs/exps/<baseline sha split 2/38>/<name>``.
EXPERIMENT_REF = re.compile(r"\srefs/exps/[0-9a-f]{2}/[0-9a-f]{38}/\S+$", re.MULTILINE)

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


def git_refs(repo: Path) -> str:
    return sh(repo, "git", "for-each-ref", "refs/exps")


def queue_and_run(dvc: str, work: Path, count: int) -> Timing:
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
    began = time.monotonic()
    for x in range(2, 2 + count):
        sh(repo, dvc, "exp", "run", "--queue", "-S", f"x={x}")
    queued = time.monotonic()
    # Not through a pipe: with 0.40 the spawned worker inherits it.
    subprocess.run(
        [dvc, "queue", "start"],
        cwd=repo,
        check=True,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
        env=env_for(dvc),
    )
    # Each finished experiment is a git ref: wait on those (milliseconds per
    # look) before asking `dvc queue status` (a second of CPU per call, taken
    # from the queue) whether DVC has recorded them all.
    wait_until(
        lambda: len(EXPERIMENT_REF.findall(git_refs(repo))) >= count,
        f"{count} experiment refs in {repo}",
        timeout=DEADLINE_S,
        interval=0.05,
    )
    wait_until(
        lambda: sh(repo, dvc, "queue", "status").count("Success") >= count,
        f"{count} successful experiments in {repo}",
        timeout=DEADLINE_S,
        interval=0.05,
    )
    done = time.monotonic()
    sh(repo, dvc, "queue", "stop")
    return Timing(queue=queued - began, run=done - queued)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--ours", required=True, help="dvc of the env with ours")
    parser.add_argument("--peer-040", required=True, help="dvc of the 0.40.2 env")
    parser.add_argument("--count", type=int, default=10)
    parser.add_argument("--runs", type=int, default=3)
    parser.add_argument("--output", type=Path)
    args = parser.parse_args()
    timings: dict[str, list[Timing]] = {}
    with tempfile.TemporaryDirectory() as tmp:
        for label, dvc in (("0.40.2", args.peer_040), ("ours", args.ours)):
            timings[label] = [
                queue_and_run(dvc, Path(tmp, f"{label}-{i}"), args.count)
                for i in range(args.runs)
            ]
    rows = []
    for measure, of in (
        (f"queue {args.count} experiments (s)", lambda t: t.queue),
        (f"`dvc queue start` until all {args.count} done (s)", lambda t: t.run),
        ("both (s)", lambda t: t.queue + t.run),
    ):
        old = median([of(t) for t in timings["0.40.2"]])
        new = median([of(t) for t in timings["ours"]])
        rows.append([measure, f"{old:.1f}", f"{new:.1f}", f"{old / new:.2f}x"])
    publish_report(
        "DVC's queue: ours vs dvc-task 0.40.2 (same DVC)",
        f"Median of {args.runs} runs each, in fresh git + DVC repositories: "
        f"{args.count} small experiments queued with `dvc exp run --queue`, "
        "then `dvc queue start` until every experiment has its git ref. "
        "The ratio is 0.40.2's time over ours (above 1: ours is faster).",
        ["measure", "dvc-task 0.40.2", "ours", "0.40.2 / ours"],
        rows,
        args.output,
    )


if __name__ == "__main__":
    main()
