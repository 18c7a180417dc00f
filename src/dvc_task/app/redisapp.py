"""A Celery app on a Redis server, for workers on many hosts.

Needs the ``redis`` extra: ``pip install 'dvc-task[redis]'``.
"""

from __future__ import annotations

import json
import os
import ssl
from collections.abc import Iterator
from typing import Any

from celery import Celery
from kombu.message import Message

#: Seconds a delivered message may go without its worker's heartbeat before
#: Redis hands it to another worker (``DVC_TASK_VISIBILITY_TIMEOUT``).
VISIBILITY_TIMEOUT_S = 15.0
#: Our Kombu transport for Redis (see :mod:`dvc_task.app.redistransport`).
TRANSPORT = "dvc_task.app.redistransport:Transport"
#: The schemes of the broker URLs that mean Redis.
REDIS_SCHEMES = ("redis://", "rediss://", "unix://", "redis+socket://")


def visibility_timeout() -> float:
    """The visibility timeout: ``DVC_TASK_VISIBILITY_TIMEOUT`` or the default.

    Raises:
        ValueError: the variable is not a positive number.
    """
    text = os.environ.get("DVC_TASK_VISIBILITY_TIMEOUT")
    if not text:
        return VISIBILITY_TIMEOUT_S
    try:
        value = float(text)
    except ValueError:
        value = 0.0
    if not value > 0:
        raise ValueError(
            f"DVC_TASK_VISIBILITY_TIMEOUT={text!r} is not a positive number of seconds"
        )
    return value


def redacted(url: str) -> str:
    """``url`` without its user and password, to show in messages."""
    scheme, sep, rest = url.partition("://")
    return f"{scheme}{sep}{rest.rpartition('@')[2]}"


def check_redis_url(url: str) -> str:
    """Return ``url`` if it names a Redis server, else raise ``ValueError``."""
    if not url.startswith(REDIS_SCHEMES):
        raise ValueError(
            f"broker {redacted(url)!r} is not a Redis URL: use "
            "redis://HOST:PORT/DB (rediss:// for TLS, unix:///path for a socket)"
        )
    return url


class RedisApp(Celery):
    """A Celery app whose broker and result backend are one Redis server.

    Messages, results and their settings are JSON. A message that a worker
    took is acknowledged once its task has run (``acks_late``); if the
    worker dies, Redis gives it to another worker once it has gone
    ``visibility_timeout`` seconds without the worker's heartbeat (dvc-task's
    workers renew it while they hold the message: see
    :mod:`~dvc_task.app.redistransport`).
    """

    def __init__(
        self,
        main: str | None = None,
        *,
        url: str,
        visibility: float | None = None,
        **kwargs: Any,
    ) -> None:
        """An app on the Redis server at ``url`` (``redis://[:password@]host:port/db``).

        Arguments:
            main: the app's name.
            url: the server; ``rediss://`` for TLS.
            visibility: the visibility timeout (default: :func:`visibility_timeout`).
            kwargs: passed to :class:`celery.Celery`.

        Raises:
            ValueError: ``url`` is not a Redis URL.
        """
        super().__init__(main, broker=check_redis_url(url), backend=url, **kwargs)
        if url.startswith("rediss://") and "ssl_cert_reqs" not in url:
            # What Kombu does for a rediss:// URL of its own transport.
            self.conf.broker_use_ssl = {"ssl_cert_reqs": ssl.CERT_NONE}
        timeout = visibility if visibility is not None else visibility_timeout()
        self.visibility_timeout = timeout
        transport = {
            "visibility_timeout": timeout,
            # Messages of dead workers are looked for every few seconds.
            "unacked_restore_interval": max(1.0, min(10.0, timeout / 5)),
            "unacked_restore_throttle": 1,
            "queue_order_strategy": "priority",
            "priority_steps": list(range(10)),
        }
        self.conf.update(
            # Kombu's Redis transport, renewing the messages a worker holds.
            broker_transport=TRANSPORT,
            task_serializer="json",
            result_serializer="json",
            accept_content=["json"],
            result_accept_content=["json"],
            broker_transport_options=transport,
            result_backend_transport_options={"retry_policy": {"timeout": 10.0}},
            broker_connection_retry_on_startup=True,
            task_acks_late=True,
            worker_prefetch_multiplier=1,
            # A lost connection does not stop the running tasks: jobs that
            # ran for hours go on, and dvc-task's records keep a message
            # delivered again meanwhile from running a job twice.
            worker_cancel_long_running_tasks_on_connection_loss=False,
            result_expires=24 * 3600,
        )

    def _lists(self, channel: Any, queue: str | None) -> list[str]:
        """The Redis lists of ``queue``, one per priority, first served first."""
        lists: list[str] = channel.queue_lists(queue or self.conf.task_default_queue)
        return lists

    def pending(self, queue: str | None = None) -> int:
        """Messages waiting in ``queue``, plus those workers took and not acked."""
        with self.connection_for_read() as conn:
            channel = conn.default_channel
            pipe = channel.client.pipeline()
            for key in self._lists(channel, queue):
                pipe.llen(key)
            pipe.hlen(channel.unacked_key)
            return sum(pipe.execute())

    def message_ids(self, queue: str | None = None) -> set[str]:
        """Task ids of the messages waiting in ``queue`` or held by workers."""
        found: set[str] = set()
        with self.connection_for_read() as conn:
            channel = conn.default_channel
            pipe = channel.client.pipeline()
            for key in self._lists(channel, queue):
                pipe.lrange(key, 0, -1)
            pipe.hvals(channel.unacked_key)
            *lists, held = pipe.execute()
        payloads = [json.loads(raw) for waiting in lists for raw in waiting]
        payloads += [json.loads(raw)[0] for raw in held]
        for payload in payloads:
            task_id = (payload.get("headers") or {}).get("id")
            if isinstance(task_id, str):
                found.add(task_id)
        return found

    def iter_queued(self, queue: str | None = None) -> Iterator[Message]:
        """Messages waiting in ``queue`` (default queue if None), next first."""
        with self.connection_for_read() as conn:
            channel = conn.default_channel
            for key in self._lists(channel, queue):
                # Kombu pushes on the left and takes from the right.
                for raw in reversed(channel.client.lrange(key, 0, -1)):
                    yield channel.Message(json.loads(raw), channel=channel)

    def iter_processed(self, queue: str | None = None) -> Iterator[Message]:
        """None: Redis keeps no message once a worker has acknowledged it."""
        del queue
        yield from ()

    def reject(self, delivery_tag: str) -> None:
        """Delete the waiting message ``delivery_tag``; then it never runs.

        Raises:
            ValueError: no such message waits (a worker may have taken it).
        """
        with self.connection_for_write() as conn:
            channel = conn.default_channel
            for key in self._lists(channel, None):
                for raw in channel.client.lrange(key, 0, -1):
                    tag = json.loads(raw)["properties"].get("delivery_tag")
                    if tag == delivery_tag and channel.client.lrem(key, 1, raw):
                        return
        raise ValueError(f"no waiting message {delivery_tag!r}")
