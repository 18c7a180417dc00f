"""A Celery worker that runs until its queue has been empty for a while."""

from __future__ import annotations

import fcntl
import logging
import os
import signal
import sys
import threading
import time
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

from celery import Celery
from celery._state import _set_task_join_will_block, task_join_will_block
from celery.signals import task_received
from celery.utils.nodenames import default_nodename
from celery.worker import state as worker_state

from dvc_task.app import broker, claims
from dvc_task.app.filesystem import FSApp

logger = logging.getLogger(__name__)

#: How often the monitor looks at a busy worker, and at an idle one (seconds).
BUSY_POLL_S = 0.02
IDLE_POLL_S = 0.1
_FLAGS = ("without_heartbeat", "without_mingle", "without_gossip")
_NAME_FORBIDDEN = ("/", "\\", "\0")
#: Signals whose handlers a Celery worker replaces.
_WORKER_SIGNALS = tuple(
    getattr(signal, name)
    for name in ("SIGTERM", "SIGINT", "SIGQUIT", "SIGHUP", "SIGUSR1", "SIGUSR2")
    if hasattr(signal, name)
)


def _check_name(name: str) -> None:
    if not name or name in (".", "..") or any(c in name for c in _NAME_FORBIDDEN):
        raise ValueError(
            f"invalid worker name {name!r}: use a non-empty name without "
            "'/', '\\' or NUL characters"
        )


@contextmanager
def _worker_lock(path: Path) -> Iterator[bool]:
    """Hold an OS lock on ``path``; yields False if another process holds it."""
    fd = os.open(path, os.O_RDWR | os.O_CREAT, 0o600)
    try:
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            yield False
            return
        os.ftruncate(fd, 0)
        os.write(fd, f"{os.getpid()}\n".encode())
        yield True
    finally:
        os.close(fd)


@contextmanager
def _program_state_kept() -> Iterator[None]:
    """Give the program back as it was once the worker has stopped.

    A Celery worker replaces ``sys.stdout``/``sys.stderr`` with logging
    proxies, configures the root logger, installs signal handlers, marks the
    process as one where ``result.get()`` would block a task, and leaves its
    stop flag set (so a second worker would stop at once). Private Celery
    names used: ``celery._state._set_task_join_will_block`` and
    ``task_join_will_block`` (no public way to undo the marking).
    """
    streams = (sys.stdout, sys.stderr)
    root = logging.getLogger()
    root_state = (list(root.handlers), root.level)
    main_thread = threading.current_thread() is threading.main_thread()
    handlers = (
        {sig: signal.getsignal(sig) for sig in _WORKER_SIGNALS} if main_thread else {}
    )
    join_blocks = task_join_will_block()
    try:
        yield
    finally:
        sys.stdout, sys.stderr = streams
        root.handlers[:] = root_state[0]
        root.setLevel(root_state[1])
        for sig, handler in handlers.items():
            if handler is not None:
                signal.signal(sig, handler)
        _set_task_join_will_block(join_blocks)
        worker_state.should_stop = None
        worker_state.should_terminate = None


class TemporaryWorker:
    """A worker that shuts itself down once its queue has stayed empty.

    Empty means: nothing queued, nothing claimed, prefetched or scheduled
    (ETA/countdown) by this worker, and nothing running.
    """

    def __init__(self, app: Celery, timeout: float = 60, **config: Any) -> None:
        """Prepare a worker for ``app``.

        Arguments:
            app: the Celery application (an FSApp or any Celery app).
            timeout: seconds the queue must stay empty before the worker exits.
            config: worker settings: ``loglevel, hostname, pool, concurrency,
                prefetch_multiplier, without_heartbeat, without_mingle,
                without_gossip, task_events``.

        """
        self.app = app
        self.timeout = timeout
        self.config = config
        self._worker: Any = None
        self._stopped = threading.Event()
        self._last_delivery = 0.0

    def ping(self, name: str, timeout: float = 1.0) -> list[dict[str, Any]] | None:
        """Replies of worker ``name`` to a broadcast ping (None or empty if none)."""
        replies: list[dict[str, Any]] | None = self.app.control.ping(
            destination=[default_nodename(name)], timeout=timeout
        )
        return replies

    def _worker_options(self, nodename: str) -> dict[str, Any]:
        config = self.config
        loglevel = config.get("loglevel") or "INFO"
        level = (
            logging.getLevelName(loglevel.upper())
            if isinstance(loglevel, str)
            else loglevel
        )
        options: dict[str, Any] = {
            "hostname": nodename,
            "loglevel": loglevel,
            # Celery's start-up banner only at info level or below.
            "quiet": isinstance(level, int) and level > logging.INFO,
        }
        if config.get("pool"):
            options["pool_cls"] = config["pool"]
        for key in ("concurrency", "prefetch_multiplier"):
            if config.get(key):
                options[key] = int(config[key])
        for key in _FLAGS:
            if config.get(key):
                options[key] = True
        if config.get("task_events"):
            options["task_events"] = True
        return options

    def _lock_path(self, nodename: str) -> Path | None:
        if not isinstance(self.app, FSApp):
            return None
        return self.app.broker_folders.inbox.parent / f"worker-{nodename}.lock"

    def start(self, name: str, fsapp_clean: bool = False) -> None:
        """Run worker ``name`` in this thread until its queue stays empty.

        Returns at once, with a log line, if a worker of that name already
        runs on this queue. With ``fsapp_clean``, ``app.clean()`` is called
        after the worker stopped.

        Raises:
            ValueError: for a name that cannot be a file name.

        """
        _check_name(name)
        nodename = default_nodename(name)
        lock_path = self._lock_path(nodename)
        if lock_path is None:
            if self.ping(name):
                logger.info("worker '%s' is already running", nodename)
                return
            self._run(nodename, fsapp_clean)
            return
        with _worker_lock(lock_path) as locked:
            if not locked:
                logger.info("worker '%s' is already running", nodename)
                return
            self._run(nodename, fsapp_clean)

    def _on_received(self, **_: Any) -> None:
        self._last_delivery = time.monotonic()

    def _run(self, nodename: str, fsapp_clean: bool) -> None:
        self._stopped.clear()
        self._last_delivery = time.monotonic()
        # Every delivery restarts the idle clock, also one that arrives and
        # finishes between two looks of the monitor.
        task_received.connect(self._on_received, weak=False)
        with _program_state_kept():
            self._worker = self.app.Worker(**self._worker_options(nodename))
            monitor = threading.Thread(
                target=self.monitor,
                args=(nodename,),
                daemon=True,
                name="dvc-task-monitor",
            )
            monitor.start()
            try:
                self._worker.start()
            finally:
                task_received.disconnect(self._on_received)
                self._stopped.set()
                monitor.join()
                self._worker = None
        if fsapp_clean and isinstance(self.app, FSApp):
            logger.info("cleaning up FSApp broker")
            self.app.clean()
        logger.info("worker '%s' done", nodename)

    def _consumer(self) -> Any:
        worker = self._worker
        return getattr(worker, "consumer", None) if worker is not None else None

    def _queued(self, consumer: Any) -> int:
        task_consumer = getattr(consumer, "task_consumer", None)
        if task_consumer is None:
            return 1  # not consuming yet: count as busy
        if isinstance(self.app, FSApp):
            # Read the folder directly: cheap enough to ask many times a second.
            names = {queue.name for queue in task_consumer.queues}
            return sum(
                1
                for path in claims.message_paths(self.app.broker_folders, queued=True)
                if broker.queue_of(path.name) in names
            )
        total = 0
        with self.app.connection_for_read() as conn:
            channel = conn.default_channel
            for queue in task_consumer.queues:
                total += queue.bind(channel).queue_declare(passive=True).message_count
        return total

    def _busy(self) -> bool:
        """Whether anything is queued, reserved, scheduled or running."""
        if (
            worker_state.active_requests
            or worker_state.reserved_requests
            or getattr(worker_state, "scheduled_requests", None)
        ):
            return True
        consumer = self._consumer()
        if consumer is None:
            return True
        channel = getattr(getattr(consumer, "task_consumer", None), "channel", None)
        qos = getattr(channel, "_qos", None)
        if qos is not None and set(qos._delivered) - qos._dirty:
            return True
        return self._queued(consumer) > 0

    def monitor(self, name: str) -> None:
        """Watch worker ``name`` and stop it once its queue has stayed empty.

        Inside the worker that :meth:`start` runs, it looks often while work
        is going on, so that it knows closely when the queue became empty,
        and seldom while the worker idles. For a worker running elsewhere
        (another process), it asks the worker over broadcast every
        ``timeout`` seconds, shuts it down once it is idle and its queue
        empty, and returns then, or as soon as the worker no longer answers.
        """
        if self._worker is None:
            self._monitor_remote(default_nodename(name))
            return
        logger.debug("monitor: watching worker '%s'", name)
        idle_since: float | None = None
        wait = BUSY_POLL_S
        while not self._stopped.wait(wait):
            try:
                busy = self._busy()
            except Exception:
                logger.exception("monitor: could not inspect the queue")
                busy = True
            now = time.monotonic()
            if busy:
                idle_since, wait = None, BUSY_POLL_S
                continue
            if idle_since is None:
                idle_since = now
            idle_since = max(idle_since, self._last_delivery)
            left = idle_since + self.timeout - now
            if left <= 0:
                logger.info("monitor: queue empty for %ss, shutting down", self.timeout)
                self._shutdown()
                return
            wait = min(left, IDLE_POLL_S)

    def _monitor_remote(self, nodename: str) -> None:
        logger.debug("monitor: watching worker '%s' over broadcast", nodename)
        while True:
            inspect = self.app.control.inspect(destination=[nodename], timeout=1.0)
            if not inspect.ping():
                logger.info("monitor: worker '%s' is gone", nodename)
                return
            busy = any(
                tasks.get(nodename)
                for tasks in (inspect.active(), inspect.reserved(), inspect.scheduled())
                if tasks
            )
            if not busy and not self._remote_queued():
                logger.info("monitor: queue empty, shutting '%s' down", nodename)
                self.app.control.shutdown(destination=[nodename])
                return
            time.sleep(self.timeout)

    def _remote_queued(self) -> bool:
        if isinstance(self.app, FSApp):
            return any(True for _ in self.app.iter_queued())
        with self.app.connection_for_read() as conn:
            queue = self.app.amqp.queues[self.app.conf.task_default_queue]
            count: int = (
                queue.bind(conn.default_channel)
                .queue_declare(passive=True)
                .message_count
            )
            return count > 0

    def _shutdown(self) -> None:
        worker_state.should_stop = 0
        consumer = self._consumer()
        connection = getattr(consumer, "connection", None)
        wake = getattr(getattr(connection, "transport", None), "wake", None)
        if not callable(wake):
            return
        # Celery's blocking loop drains once more after it saw the stop flag,
        # so keep waking the transport until the worker has returned.
        wake()
        while not self._stopped.wait(BUSY_POLL_S):
            wake()
