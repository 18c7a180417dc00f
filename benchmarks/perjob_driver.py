"""One drain of managed ``true`` jobs, for whichever dvc-task runs it.

Usage: ``python perjob_driver.py WDIR COUNT PROFILE TIMEOUT`` queues COUNT
jobs of ``true`` with ``ProcessManager.run_signature`` (the path DVC runs),
then runs a ``TemporaryWorker`` with PROFILE's settings in this process
until the queue has been empty for TIMEOUT seconds. The caller reads the
finish times from the process folders and times this process's exit.

Profiles: ``dvc`` is DVC's settings (threads pool, concurrency 1, prefetch
1, late acks, no heartbeat, mingle or gossip); ``prefork`` is Celery's
defaults at concurrency 1 (prefork pool, prefetch 4, early acks); ``solo``
is the solo pool with Celery's other defaults.
"""

from __future__ import annotations

import os
import sys
from typing import Any

from dvc_task.app import FSApp
from dvc_task.proc.manager import ProcessManager
from dvc_task.worker import TemporaryWorker

PROFILES: dict[str, dict[str, Any]] = {
    "dvc": {
        "pool": "threads",
        "concurrency": 1,
        "prefetch_multiplier": 1,
        "without_heartbeat": True,
        "without_mingle": True,
        "without_gossip": True,
    },
    "prefork": {"pool": "prefork", "concurrency": 1},
    "solo": {"pool": "solo", "concurrency": 1},
}


def main(wdir: str, count: str, profile: str, timeout: str) -> None:
    app = FSApp(
        "perjob",
        wdir=os.path.join(wdir, "app"),
        mkdir=True,
        include=["dvc_task.proc.tasks"],
    )
    app.conf.update(task_acks_late=profile == "dvc")
    manager = ProcessManager(os.path.join(wdir, "procs"))
    for i in range(int(count)):
        manager.run_signature(["true"], name=f"job{i:05d}").delay()
    TemporaryWorker(
        app, timeout=float(timeout), loglevel="WARNING", **PROFILES[profile]
    ).start(f"perjob-{profile}")


if __name__ == "__main__":
    main(*sys.argv[1:])
