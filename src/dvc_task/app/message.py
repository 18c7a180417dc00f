"""A Celery task message made without Celery: what ``app.send_task`` sends.

Celery's message protocol 2, as ``send_task`` makes it for a JSON task on
the default exchange: the task's name and id in the headers, the arguments
in a base64 body. ``dvc-task run`` queues a job with it, so that queueing
needs neither Celery nor Kombu imported; Celery's consumer reads it as its
own, and so does dvc-task 0.40 (``tests/app/test_message.py`` compares the
two and runs the message).
"""

from __future__ import annotations

import base64
import json
import os
import uuid
from datetime import datetime, timezone
from typing import Any

#: The queue (routing key) of a Celery app's tasks by default.
DEFAULT_QUEUE = "celery"


def task_message(
    task: str,
    task_id: str,
    kwargs: dict[str, Any],
    *,
    routing_key: str = DEFAULT_QUEUE,
    priority: int = 0,
    eta: datetime | None = None,
) -> dict[str, Any]:
    """The message that runs ``task(**kwargs)`` as ``task_id`` (at ``eta``)."""
    body = json.dumps([[], kwargs, _EMBED]).encode("utf-8")
    return {
        "body": base64.b64encode(body).decode("ascii"),
        "content-encoding": "utf-8",
        "content-type": "application/json",
        "headers": {
            "lang": "py",
            "task": task,
            "id": task_id,
            "shadow": None,
            "eta": None if eta is None else eta.astimezone(timezone.utc).isoformat(),
            "expires": None,
            "group": None,
            "group_index": None,
            "retries": 0,
            "timelimit": [None, None],
            "root_id": task_id,
            "parent_id": None,
            "argsrepr": "()",
            "kwargsrepr": repr(kwargs)[:1024],
            "origin": f"gen{os.getpid()}@{os.uname().nodename}",
            "ignore_result": None,
            "replaced_task_nesting": 0,
            "stamped_headers": None,
            "stamps": {},
        },
        "properties": {
            "correlation_id": task_id,
            "reply_to": str(uuid.uuid4()),
            "delivery_mode": 2,
            "delivery_info": {"exchange": "", "routing_key": routing_key},
            "priority": priority,
            "body_encoding": "base64",
            "delivery_tag": str(uuid.uuid4()),
        },
    }


_EMBED = {"callbacks": None, "errbacks": None, "chain": None, "chord": None}
