"""Benchmark driver for huey: ``SqliteHuey`` and its consumer, defaults kept.

Usage: ``python huey_driver.py MODE WDIR COUNT WORK CONCURRENCY`` (see
``common_driver.main``); ``worker WDIR CONCURRENCY`` is its consumer.
"""

from __future__ import annotations

import os
import subprocess
import sys
from typing import Any, Callable

from common_driver import append_stamp, main, run_work, spawn
from huey import SqliteHuey
from huey.consumer import Consumer


def make_huey(wdir: str) -> tuple[Any, Any]:
    huey = SqliteHuey(filename=os.path.join(wdir, "huey.db"))

    @huey.task()
    def job(out: str, label: str, work: str) -> None:
        run_work(work)
        append_stamp(out, label)

    return huey, job


def peer(
    wdir: str, concurrency: int
) -> tuple[Callable[[], subprocess.Popen[bytes]], Callable[[str, str, str], None]]:
    _, job = make_huey(wdir)

    def start() -> subprocess.Popen[bytes]:
        return spawn([sys.executable, __file__, "worker", wdir, str(concurrency)])

    def enqueue(out: str, label: str, work: str) -> None:
        job(out, label, work)

    return start, enqueue


if __name__ == "__main__":
    if sys.argv[1] == "worker":
        huey, _ = make_huey(sys.argv[2])
        Consumer(huey, workers=int(sys.argv[3]), worker_type="thread").run()
    else:
        main(peer, sys.argv[1:])
