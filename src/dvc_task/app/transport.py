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
  folder's mtime says it changed, and poll with a cheap ``stat`` every few
  milliseconds.
"""

from __future__ import annotations

import logging
import os
import socket
import threading
import time
from collections import defaultdict, deque
from pathlib import Path
from queue import Empty
from typing import Any, Callable

from kombu.exceptions import ChannelError
from kombu.transport import TRANSPORT_ALIASES, filesystem, virtual

from dvc_task.app import broker
from dvc_task.exceptions import DvcTaskError

logger = logging.getLogger(__name__)

ALIAS = "dvcfs"
#: Re-list at least this often even if the folder's mtime did not change.
SAFETY_RELIST_S = 1.0
#: Look for dead consumers' claims this often while polling.
RECOVERY_INTERVAL_S = 1.0
#: A folder mtime this close to now may hide a second change in the same
#: clock tick, so the folder is re-listed until it is older.
RECENT_MTIME_NS = 50_000_000
#: Shortest gap between two listings; the real gap grows with listing cost.
MIN_RELIST_GAP_S = 0.002
#: Listings may take at most 1/this of the time while the folder churns.
RELIST_COST_FACTOR = 20


class QueueWriteError(DvcTaskError, OSError):
    """A message could not be written to the queue folder; nothing was queued."""


class QoS(virtual.QoS):  # type: ignore[misc]
    """Acks move the claimed file to ``processed/``; restores move it back."""

    def ack(self, delivery_tag: str) -> None:
        """Finish with a message: it moves from ``reserved/`` to ``processed/``."""
        self.channel._settle(delivery_tag)
        super().ack(delivery_tag)

    def reject(self, delivery_tag: str, requeue: bool = False) -> None:
        """Requeue a message under its own name, or finish with it."""
        if requeue:
            self.channel._restore_claimed(delivery_tag)
        else:
            self.channel._settle(delivery_tag)
        super().reject(delivery_tag, requeue=False)


class Channel(filesystem.Channel):  # type: ignore[misc]
    """Filesystem channel with atomic publish, claims and cheap polling."""

    QoS = QoS

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        options = self.transport_options
        self.folders = broker.BrokerFolders.from_options(options)
        self.accept = frozenset(options.get("accept_content_types", broker.DEFAULT_ACCEPT))
        self.fsync = bool(options.get("fsync", True))
        self._buffers: dict[str, deque[str]] = {}
        self._seen_mtime: int | None = None
        self._listed_at = float("-inf")
        self._next_relist = 0.0
        self._next_recovery = 0.0
        self._reservation: broker.Reservation | None = None
        self._claimed: dict[str, Path] = {}
        self._no_ack_queues: set[str] = set()

    # --- publishing --------------------------------------------------------

    def _put(self, queue: str, payload: dict[str, Any], **kwargs: Any) -> None:
        """Write the message to ``tmp/`` and rename it into ``in/``."""
        try:
            broker.write_message(self.folders, queue, payload, fsync=self.fsync)
        except ValueError as exc:
            raise ChannelError(str(exc)) from exc
        except OSError as exc:
            raise QueueWriteError(
                exc.errno,
                f"cannot queue a message in '{self.folders.inbox}': "
                f"{exc.strerror or exc}; nothing was queued",
            ) from exc

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
            return False
        try:
            mtime = os.stat(self.folders.inbox).st_mtime_ns
        except FileNotFoundError:
            mtime = None
        unchanged = mtime == self._seen_mtime and (
            mtime is None or abs(time.time_ns() - mtime) > RECENT_MTIME_NS
        )
        if unchanged and now - self._listed_at < SAFETY_RELIST_S:
            return False
        buffers: dict[str, deque[str]] = defaultdict(deque)
        for name in broker.list_messages(self.folders.inbox):
            queue = broker.queue_of(name)
            if queue is not None:
                buffers[queue].append(name)
        done = time.monotonic()
        self._buffers = buffers
        self._seen_mtime = mtime
        self._listed_at = done
        self._next_relist = done + max(MIN_RELIST_GAP_S, (done - now) * RELIST_COST_FACTOR)
        return True

    def _take(self, queue: str, name: str) -> dict[str, Any] | None:
        reservation = self._own_reservation()
        path = reservation.claim(name)
        if path is None:
            return None
        payload = broker.load_message(self.folders, path, self.accept)
        if payload is None:
            if path.exists():
                # Still being written by a 0.40 producer: try again later.
                broker.unclaim(self.folders, path)
            return None
        tag = payload["properties"]["delivery_tag"]
        if queue in self._no_ack_queues:
            broker.settle(self.folders, path, keep=False)
        else:
            self._claimed[tag] = path
        return payload

    def _own_reservation(self) -> broker.Reservation:
        if self._reservation is None or not self._reservation.alive:
            self._reservation = broker.Reservation(self.folders)
        return self._reservation

    def _maybe_recover(self) -> None:
        now = time.monotonic()
        if now >= self._next_recovery:
            self._next_recovery = now + RECOVERY_INTERVAL_S
            broker.recover_abandoned(self.folders)

    def basic_consume(
        self, queue: str, no_ack: bool, callback: Callable[..., Any], consumer_tag: str, **kwargs: Any
    ) -> Any:
        """Consume from ``queue``; unacked consumers' messages are deleted on receipt."""
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
            broker.settle(
                self.folders, path, keep=self.store_processed if keep is None else keep
            )

    def _restore_claimed(self, delivery_tag: str) -> None:
        path = self._claimed.pop(delivery_tag, None)
        if path is not None:
            broker.unclaim(self.folders, path)

    def _restore(self, message: Any) -> None:
        """Return a claimed message to ``in/`` by renaming it (never a copy)."""
        if message.delivery_tag in self._claimed:
            self._restore_claimed(message.delivery_tag)
        else:
            super()._restore(message)

    def close(self) -> None:
        """Close, then drop the claim lock (left claims return to the queue)."""
        super().close()
        if self._reservation is not None:
            self._reservation.release()
            self._reservation = None

    # --- inspection --------------------------------------------------------

    def _size(self, queue: str) -> int:
        """Number of messages waiting in ``queue``."""
        return sum(
            1 for name in broker.list_messages(self.folders.inbox)
            if broker.queue_of(name) == queue
        )

    def _purge(self, queue: str) -> int:
        """Delete the waiting messages of ``queue``; how many were deleted."""
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


class Transport(filesystem.Transport):  # type: ignore[misc]
    """Kombu transport ``dvcfs://``: see the module docstring."""

    Channel = Channel
    global_state = virtual.BrokerState()
    #: Seconds between two cheap polls of an idle queue.
    polling_interval = 0.005
    driver_type = "filesystem"
    driver_name = ALIAS

    def __init__(self, client: Any, **kwargs: Any) -> None:
        super().__init__(client, **kwargs)
        self._wakeup = threading.Event()

    @property
    def default_connection_params(self) -> dict[str, Any]:
        """No host or port: the broker is a folder."""
        return {"port": self.default_port, "hostname": ""}

    def wake(self) -> None:
        """Make a blocked :meth:`drain_events` return now (as a timeout)."""
        self._wakeup.set()

    def drain_events(self, connection: Any, timeout: float | None = None) -> None:
        """Deliver one message, polling cheaply; raise ``socket.timeout`` if none.

        Returns early, as a timeout, when :meth:`wake` is called.
        """
        start = time.monotonic()
        while True:
            try:
                self.cycle.get(self._deliver, timeout=timeout)
                return
            except Empty:
                pass
            if self._wakeup.is_set():
                self._wakeup.clear()
                raise socket.timeout()
            if timeout is not None and time.monotonic() - start >= timeout:
                raise socket.timeout()
            self._wakeup.wait(self.polling_interval)


TRANSPORT_ALIASES.setdefault(ALIAS, f"{__name__}:Transport")
