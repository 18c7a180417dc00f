"""A crash-safe, low-latency Kombu transport on a local folder.

Registered with Kombu as ``dvcfs://``. It subclasses Kombu's ``filesystem``
transport and keeps its folder names and file format, so queues written by
dvc-task 0.40 (or Kombu's stock transport) are read unchanged. It overrides
the documented seams (``_put``, ``_get``, ``_size``, ``_purge``) plus the
acknowledgement path, because the stock transport:

- writes message files in place, so a reader can see half a file; we write a
  temporary file and rename it into ``in/`` (see :mod:`.broker`);
- moves a message to ``processed/`` when it is *fetched*, so a worker killed
  before running it loses the job; we claim it into a folder owned by the
  worker and only move it to ``processed/`` on ack, and a dead worker's
  claims return to ``in/``;
- re-lists and sorts the whole folder for every message and sleeps a second
  between polls; we keep the sorted listing in memory, re-list only when the
  folder's mtime says it changed, and while idle block on inotify (or,
  without it, ``stat`` the folder every few milliseconds; see :mod:`.watch`).
"""

from __future__ import annotations

import logging
import os
import socket
import time
from collections import defaultdict, deque
from pathlib import Path
from queue import Empty
from typing import Any, Callable

from kombu.exceptions import ChannelError
from kombu.transport import TRANSPORT_ALIASES, filesystem, virtual

from dvc_task.app import broker, claims, reader
from dvc_task.app.watch import FolderWaiter, FolderWatch
from dvc_task.exceptions import DvcTaskError

logger = logging.getLogger(__name__)

ALIAS = "dvcfs"
#: Poll the queues at least this often even if the folder did not change
#: (this also returns dead consumers' claims to the queue).
SAFETY_POLL_S = 1.0
#: Shortest gap between two listings; the real gap grows with listing cost.
MIN_RELIST_GAP_S = 0.002
#: Listings may take at most 1/this of the time while the folder churns.
RELIST_COST_FACTOR = 20


class QueueWriteError(DvcTaskError, OSError):
    """A message could not be written to the queue folder; nothing was queued."""


class QoS(virtual.QoS):
    """Acks move the claimed file to ``processed/``; restores move it back."""

    def ack(self, delivery_tag: str) -> None:
        """Finish with a message: it moves from ``reserved/`` to ``processed/``."""
        self.channel._settle(delivery_tag)
        super().ack(delivery_tag)
        self._room_freed()

    def reject(self, delivery_tag: str, requeue: bool = False) -> None:
        """Requeue a message under its own name, or finish with it."""
        if requeue:
            self.channel._restore_claimed(delivery_tag)
        else:
            self.channel._settle(delivery_tag)
        super().reject(delivery_tag, requeue=False)
        self._room_freed()

    def _room_freed(self) -> None:
        # A prefetch slot is free again: an idle drain should look for work
        # now rather than at its next safety poll.
        poke = getattr(self.channel.connection, "poke", None)
        if poke is not None:
            poke()


class Channel(filesystem.Channel):
    """Filesystem channel with atomic publish, claims and cheap polling."""

    QoS = QoS

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        options = self.transport_options
        self.folders = broker.BrokerFolders.from_options(options)
        self.accept = frozenset(
            options.get("accept_content_types", reader.DEFAULT_ACCEPT)
        )
        self.fsync = bool(options.get("fsync", True))
        self._buffers: dict[str, deque[str]] = {}
        self._watch = FolderWatch(self.folders.inbox)
        self._listed_at = float("-inf")
        self._next_relist = 0.0
        #: When a listing held back by the rate limit may run (None: none is).
        self.relist_due: float | None = None
        self._next_recovery = 0.0
        self._reservation: claims.Reservation | None = None
        self._claimed: dict[str, Path] = {}
        self._no_ack_queues: set[str] = set()

    # --- publishing --------------------------------------------------------

    def _put(  # type: ignore[override]  # Kombu's two bases name it differently
        self, queue: str, payload: dict[str, Any], **kwargs: Any
    ) -> None:
        """Write the message to ``tmp/`` and rename it into ``in/``."""
        try:
            broker.write_message(self.folders, queue, payload, fsync=self.fsync)
        except ValueError as exc:
            raise ChannelError(str(exc)) from exc
        except OSError as exc:
            hint = (
                " (create the queue folders with FSApp(..., mkdir=True))"
                if isinstance(exc, FileNotFoundError)
                else ""
            )
            raise QueueWriteError(
                exc.errno,
                f"cannot queue a message in '{self.folders.inbox}': "
                f"{exc.strerror or exc}; nothing was queued{hint}",
            ) from exc

    def _queue_bind(
        self, exchange: str, routing_key: str, pattern: str, queue: str
    ) -> None:
        """Bind as Kombu does, then make the exchange table file private (0600)."""
        super()._queue_bind(exchange, routing_key, pattern, queue)
        table = self._exchange_file(exchange)
        if os.stat(table).st_mode & 0o077:
            os.chmod(table, broker.FILE_MODE)

    # --- consuming ---------------------------------------------------------

    def _get(self, queue: str, timeout: float | None = None) -> dict[str, Any]:
        """Claim the oldest message of ``queue``.

        Raises:
            Empty: no message is waiting.

        """
        self._maybe_recover()
        while True:
            name = self._next_name(queue)
            payload = self._take(queue, name)
            if payload is not None:
                return payload

    def _next_name(self, queue: str) -> str:
        buffer = self._buffers.get(queue)
        if not buffer and self._relist():
            buffer = self._buffers.get(queue)
        if not buffer:
            raise Empty()
        return buffer.popleft()

    def _relist(self) -> bool:
        """Refresh the in-memory listing of ``in/`` if it may have changed."""
        now = time.monotonic()
        if now < self._next_relist:
            self.relist_due = self._next_relist
            return False
        self.relist_due = None
        if not self._watch.changed() and now - self._listed_at < SAFETY_POLL_S:
            return False
        buffers: dict[str, deque[str]] = defaultdict(deque)
        for name in broker.list_messages(self.folders.inbox):
            queue = broker.queue_of(name)
            if queue is not None:
                buffers[queue].append(name)
        done = time.monotonic()
        self._buffers = buffers
        self._listed_at = done
        gap = max(MIN_RELIST_GAP_S, (done - now) * RELIST_COST_FACTOR)
        self._next_relist = done + gap
        return True

    def _take(self, queue: str, name: str) -> dict[str, Any] | None:
        if self._being_written(name):
            return None
        reservation = self._own_reservation()
        path = reservation.claim(name)
        if path is None:
            return None
        payload = reader.load_message(
            self.folders, path, self.accept, origin=self.folders.inbox / name
        )
        if payload is None:
            if path.exists():
                # Still being written by a 0.40 producer: try again later.
                claims.unclaim(self.folders, path, redelivered=False)
            return None
        tag = payload["properties"]["delivery_tag"]
        if queue in self._no_ack_queues:
            claims.settle(self.folders, path, keep=False)
        else:
            self._claimed[tag] = path
        return payload

    def _being_written(self, name: str) -> bool:
        """Whether ``in/<name>`` is a young empty file: a 0.40 producer's.

        It is left where it is (claiming it and putting it back would change
        the folder and wake every idle worker, hundreds of times a second);
        it is looked at again once the folder changes, or at the safety poll.
        """
        try:
            info = os.stat(self.folders.inbox / name)
        except FileNotFoundError:
            return False
        return info.st_size == 0 and time.time() - info.st_mtime < reader.EMPTY_GRACE_S

    def _own_reservation(self) -> claims.Reservation:
        if self._reservation is None or not self._reservation.alive:
            self._reservation = claims.Reservation(self.folders)
        return self._reservation

    def _maybe_recover(self) -> None:
        now = time.monotonic()
        if now >= self._next_recovery:
            self._next_recovery = now + SAFETY_POLL_S
            claims.recover_abandoned(self.folders)

    def basic_consume(
        self,
        queue: str,
        no_ack: bool,
        callback: Callable[..., Any],
        consumer_tag: str,
        **kwargs: Any,
    ) -> Any:
        """Consume from ``queue``; with ``no_ack`` a message is deleted on receipt."""
        if no_ack:
            self._no_ack_queues.add(queue)
        return super().basic_consume(queue, no_ack, callback, consumer_tag, **kwargs)

    def basic_cancel(self, consumer_tag: str) -> Any:
        """Stop consuming; see :meth:`basic_consume`."""
        self._no_ack_queues.discard(self._tag_to_queue.get(consumer_tag))
        return super().basic_cancel(consumer_tag)

    def basic_get(self, queue: str, no_ack: bool = False, **kwargs: Any) -> Any:
        """Fetch one message synchronously (deleted at once with ``no_ack``)."""
        message = super().basic_get(queue, no_ack=no_ack, **kwargs)
        if message is not None and no_ack:
            self._settle(message.delivery_tag, keep=False)
        return message

    # --- settling ----------------------------------------------------------

    def _settle(self, delivery_tag: str, keep: bool | None = None) -> None:
        path = self._claimed.pop(delivery_tag, None)
        if path is not None:
            if keep is None:
                keep = self.store_processed
            claims.settle(self.folders, path, keep=keep)

    def _restore_claimed(self, delivery_tag: str) -> None:
        path = self._claimed.pop(delivery_tag, None)
        if path is not None:
            claims.unclaim(self.folders, path)

    def _restore(self, message: Any) -> None:
        """Return a claimed message to ``in/`` by renaming it, never a copy.

        A message that is no longer claimed here was settled meanwhile (an
        ack racing the restore) and must not come back: Kombu's own restore
        would publish a second copy of it.
        """
        if message.delivery_tag in self._claimed:
            self._restore_claimed(message.delivery_tag)
        else:
            logger.debug("not restoring %s: settled already", message.delivery_tag)

    def close(self) -> None:
        """Close, then drop the claim lock (left claims return to the queue)."""
        super().close()
        if self._reservation is not None:
            self._reservation.release()
            self._reservation = None

    # --- inspection --------------------------------------------------------

    def _size(self, queue: str) -> int:
        """Return how many messages are waiting in ``queue``."""
        return sum(
            1
            for name in broker.list_messages(self.folders.inbox)
            if broker.queue_of(name) == queue
        )

    def _purge(self, queue: str) -> int:
        """Delete the waiting messages of ``queue``; return how many."""
        count = 0
        for name in broker.list_messages(self.folders.inbox):
            if broker.queue_of(name) != queue:
                continue
            try:
                os.unlink(self.folders.inbox / name)
            except FileNotFoundError:
                continue
            count += 1
        self._buffers.pop(queue, None)
        return count


class Transport(filesystem.Transport):
    """Kombu transport ``dvcfs://``: see the module docstring."""

    Channel = Channel
    global_state = virtual.BrokerState()
    #: Seconds between two ``stat`` calls on the folder of an idle queue.
    polling_interval = 0.005
    driver_type = "filesystem"
    driver_name = ALIAS

    def __init__(self, client: Any, **kwargs: Any) -> None:
        super().__init__(client, **kwargs)
        options = client.transport_options
        self._inbox = broker.BrokerFolders.from_options(options).inbox
        # "stat" forces the portable polling watch (e.g. on network file
        # systems, where inotify misses other hosts' changes).
        self._use_inotify = options.get("folder_watch", "auto") != "stat"
        self._waiter: FolderWaiter | None = None
        self._interrupted = False

    @property
    def default_connection_params(self) -> dict[str, Any]:
        """No host or port: the broker is a folder."""
        return {"port": self.default_port, "hostname": ""}

    def wake(self) -> None:
        """Make a blocked :meth:`drain_events` return now (as a timeout)."""
        self._interrupted = True
        self.poke()

    def poke(self) -> None:
        """Make a blocked :meth:`drain_events` look for messages now."""
        if self._waiter is not None:
            self._waiter.poke()

    def drain_events(  # type: ignore[override]  # Kombu's base takes **kwargs only
        self, connection: Any, timeout: float | None = None
    ) -> None:
        """Deliver one message; raise ``socket.timeout`` if none came in time.

        While idle it blocks until the queue folder gets a new file (see
        :mod:`.watch`), an ack frees room for prefetching, or the safety poll
        is due. Returns early, as a timeout, when :meth:`wake` is called.
        """
        start = time.monotonic()
        while True:
            try:
                self.cycle.get(self._deliver, timeout=timeout)  # type: ignore[union-attr]
                return
            except Empty:
                pass
            self._idle_until_change(start, timeout)

    def _idle_until_change(self, start: float, timeout: float | None) -> None:
        if self._waiter is None:
            self._waiter = FolderWaiter(
                self._inbox, self.polling_interval, self._use_inotify
            )
        deadline = time.monotonic() + SAFETY_POLL_S
        for channel in self.channels:
            due = getattr(channel, "relist_due", None)
            if due is not None:
                deadline = min(deadline, due)
        if timeout is not None:
            deadline = min(deadline, start + timeout)
        while not self._interrupted:
            left = deadline - time.monotonic()
            if left <= 0 or self._waiter.wait(left):
                break
        if self._interrupted or (
            timeout is not None and time.monotonic() - start >= timeout
        ):
            self._interrupted = False
            raise socket.timeout()

    def close_connection(self, connection: Any) -> None:
        """Close the channels and stop watching the folder."""
        super().close_connection(connection)
        if self._waiter is not None:
            self._waiter.close()
            self._waiter = None


TRANSPORT_ALIASES.setdefault(ALIAS, f"{__name__}:Transport")
