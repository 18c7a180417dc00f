"""A crash-safe, low-latency Kombu transport on a local folder.

Registered with Kombu as ``dvcfs://``. It subclasses Kombu's ``filesystem``
transport, keeps its folder names and file format (queues written by
dvc-task 0.40 or Kombu's stock transport are read unchanged), and is a thin
adapter over :class:`~dvc_task.app.folderqueue.FolderQueue`, which holds the
whole on-disk protocol: atomic publish, claims that survive a crash, acks
that move files, recovery of dead consumers' claims.

It is an asynchronous transport, as Kombu's Redis transport is: a Celery
worker registers it with its event loop (:meth:`Transport.register_with_event_loop`),
so the worker runs Celery's non-blocking loop (and prefork's non-blocking
pool). The folder watch (inotify on Linux, see :mod:`.watch`) is one of the
loop's readers; a loop timer recovers dead consumers' claims and re-lists
the folder once a second whatever the watch says; an ack frees a prefetch
slot by waking the loop through the watch's wake-up pipe, never by a thread
of ours. Outside an event loop, :meth:`Transport.drain_events` blocks
on the same watch.

The sorted listing of ``in/`` is kept in memory and shared by the
transport's channels; it is read again only when the watch saw a file
arrive, after a requeue of ours, or at the once-a-second safety look.

Private Kombu names this module relies on, and why:

- ``virtual.Channel._get``, ``_put``, ``_size``, ``_purge``, ``_restore``:
  the documented seams of a virtual transport;
- ``filesystem.Channel._exchange_file`` (kombu >= 5.7): the fanout exchange
  table's path, made private (0600) after Kombu writes it;
- ``virtual.Channel._tag_to_queue``: which queue a cancelled consumer read;
- ``virtual.Transport.cycle`` and ``_deliver``: how a virtual transport
  hands a message to its consumer (what ``drain_events`` itself calls).
"""

from __future__ import annotations

import logging
import os
import socket
import time
from collections import deque
from pathlib import Path
from queue import Empty
from typing import Any, Callable

from kombu.exceptions import ChannelError
from kombu.transport import TRANSPORT_ALIASES, filesystem, virtual
from kombu.utils.scheduling import FairCycle

from dvc_task.app import broker, reader
from dvc_task.app.folderqueue import FolderQueue
from dvc_task.exceptions import DvcTaskError
from dvc_task.files import FILE_MODE
from dvc_task.watch import FolderWaiter

logger = logging.getLogger(__name__)

ALIAS = "dvcfs"
#: Look at the queue at least this often even if the watch saw nothing
#: (this also returns dead consumers' claims to the queue).
SAFETY_POLL_S = 1.0
#: Messages delivered in one turn of an event loop before it looks at its
#: other work (timers, results of the pool) again.
DELIVERIES_PER_TURN = 64


class QueueWriteError(DvcTaskError, OSError):
    """A message could not be written to the queue folder; nothing was queued."""


class QoS(virtual.QoS):
    """Unacked messages are claimed files: an ack or reject moves the file on."""

    def __init__(self, channel: Channel, prefetch_count: int = 0) -> None:
        super().__init__(channel, prefetch_count)
        #: Delivery tag -> the claimed file, for every unsettled message.
        self.claimed: dict[str, Path] = {}

    @property
    def unacked(self) -> int:
        """How many messages this channel delivered and has not settled yet."""
        return len(self.claimed)

    def ack(self, delivery_tag: str) -> None:
        """Finish with a message: it moves from ``reserved/`` to ``processed/``."""
        path = self.claimed.pop(delivery_tag, None)
        if path is not None:
            self.channel.queue.ack(path, keep=self.channel.store_processed)
        super().ack(delivery_tag)
        self.channel.connection.room_freed()

    def reject(self, delivery_tag: str, requeue: bool = False) -> None:
        """Requeue a message under its own name, or finish it as rejected."""
        path = self.claimed.pop(delivery_tag, None)
        if path is not None:
            self.channel.queue.reject(path, requeue=requeue)
        super().reject(delivery_tag, requeue=False)
        if requeue:
            self.channel.connection.folder_changed()
        self.channel.connection.room_freed()


class Channel(filesystem.Channel):
    """Filesystem channel: a Kombu face on a :class:`FolderQueue`."""

    QoS = QoS
    connection: Transport

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        options = self.transport_options
        self.queue = FolderQueue(
            broker.BrokerFolders.from_options(options),
            accept=frozenset(
                options.get("accept_content_types", reader.DEFAULT_ACCEPT)
            ),
            fsync=bool(options.get("fsync", True)),
        )
        self._no_ack_queues: set[str] = set()

    @property
    def _claims(self) -> dict[str, Path]:
        qos: QoS = self.qos
        return qos.claimed

    # --- publishing --------------------------------------------------------

    def _put(  # type: ignore[override]  # Kombu's two bases name it differently
        self, queue: str, payload: dict[str, Any], **kwargs: Any
    ) -> None:
        """Write the message to ``tmp/`` and rename it into ``in/``."""
        try:
            self.queue.put(queue, payload)
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
                f"cannot queue a message in '{self.queue.folders.inbox}': "
                f"{exc.strerror or exc}; nothing was queued{hint}",
            ) from exc

    def _queue_bind(
        self, exchange: str, routing_key: str, pattern: str, queue: str
    ) -> None:
        """Bind as Kombu does, then make the exchange table file private (0600)."""
        super()._queue_bind(exchange, routing_key, pattern, queue)
        table = self._exchange_file(exchange)
        if os.stat(table).st_mode & 0o077:
            os.chmod(table, FILE_MODE)

    # --- consuming ---------------------------------------------------------

    def _get(self, queue: str, timeout: float | None = None) -> dict[str, Any]:
        """Claim the oldest message of ``queue``.

        Raises:
            Empty: no message is waiting.

        """
        while True:
            claim = self.queue.claim(self.connection.next_name(queue))
            if claim is None:
                continue
            if queue in self._no_ack_queues:
                self.queue.ack(claim.path, keep=False)
            else:
                self._claims[claim.tag] = claim.path
            return claim.payload

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
            path = self._claims.pop(message.delivery_tag, None)
            if path is not None:
                self.queue.ack(path, keep=False)
        return message

    def _restore(self, message: Any) -> None:
        """Return a claimed message to ``in/`` by renaming it, never a copy.

        A message that is no longer claimed here was settled meanwhile (an
        ack racing the restore) and must not come back: Kombu's own restore
        would publish a second copy of it.
        """
        path = self._claims.pop(message.delivery_tag, None)
        if path is None:
            logger.debug("not restoring %s: settled already", message.delivery_tag)
            return
        self.queue.reject(path, requeue=True)
        self.connection.folder_changed()

    def close(self) -> None:
        """Close, then drop the claim lock (claims left return to the queue)."""
        super().close()
        self.queue.release()

    # --- inspection --------------------------------------------------------

    def _size(self, queue: str) -> int:
        """Return how many messages are waiting in ``queue``."""
        return self.queue.size(queue)

    def _purge(self, queue: str) -> int:
        """Delete the waiting messages of ``queue``; return how many."""
        count = self.queue.purge(queue)
        self.connection.forget(queue)
        return count


class Transport(filesystem.Transport):
    """Kombu transport ``dvcfs://``: see the module docstring."""

    Channel = Channel
    global_state = virtual.BrokerState()
    implements = filesystem.Transport.implements.extend(asynchronous=True)
    #: Seconds between two ``stat`` calls on the folder when it cannot be
    #: watched with inotify.
    polling_interval = 0.005
    driver_type = "filesystem"
    driver_name = ALIAS

    def __init__(self, client: Any, **kwargs: Any) -> None:
        super().__init__(client, **kwargs)
        options = client.transport_options
        self._folder = FolderQueue(broker.BrokerFolders.from_options(options))
        # "stat" forces the portable polling watch (e.g. on network file
        # systems, where inotify misses other hosts' changes).
        self._use_inotify = options.get("folder_watch", "auto") != "stat"
        self._waiter: FolderWaiter | None = None
        self._names: dict[str, deque[str]] = {}
        self._stale = True
        self._listed_at = float("-inf")
        self._recovered_at = float("-inf")
        self._hub: Any = None
        self._watched_fd: int | None = None
        self._poll_timer: Any = None
        self._safety_timer: Any = None
        #: In an event loop: look for messages at the loop's next turn.
        self._due = False

    @property
    def default_connection_params(self) -> dict[str, Any]:
        """No host or port: the broker is a folder."""
        return {"port": self.default_port, "hostname": ""}

    # --- the shared listing -------------------------------------------------

    def next_name(self, queue: str) -> str:
        """The next message name of ``queue`` to try to claim.

        Raises:
            Empty: none is known to be waiting.

        """
        names = self._names.get(queue)
        if not names and self._relist():
            names = self._names.get(queue)
        if not names:
            raise Empty()
        return names.popleft()

    def _relist(self) -> bool:
        now = time.monotonic()
        if now - self._recovered_at >= SAFETY_POLL_S:
            self._recovered_at = now
            self._folder.recover()
            self._stale = True
        if not self._stale and now - self._listed_at < SAFETY_POLL_S:
            return False
        self._stale = False
        self._listed_at = now
        self._names = self._folder.waiting()
        return True

    def forget(self, queue: str) -> None:
        """Drop the known names of ``queue`` (it was purged)."""
        self._names.pop(queue, None)

    def folder_changed(self) -> None:
        """A message went back into ``in/``: list the folder again."""
        self._stale = True

    def room_freed(self) -> None:
        """A prefetch slot is free again (an ack): look for messages now.

        Safe from any thread: it wakes the event loop or :meth:`drain_events`
        through the watch's wake-up pipe.
        """
        self._due = True
        if self._waiter is not None:
            self._waiter.poke()

    def _watch(self) -> FolderWaiter:
        # Made before the first look at the folder, so that no change
        # between a look and the first wait is missed.
        if self._waiter is None:
            self._waiter = FolderWaiter(
                self._folder.folders.inbox, self.polling_interval, self._use_inotify
            )
        return self._waiter

    def _cycle(self) -> FairCycle:
        if self.cycle is None:
            raise ChannelError("the connection is closed")
        return self.cycle

    # --- without an event loop ---------------------------------------------

    def drain_events(  # type: ignore[override]  # Kombu's base takes **kwargs only
        self, connection: Any, timeout: float | None = None
    ) -> None:
        """Deliver one message; raise ``socket.timeout`` if none came in time.

        While idle it blocks until the queue folder gets a new file (see
        :mod:`.watch`), an ack frees room for prefetching, or the safety
        look is due.
        """
        waiter = self._watch()
        start = time.monotonic()
        while True:
            try:
                self._cycle().get(self._deliver, timeout=timeout)
                return
            except Empty:
                pass
            now = time.monotonic()
            deadline = self._listed_at + SAFETY_POLL_S
            if timeout is not None:
                if now - start >= timeout:
                    raise socket.timeout()
                deadline = min(deadline, start + timeout)
            if waiter.wait(max(0.0, deadline - now)):
                self._stale = True

    # --- in an event loop --------------------------------------------------

    def register_with_event_loop(self, connection: Any, loop: Any) -> None:
        """Deliver from ``loop`` (a Kombu hub): watch, safety timer, deliveries."""
        self._unregister()
        self._hub = loop
        loop.add_reader(self._watch().poke_fileno(), self._on_poked)
        self._follow_watch()
        self._safety_timer = loop.call_repeatedly(SAFETY_POLL_S, self._on_safety_poll)
        loop.on_tick.add(self._on_tick)
        self._due = True

    def _follow_watch(self) -> None:
        # The inotify descriptor is a reader of the loop; without one (no
        # inotify, or the folder was deleted and is not back yet) a timer
        # looks every polling_interval instead.
        fd = self._watch().fileno()
        if fd == self._watched_fd and (fd is not None or self._poll_timer):
            return
        self._stop_watching()
        if fd is not None:
            self._hub.add_reader(fd, self._on_readable)
        else:
            self._poll_timer = self._hub.call_repeatedly(
                self.polling_interval, self._on_readable
            )
        self._watched_fd = fd

    def _stop_watching(self) -> None:
        if self._watched_fd is not None:
            self._hub.remove_reader(self._watched_fd)
            self._watched_fd = None
        if self._poll_timer is not None:
            self._poll_timer.cancel()
            self._poll_timer = None

    def _on_readable(self, *_: Any) -> None:
        if self._watch().check():
            self._stale = self._due = True
        if self._watch().fileno() != self._watched_fd:
            self._follow_watch()

    def _on_poked(self, *_: Any) -> None:
        self._watch().unpoke()
        self._due = True

    def _on_safety_poll(self) -> None:
        self._stale = self._due = True
        self._follow_watch()

    def _on_tick(self) -> None:
        if not self._due:
            return
        self._due = False
        delivered = 0
        try:
            while delivered < DELIVERIES_PER_TURN:
                self._cycle().get(self._deliver)
                delivered += 1
            self._due = True  # more may wait: the next turn goes on
        except Empty:
            pass
        if delivered:
            # What the consumer did with the messages (an ack, say) may wait
            # in the loop's ready callbacks, which run at its next turn: make
            # that turn come now, not after the loop's poll timeout.
            self._watch().poke()

    def _unregister(self) -> None:
        if self._hub is None:
            return
        self._stop_watching()
        if self._waiter is not None:
            self._hub.remove_reader(self._waiter.poke_fileno())
        if self._safety_timer is not None:
            self._safety_timer.cancel()
            self._safety_timer = None
        self._hub.on_tick.discard(self._on_tick)
        self._hub = None

    def close_connection(self, connection: Any) -> None:
        """Close the channels and stop watching the folder."""
        super().close_connection(connection)
        self._unregister()
        if self._waiter is not None:
            self._waiter.close()
            self._waiter = None


TRANSPORT_ALIASES.setdefault(ALIAS, f"{__name__}:Transport")
