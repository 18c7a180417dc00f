"""A Celery application whose broker and results live in a local folder."""

from __future__ import annotations

import logging
import os
import time
from collections.abc import Iterable, Iterator
from datetime import datetime, timezone
from pathlib import Path
from typing import Any, Callable

from celery import Celery
from kombu.message import Message
from kombu.serialization import registry

from dvc_task.app import broker, transport
from dvc_task.app.folderqueue import FolderQueue
from dvc_task.utils import StrPath, remove

logger = logging.getLogger(__name__)

#: How long after an iter_processed() listing iter_queued() still adds the
#: messages taken since (see :meth:`FSApp.iter_queued`).
RECENT_LISTING_S = 5.0
#: File times come from a coarse kernel clock: a claim may look this much
#: older than it is.
CLOCK_SLACK_S = 0.02


def _content_type(serializer: str) -> str:
    try:
        return str(registry.name_to_type[serializer])
    except KeyError:
        raise ValueError(
            f"unknown serializer {serializer!r}; use one Kombu knows, e.g. 'json'"
        ) from None


def _get_fs_config(
    wdir: StrPath,
    mkdir: bool = False,
    task_serializer: str = "json",
    result_serializer: str = "json",
) -> dict[str, Any]:
    """Celery configuration for a broker and result backend in ``wdir``.

    With ``mkdir``, the folders are created (mode 0700). Existing folders are
    checked either way.

    Raises:
        UnsafeFolderError: an existing folder is not private to its owner.
        ValueError: an unknown serializer.

    """
    folders, result_path = broker.app_folders(wdir, mkdir)
    accept = sorted({_content_type(task_serializer)})
    return {
        "broker_url": f"{transport.ALIAS}://",
        "broker_transport_options": {
            "control_folder": str(folders.control),
            "data_folder_in": str(folders.inbox),
            "data_folder_out": str(folders.inbox),
            "processed_folder": str(folders.processed),
            "store_processed": True,
            "reserved_folder": str(folders.reserved),
            "quarantine_folder": str(folders.quarantine),
            "tmp_folder": str(folders.tmp),
            "accept_content_types": accept,
        },
        "result_backend": f"file://{result_path}",
        "result_persistent": True,
        "task_serializer": task_serializer,
        "result_serializer": result_serializer,
        "accept_content": [task_serializer],
    }


def _expired(headers: dict[str, Any], now: float) -> bool:
    expires = headers.get("expires")
    if isinstance(expires, (int, float)) and not isinstance(expires, bool):
        return 0 < expires <= now
    if isinstance(expires, str):
        try:
            when = datetime.fromisoformat(expires)
        except ValueError:
            return False
        if when.tzinfo is None:
            when = when.replace(tzinfo=timezone.utc)
        return when.timestamp() <= now
    return False


class FSApp(Celery):
    """Celery application on a local folder: no broker server needed.

    Messages go through the ``dvcfs://`` transport (see
    :mod:`dvc_task.app.transport`) under ``<wdir>/broker`` and results to
    Celery's filesystem backend under ``<wdir>/result``.
    """

    def __init__(
        self,
        *args: Any,
        wdir: StrPath | None = None,
        mkdir: bool = False,
        task_serializer: str = "json",
        result_serializer: str = "json",
        **kwargs: Any,
    ) -> None:
        """Create the app; positional and other keyword arguments go to Celery.

        Arguments:
            wdir: folder of the broker and results (default: current folder).
            mkdir: create the folders (mode 0700) if they do not exist.
            task_serializer: serializer of task messages (JSON by default).
            result_serializer: serializer of results (JSON by default).

        Raises:
            UnsafeFolderError: an existing folder is not private to its owner.

        """
        super().__init__(*args, **kwargs)
        self.wdir = os.fspath(wdir) if wdir else os.getcwd()
        self.conf.update(
            _get_fs_config(
                self.wdir,
                mkdir=mkdir,
                task_serializer=task_serializer,
                result_serializer=result_serializer,
            )
        )
        logger.debug("Initialized dvcfs:// app in '%s'", self.wdir)
        self._queued_paths: dict[str, Path] = {}
        self._processed_paths: dict[str, Path] = {}
        #: When iter_processed() last began listing: (wall clock, monotonic).
        self._taken_listed: tuple[float, float] | None = None

    def __reduce_keys__(self) -> dict[str, Any]:
        keys: dict[str, Any] = super().__reduce_keys__()
        keys.update({"wdir": self.wdir})
        return keys

    @property
    def broker_folders(self) -> broker.BrokerFolders:
        """The folders of this app's queue."""
        return broker.BrokerFolders.from_options(self.conf.broker_transport_options)

    @property
    def folder_queue(self) -> FolderQueue:
        """The app's on-disk queue, for reading and deleting without a worker."""
        options = self.conf.broker_transport_options
        return FolderQueue(
            self.broker_folders, frozenset(options["accept_content_types"])
        )

    def _iter_entries(self, queued: bool) -> Iterator[tuple[Path, Message]]:
        """``(path, message)`` of every readable message, waiting or taken."""
        queue = self.folder_queue
        since = None
        if queued and self._taken_listed is not None:
            wall, mono = self._taken_listed
            if time.monotonic() - mono < RECENT_LISTING_S:
                since = wall - CLOCK_SLACK_S
        elif not queued:
            self._taken_listed = (time.time(), time.monotonic())
        with self.connection_for_read() as conn, conn.channel() as channel:
            for listed in queue.paths(queued, since):
                path, payload = listed, queue.load(listed)
                moved = payload is None and queue.moved(listed, queued)
                if moved:
                    path, payload = moved, queue.load(moved)
                if payload is not None:
                    yield path, channel.Message(payload, channel=channel)

    def _iter_messages(
        self, queued: bool, cache: dict[str, Path], queue: str
    ) -> Iterator[Message]:
        for path, msg in self._iter_entries(queued):
            cache[msg.delivery_tag] = path
            if msg.delivery_info.get("routing_key") == queue:
                yield msg

    def iter_queued(self, queue: str | None = None) -> Iterator[Message]:
        """Messages waiting in ``queue`` (default queue if None), oldest first.

        Right after :meth:`iter_processed`, messages that a worker took since
        that listing began are listed here too: a caller that lists the taken
        messages, then the waiting ones (DVC does), never misses a message
        that moved from one to the other between its two listings.
        """
        yield from self._iter_messages(
            True, self._queued_paths, queue or self.conf.task_default_queue
        )

    def iter_processed(self, queue: str | None = None) -> Iterator[Message]:
        """Messages of ``queue`` taken by a worker (running, or finished)."""
        yield from self._iter_messages(
            False, self._processed_paths, queue or self.conf.task_default_queue
        )

    def _delete_msg(
        self,
        delivery_tag: str,
        messages: Callable[[], Iterable[Message]],
        cache: dict[str, Path],
        deletable: Callable[[Path], bool] = lambda _path: True,
    ) -> None:
        delete = self.folder_queue.delete
        path = cache.pop(delivery_tag, None)
        if path is not None and deletable(path) and delete(path):
            return
        for msg in messages():
            if msg.delivery_tag != delivery_tag:
                continue
            path = cache.pop(delivery_tag)
            if deletable(path) and delete(path):
                return
        raise ValueError(f"Message '{delivery_tag}' not found")

    def reject(self, delivery_tag: str) -> None:
        """Delete a queued message without a worker (no requeue).

        Raises:
            ValueError: no queued message has that delivery tag.

        """
        self._delete_msg(
            delivery_tag,
            self.iter_queued,
            self._queued_paths,
            self.folder_queue.is_waiting,
        )

    def purge(self, delivery_tag: str) -> None:
        """Delete a processed message.

        Raises:
            ValueError: no processed message has that delivery tag.

        """
        self._delete_msg(delivery_tag, self.iter_processed, self._processed_paths)

    def _gc(self, exclude: Iterable[str] = ()) -> None:
        """Delete expired messages of every queue but those in ``exclude``."""
        keep = set(exclude)
        now = datetime.now(timezone.utc).timestamp()
        for queued in (True, False):
            for path, msg in list(self._iter_entries(queued)):
                if msg.delivery_info.get("routing_key") in keep:
                    continue
                ticket = not queued and msg.headers.get("ticket")
                if ticket or _expired(msg.headers, now):
                    remove(path)

    def _clean_pidbox(self, exchange: str) -> None:
        """Delete queued broadcast replies sent through ``exchange``."""
        for path, msg in list(self._iter_entries(True)):
            if msg.delivery_info.get("exchange") == exchange:
                remove(path)

    def clean(self) -> None:
        """Tidy the broker folder after the workers have stopped.

        Returns claims of dead workers to the queue, deletes expired messages
        of queues other than the default one, and stale broadcast replies.
        """
        self.folder_queue.recover()
        self._gc(exclude=[self.conf.task_default_queue])
        self._clean_pidbox(f"reply.{self.conf.task_default_queue}.pidbox")
