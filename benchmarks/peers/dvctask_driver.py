"""Benchmark driver for dvc-task (ours, or 0.40.2 from its own environment).

Usage: ``python dvctask_driver.py MODE WDIR COUNT WORK CONCURRENCY`` (see
``common_driver.main``); ``worker WDIR CONCURRENCY`` is its worker.
The worker uses DVC's settings: threads pool, prefetch 1, late acks.
"""

from __future__ import annotations

import subprocess
import sys
from typing import Any, Callable

from common_driver import append_stamp, main, run_work, spawn

from dvc_task.app import FSApp
from dvc_task.worker import TemporaryWorker


def make_app(wdir: str) -> Any:
    app = FSApp("peer", wdir=wdir, mkdir=True)
    app.conf.update(task_acks_late=True)

    @app.task(name="job", ignore_result=True)
    def job(out: str, label: str, work: str) -> None:
        run_work(work)
        append_stamp(out, label)

    return app


def peer(
    wdir: str, concurrency: int
) -> tuple[Callable[[], subprocess.Popen[bytes]], Callable[[str, str, str], None]]:
    app = make_app(wdir)

    def start() -> subprocess.Popen[bytes]:
        return spawn([sys.executable, __file__, "worker", wdir, str(concurrency)])

    def enqueue(out: str, label: str, work: str) -> None:
        app.send_task("job", args=[out, label, work])

    return start, enqueue


if __name__ == "__main__":
    if sys.argv[1] == "worker":
        TemporaryWorker(
            make_app(sys.argv[2]),
            timeout=600,
            pool="threads",
            concurrency=int(sys.argv[3]),
            prefetch_multiplier=1,
            without_heartbeat=True,
            without_mingle=True,
            without_gossip=True,
            loglevel="WARNING",
        ).start("peer")
    else:
        main(peer, sys.argv[1:])
