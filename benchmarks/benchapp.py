"""The app the benchmarks queue jobs on, runnable as a worker.

Usage: ``python benchapp.py WDIR TRANSPORT [PROFILE]`` runs a temporary worker
on WDIR with TRANSPORT ``dvcfs`` (ours) or ``filesystem`` (Kombu's stock
transport). PROFILE ``dvc`` (default) is DVC's settings: threads pool,
concurrency 1, prefetch 1, late acks; ``celery`` is Celery's defaults for a
single-slot worker: prefetch 4, early acks.
"""

from __future__ import annotations

import os
import sys
import time

from dvc_task.app import FSApp
from dvc_task.worker import TemporaryWorker


def make_app(wdir: str, transport: str, acks_late: bool = True) -> FSApp:
    app = FSApp("bench", wdir=wdir, mkdir=True)
    app.conf.update(broker_url=f"{transport}://", task_acks_late=acks_late)

    @app.task(name="stamp", ignore_result=True)
    def stamp(path: str, label: str) -> None:
        now = time.monotonic()
        fd = os.open(path, os.O_WRONLY | os.O_APPEND | os.O_CREAT, 0o600)
        try:
            os.write(fd, f"{label} {now}\n".encode())
        finally:
            os.close(fd)

    return app


def main(wdir: str, transport: str, profile: str = "dvc") -> None:
    app = make_app(wdir, transport, acks_late=profile == "dvc")
    TemporaryWorker(
        app,
        timeout=600,
        pool="threads",
        concurrency=1,
        prefetch_multiplier=1 if profile == "dvc" else 4,
        without_heartbeat=True,
        without_mingle=True,
        without_gossip=True,
        loglevel="WARNING",
    ).start("bench")


if __name__ == "__main__":
    main(*sys.argv[1:])
