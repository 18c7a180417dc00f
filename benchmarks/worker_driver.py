"""Exit lag of whichever dvc-task the running interpreter has (ours or 0.40.2).

Usage: ``python worker_driver.py WDIR TIMEOUT``: queues one trivial job, runs
a TemporaryWorker (DVC's settings) in this process and prints, as JSON, the
seconds from the job's end to ``start()`` returning, minus ``TIMEOUT``.
"""

from __future__ import annotations

import json
import os
import sys
import time

from dvc_task.app import FSApp
from dvc_task.worker import TemporaryWorker


def main(wdir: str, timeout: str) -> None:
    app = FSApp("lag", wdir=wdir, mkdir=True)
    stamp_file = os.path.join(wdir, "stamp")

    @app.task(name="stamp", ignore_result=True)
    def stamp(path: str) -> None:
        with open(path, "w") as fobj:
            fobj.write(str(time.monotonic()))

    app.send_task("stamp", args=[stamp_file])
    TemporaryWorker(
        app,
        timeout=float(timeout),
        pool="threads",
        concurrency=1,
        prefetch_multiplier=1,
        without_heartbeat=True,
        without_mingle=True,
        without_gossip=True,
        loglevel="WARNING",
    ).start("lag")
    done = time.monotonic()
    with open(stamp_file) as fobj:
        lag = done - float(fobj.read()) - float(timeout)
    print(json.dumps({"lag": lag}), file=sys.__stdout__)


if __name__ == "__main__":
    main(*sys.argv[1:])
