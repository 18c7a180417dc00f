"""An FSApp with the tasks the tests queue by name, runnable as a worker.

Usage: ``python taskapp.py worker WDIR NAME OPTIONS_JSON``.
"""

from __future__ import annotations

import json
import logging
import os
import sys
import time
from typing import Any

from kombu import Queue

from dvc_task.app import FSApp
from dvc_task.worker import TemporaryWorker


def append_line(path: str, text: str) -> None:
    fd = os.open(path, os.O_WRONLY | os.O_APPEND | os.O_CREAT, 0o600)
    try:
        os.write(fd, f"{text}\n".encode())
    finally:
        os.close(fd)


def make_app(wdir: str, acks_late: bool = False, folder_watch: str = "auto") -> FSApp:
    app = FSApp("tests", wdir=wdir, mkdir=True, include=["dvc_task.proc.tasks"])
    app.conf.update(task_acks_late=acks_late, result_expires=None)
    app.conf.broker_transport_options["folder_watch"] = folder_watch

    @app.task(name="record")
    def record(path: str, item: str, padding: str = "") -> str:
        append_line(path, item)
        return item

    @app.task(name="record_by", bind=True)
    def record_by(self: Any, path: str, item: str, work_ms: int) -> str:
        time.sleep(work_ms / 1000)  # the job's own work
        append_line(path, f"{item} {self.request.hostname}")
        return item

    @app.task(name="stamp_start")
    def stamp_start(path: str, item: str) -> str:
        append_line(path, f"{item} {time.time()}")
        return item

    @app.task(name="block")
    def block(started: str, release: str, path: str, item: str) -> str:
        append_line(started, item)
        deadline = time.monotonic() + 120
        while not os.path.exists(release) and time.monotonic() < deadline:
            time.sleep(0.01)
        append_line(path, item)
        return item

    @app.task(name="journal")
    def journal(path: str, item: str, work_ms: int) -> str:
        append_line(path, f"start:{item}")
        time.sleep(work_ms / 1000)  # the job's own work
        append_line(path, f"end:{item}")
        return item

    @app.task(name="redelivered", bind=True)
    def redelivered(self: Any, path: str, item: str) -> str:
        flag = self.request.delivery_info.get("redelivered")
        append_line(path, f"{item}:{bool(flag)}")
        return item

    @app.task(name="tick")
    def tick(path: str, release: str) -> str:
        # Proves time passes while it runs, without the test sleeping.
        deadline = time.monotonic() + 120
        while not os.path.exists(release) and time.monotonic() < deadline:
            append_line(path, "tick")
            time.sleep(0.05)
        return "released"

    return app


def main(argv: list[str]) -> int:
    command, wdir, name, options_json = argv
    assert command == "worker"
    logging.basicConfig(level=logging.INFO)
    options: dict[str, Any] = json.loads(options_json)
    app = make_app(
        wdir,
        acks_late=options.pop("acks_late", False),
        folder_watch=options.pop("folder_watch", "auto"),
    )
    queues = options.pop("queues", None)
    if queues:
        app.conf.task_queues = [Queue(queue) for queue in queues]
    timeout = options.pop("timeout", 2)
    options.setdefault("pool", "threads")
    options.setdefault("concurrency", 1)
    options.setdefault("loglevel", "INFO")
    options.setdefault("without_heartbeat", True)
    options.setdefault("without_mingle", True)
    options.setdefault("without_gossip", True)
    TemporaryWorker(app, timeout=timeout, **options).start(name)
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
