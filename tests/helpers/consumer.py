"""A bare Kombu consumer on an FSApp queue, for crash tests.

Usage: ``python consumer.py WDIR MODE`` where MODE is
``claim-and-wait`` (claim one message, print its tag, wait to be killed),
``claim-and-exit`` / ``claim-and-exit-norestore`` (claim one, close, exit), or
``drain GO_FILE`` (print ready; once GO_FILE exists, take and ack messages until the
queue is empty, printing each tag).
"""

from __future__ import annotations

import os
import sys
import time

from kombu.transport import virtual

from dvc_task.app import FSApp


def drain(app: FSApp, go_file: str) -> int:
    print("ready", flush=True)
    while not os.path.exists(go_file):
        time.sleep(0.001)
    with app.connection_for_read() as conn:
        channel = conn.channel()
        while True:
            message = channel.basic_get("celery")
            if message is None:
                if not os.listdir(app.broker_folders.inbox):
                    return 0
                continue
            print(message.delivery_tag, flush=True)
            message.ack()


def main(wdir: str, mode: str, *args: str) -> int:
    if mode.endswith("-norestore"):
        # What DVC does before it starts a worker.
        virtual.QoS.restore_at_shutdown = False
    app = FSApp("tests", wdir=wdir)
    if mode == "drain":
        return drain(app, *args)
    with app.connection_for_read() as conn:
        channel = conn.channel()
        deadline = time.monotonic() + 60
        message = None
        while message is None and time.monotonic() < deadline:
            message = channel.basic_get("celery")
            time.sleep(0.01)
        if message is None:
            return 1
        print(message.delivery_tag, flush=True)
        if mode == "claim-and-wait":
            time.sleep(600)
        channel.close()
    return 0


if __name__ == "__main__":
    sys.exit(main(*sys.argv[1:]))
