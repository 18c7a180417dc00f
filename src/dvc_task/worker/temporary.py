"""A Celery worker that runs until its queue has been empty for a while.

The idle decision is made inside the worker's own event loop: a timer of the
worker (Celery's ``WorkController.timer``, which its event loop runs) looks
at what the worker holds, and once nothing has been received or run for
``timeout`` seconds, it stops the worker the way Celery's own warm shutdown
does (``WorkerShutdown`` raised in the loop). No thread of ours watches it.

Private Celery names used, and why:

- ``celery._state._set_task_join_will_block`` and ``task_join_will_block``:
  a worker marks the process as one where ``result.get()`` would block a
  task; there is no public way to undo that once it has stopped.
- ``celery.worker.state.should_stop`` and ``should_terminate``: reset after
  the worker stopped, because a Ctrl-C or SIGTERM to it leaves them set for
  the whole process, and a second worker would stop at once.
- ``Request._eta_timer_entry`` and ``celery.worker.state.scheduled_requests``
  / ``requests`` (:func:`drop_scheduled`): a message held for its ETA whose
  task is no longer wanted is dropped at once, so that the worker does not
  stay (busy) until the ETA comes; Celery's ``revoke`` keeps it until then.
"""

from __future__ import annotations

import logging
import os
import signal
import sys
import threading
import time
from collections.abc import Callable, Iterable, Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import psutil
from celery import Celery
from celery._state import _set_task_join_will_block, task_join_will_block
from celery.exceptions import WorkerTerminate
from celery.signals import task_received
from celery.utils.nodenames import default_nodename
from celery.worker import state as worker_state

from dvc_task.app.filesystem import FSApp
from dvc_task.files import FileLock, check_name
from dvc_task.utils import makedirs
from dvc_task.worker.locks import lock_path

logger = logging.getLogger(__name__)

#: The app setting that names a folder for the workers' name locks (an app
#: on a broker server: the workers of one host may not share a name).
LOCKS_KEY = "dvc_task_worker_locks"
#: How often the worker looks whether it became idle while it has work.
BUSY_CHECK_S = 0.05
#: Longest wait for killed idle pool processes to be gone.
POOL_EXIT_WAIT_S = 0.2
_FLAGS = ("without_heartbeat", "without_mingle", "without_gossip")
#: Signals whose handlers a Celery worker replaces.
_WORKER_SIGNALS = tuple(
    getattr(signal, name)
    for name in ("SIGTERM", "SIGINT", "SIGQUIT", "SIGHUP", "SIGUSR1", "SIGUSR2")
    if hasattr(signal, name)
)


@contextmanager
def _program_state_kept() -> Iterator[None]:
    """Give the program back as it was once the worker has stopped.

    A Celery worker replaces ``sys.stdout``/``sys.stderr`` with logging
    proxies, configures the root logger, installs signal handlers, marks the
    process as one where ``result.get()`` would block a task, and may leave
    its stop flags set.
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


def _end_idle_pool(pids: Iterable[int]) -> None:
    """Kill this process's idle pool processes and wait until they are dead.

    Dead, not reaped: the pool reaps them. Celery's cold shutdown then finds
    their result pipes closed instead of waiting on them.
    """
    children = {child.pid: child for child in psutil.Process().children()}
    doomed = [children[pid] for pid in pids if pid in children]
    for child in doomed:
        child.send_signal(signal.SIGKILL)
    deadline = time.monotonic() + POOL_EXIT_WAIT_S
    for child in doomed:
        while time.monotonic() < deadline:
            try:
                if child.status() == psutil.STATUS_ZOMBIE:
                    break
            except psutil.NoSuchProcess:
                break
            time.sleep(0.001)


def _message_count(conn: Any, queue: Any) -> int:
    """Messages waiting in ``queue``; 0 where the broker has no such queue.

    A Redis broker has no queue until a message is sent to it (an empty
    list is no key).
    """
    try:
        count: int = (
            queue.bind(conn.default_channel).queue_declare(passive=True).message_count
        )
    except conn.channel_errors:
        return 0
    return count


def drop_scheduled(consumer: Any, wanted: Callable[[Any], bool]) -> list[str]:
    """Drop the requests held for their ETA that are not ``wanted``; their ids.

    Call it in the worker's event loop (a timer of ``consumer``): each such
    request's timer entry is cancelled and its message acked.
    """
    dropped = []
    for request in tuple(worker_state.scheduled_requests):
        if wanted(request):
            continue
        entry = getattr(request, "_eta_timer_entry", None)
        if entry is not None:
            consumer.timer.cancel(entry)
        worker_state.scheduled_requests.discard(request)
        worker_state.requests.pop(request.id, None)
        request.acknowledge()
        consumer.qos.decrement_eventually()
        dropped.append(str(request.id))
    return dropped


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
        self._idle_since: float | None = None
        self._watch: Any = None

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
        if isinstance(self.app, FSApp):
            return lock_path(self.app.broker_folders.inbox.parent, nodename)
        folder = self.app.conf.get(LOCKS_KEY)
        if not folder:
            return None
        makedirs(folder, exist_ok=True, mode=0o700)
        return lock_path(Path(folder), nodename)

    def start(self, name: str, fsapp_clean: bool = False) -> None:
        """Run worker ``name`` in this thread until its queue stays empty.

        Returns at once, with a log line, if a worker of that name already
        runs on this queue. With ``fsapp_clean``, ``app.clean()`` is called
        after the worker stopped.

        Raises:
            ValueError: for a name that cannot be a file name.

        """
        check_name(name, what="worker")
        nodename = default_nodename(name)
        lock_path = self._lock_path(nodename)
        if lock_path is None:
            if self.ping(name):
                logger.info("worker '%s' is already running", nodename)
                return
            self._run(nodename, fsapp_clean)
            return
        lock = FileLock(lock_path)
        if not lock.acquire():
            logger.info("worker '%s' is already running", nodename)
            return
        try:
            lock.write(f"{os.getpid()}\n")
            self._run(nodename, fsapp_clean)
        finally:
            lock.release()

    def _on_received(self, **_: Any) -> None:
        self._last_delivery = time.monotonic()

    def _run(self, nodename: str, fsapp_clean: bool) -> None:
        self._stopped.clear()
        self._idle_since = None
        self._last_delivery = time.monotonic()
        # Every delivery restarts the idle clock, also one that arrives and
        # finishes between two looks.
        task_received.connect(self._on_received, weak=False)
        try:
            with _program_state_kept():
                self._worker = self.app.Worker(**self._worker_options(nodename))
                self._watch = self._worker.timer.call_after(
                    BUSY_CHECK_S, self._check_idle
                )
                self._worker.start()
        finally:
            task_received.disconnect(self._on_received)
            if self._watch is not None:
                self._watch.cancel()
                self._watch = None
            self._worker = None
            self._stopped.set()
        if fsapp_clean and isinstance(self.app, FSApp):
            logger.info("cleaning up FSApp broker")
            self.app.clean()
        logger.info("worker '%s' done", nodename)

    def _check_idle(self) -> None:
        """The worker's timer: stop it once it has been idle for ``timeout``."""
        worker = self._worker
        if worker is None:
            return
        try:
            busy = self._busy()
        except Exception:
            logger.exception("could not inspect the queue; looking again")
            busy = True
        now = time.monotonic()
        if busy:
            self._idle_since = None
            delay = BUSY_CHECK_S
        else:
            if self._idle_since is None:
                self._idle_since = now
            idle_since = max(self._idle_since, self._last_delivery)
            delay = idle_since + self.timeout - now
            if delay <= 0:
                logger.info("queue empty for %ss, shutting down", self.timeout)
                self._stop_worker(worker)
                return
        self._watch = worker.timer.call_after(delay, self._check_idle)

    def _stop_worker(self, worker: Any) -> None:
        if worker.hub is not None:
            # We are in the worker's event loop, and it holds no work: stop
            # it as a cold shutdown (a second Ctrl-C) does. Its pool
            # processes (prefork) are idle: they are ended at once, since
            # billiard's own way out waits fixed seconds for each.
            _end_idle_pool(worker.pool.info.get("processes", ()))
            raise WorkerTerminate(0)
        # Without an event loop the timer runs in a thread of Celery's: the
        # worker's blocking loop looks at the stop flag after each message
        # or poll (reset once it stopped, see _program_state_kept).
        worker_state.should_stop = 0

    def _consumer(self) -> Any:
        worker = self._worker
        return getattr(worker, "consumer", None) if worker is not None else None

    def _queued(self, consumer: Any) -> int:
        task_consumer = getattr(consumer, "task_consumer", None)
        if task_consumer is None:
            return 1  # not consuming yet: count as busy
        names = {queue.name for queue in task_consumer.queues}
        if isinstance(self.app, FSApp):
            # Read the folder directly: no connection needed.
            waiting = self.app.folder_queue.waiting()
            return sum(len(waiting.get(name, ())) for name in names)
        with self.app.connection_for_read() as conn:
            return sum(_message_count(conn, queue) for queue in task_consumer.queues)

    def _busy(self) -> bool:
        """Whether anything is queued, reserved, scheduled or running."""
        if (
            worker_state.active_requests
            or worker_state.reserved_requests
            or worker_state.scheduled_requests
        ):
            return True
        consumer = self._consumer()
        if consumer is None:
            return True
        channel = getattr(getattr(consumer, "task_consumer", None), "channel", None)
        # dvcfs:// counts the messages it delivered and that are not settled
        # yet (an ETA task waiting in the worker, say).
        if getattr(getattr(channel, "qos", None), "unacked", 0):
            return True
        return self._queued(consumer) > 0

    def monitor(self, name: str) -> None:
        """Stop worker ``name`` once its queue has stayed empty for ``timeout``.

        For the worker that :meth:`start` runs in this process, the worker
        decides that itself: this returns once it has stopped. For a worker
        running elsewhere (another process), it asks the worker over
        broadcast every ``timeout`` seconds, shuts it down once it is idle
        and its queue empty, and returns then, or as soon as the worker no
        longer answers.
        """
        if self._worker is not None:
            self._stopped.wait()
            return
        self._monitor_remote(default_nodename(name))

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
            self._stopped.wait(self.timeout)

    def _remote_queued(self) -> bool:
        if isinstance(self.app, FSApp):
            return any(True for _ in self.app.iter_queued())
        with self.app.connection_for_read() as conn:
            queue = self.app.amqp.queues[self.app.conf.task_default_queue]
            return _message_count(conn, queue) > 0
