"""Kombu's Redis transport, with the messages a worker holds kept its own.

Kombu's Redis transport hands a delivered message back to the queue once
it has stayed unacknowledged for ``visibility_timeout`` seconds, counted
from its delivery: a job that runs longer would be run again by another
worker. :class:`RenewingQoS` owns that bookkeeping, as its parent does
(:meth:`~kombu.transport.redis.QoS.append`, ``ack``, ``reject``,
``restore_unacked``): :meth:`RenewingQoS.renew` moves the delivery time of
every message this channel holds (running, prefetched, or waiting for a
retry's countdown) to now. :class:`Transport` calls it from a timer of the
worker's event loop, where Kombu runs its own restore timer; nothing
touches the QoS from another thread.

Private names used, and why: ``Channel._q_for_pri`` (the names of a
queue's Redis lists, one per priority, for listing and deleting waiting
messages as Kombu itself names them), and ``QoS._delivered`` (the parent's own
record of the unacknowledged delivery tags of this channel; read by the
subclass only, in the loop's thread).
"""

from __future__ import annotations

import logging
import time
from typing import Any

from kombu.transport import redis
from redis.exceptions import RedisError

logger = logging.getLogger(__name__)

#: Seconds between renewals; far below any visibility timeout we allow.
RENEW_S = 1.0


class RenewingQoS(redis.QoS):
    """Kombu's Redis QoS that can keep its unacknowledged messages its own."""

    def renew(self) -> int:
        """Mark every message this channel holds as delivered now; how many."""
        tags = list(self._delivered)
        if not tags:
            return 0
        now = time.time()
        with self.pipe_or_acquire() as pipe:
            for tag in tags:
                # xx: a message acked meanwhile is not put back in the index.
                pipe.zadd(self.unacked_index_key, {tag: now}, xx=True)
            pipe.execute()
        return len(tags)


class Channel(redis.Channel):
    """Kombu's Redis channel with :class:`RenewingQoS`."""

    QoS = RenewingQoS

    def queue_lists(self, queue: str) -> list[str]:
        """The Redis lists of ``queue``, one per priority, first served first."""
        return [
            self._q_for_pri(queue, step) for step in sorted(set(self.priority_steps))
        ]


class Transport(redis.Transport):
    """Kombu's Redis transport that renews its messages from the event loop."""

    Channel = Channel
    #: The loop's timer entry of :meth:`renew`.
    _renewal: Any = None

    def register_with_event_loop(self, connection: Any, loop: Any) -> None:
        """Kombu's registration, and a timer that renews held messages."""
        super().register_with_event_loop(connection, loop)
        if self._renewal is not None:
            self._renewal.cancel()  # a reconnection registers again
        self._renewal = loop.call_repeatedly(RENEW_S, self.renew)

    def renew(self) -> None:
        """Renew the messages that every channel of this transport holds."""
        for channel in list(self.channels):
            qos = channel.qos
            if isinstance(qos, RenewingQoS):
                try:
                    qos.renew()
                except RedisError as exc:
                    logger.warning("renewing held messages: Redis: %s", exc)
