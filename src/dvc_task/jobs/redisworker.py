"""A worker's side of jobs on a Redis server: its heartbeat, and each job's link.

- :class:`WorkerSession`: the worker's entry and heartbeat on the server and
  its ``stop`` flag, as timers of the worker's event loop (installed when
  each of its Celery workers is ready), and the look for lost messages;
- :class:`RedisLink`: while a job's command runs, its output goes to the
  job's stream, its liveness to ``alive:<name>``, and kill requests come
  back (a thread of its own, which touches no state of Kombu or Celery);
- :func:`live_workers`: the workers of every host whose heartbeat is fresh.
"""

from __future__ import annotations

import contextlib
import json
import logging
import os
import signal
import threading
import time
import warnings
from collections.abc import Callable, Iterable
from typing import TYPE_CHECKING, Any, cast

from celery.signals import worker_ready
from redis.exceptions import RedisError

from dvc_task.files import open_regular
from dvc_task.jobs import reading, slots
from dvc_task.jobs import workers as worker_ops
from dvc_task.jobs.backend import AttemptLink
from dvc_task.jobs.liveworkers import short_name
from dvc_task.jobs.record import PAUSED, RUNNING
from dvc_task.jobs.redisstore import ALIVE_S, BEAT_S, RedisStore
from dvc_task.jobs.view import Job, WorkerInfo
from dvc_task.proc.info import utc_now

if TYPE_CHECKING:
    from dvc_task.jobs.backend import Backend

logger = logging.getLogger(__name__)

#: How often a running job's worker looks for output and kill requests.
LINK_POLL_S = 0.1
#: How often one of the live workers looks for jobs whose message was lost.
SWEEP_S = 10.0
#: Celery's warning about cancelling tasks on a lost connection.
_CANCEL_WARNING = r"(?s).*on connection loss cancels all currently executed tasks"
#: Output sent to the stream at most in pieces of this size.
OUTPUT_PIECE = 1 << 16


class RedisLink(AttemptLink):
    """Sends a running job's output and liveness to Redis; takes its kills."""

    def __init__(self, backend: Backend, store: RedisStore, name: str) -> None:
        self.backend = backend
        self.store = store
        self.name = name
        self.path = backend.output_path(name)
        try:
            self.offset = self.path.stat().st_size
        except FileNotFoundError:
            self.offset = 0
        self._stop = threading.Event()
        self._pid: int | None = None
        self._thread = threading.Thread(target=self._run, daemon=True)
        self._thread.start()

    def started(self) -> None:
        """The command has started: its pid goes with the heartbeat."""
        info = self.backend.manager.get(self.name)
        self._pid = info.pid if info is not None else None
        self._beat()

    def close(self) -> None:
        """The command has ended: its last output goes out, the thread ends."""
        if not self._stop.is_set():
            self._stop.set()
            self._thread.join()

    def _beat(self) -> None:
        store = self.store
        value = json.dumps({"pid": self._pid, "host": self.backend.host})
        store.client.set(store.key("alive", self.name), value, px=int(ALIVE_S * 1000))

    def _run(self) -> None:
        store = self.store
        killq = store.key("killq", self.name)
        last_beat = time.monotonic()
        while not self._stop.wait(LINK_POLL_S):
            try:
                popped = store.client.lpop(killq)
                if popped is not None:
                    self._signal(int(cast(bytes, popped)))
                self._forward()
                if time.monotonic() - last_beat >= BEAT_S:
                    last_beat = time.monotonic()
                    self._beat()
            except (RedisError, ValueError) as exc:
                logger.warning("job %s: Redis: %s; trying again", self.name, exc)
        try:
            self._forward()
        except RedisError as exc:
            # Not silently: the file on this host still has all of it.
            logger.warning(
                "job %s: the end of its output (from byte %d) could not be sent "
                "to the server (%s); it is in %s on %s",
                self.name,
                self.offset,
                exc,
                self.path,
                self.backend.host,
            )

    def _signal(self, sig: int) -> None:
        try:
            self.backend.manager.send_signal(self.name, sig, group=True)
        except ProcessLookupError:
            pass  # not started yet: the worker looks for the request then

    def _forward(self) -> None:
        try:
            fd = open_regular(self.path)
        except FileNotFoundError:
            return
        with os.fdopen(fd, "rb") as fobj:
            fobj.seek(self.offset)
            while piece := fobj.read(OUTPUT_PIECE):
                self.store.client.xadd(self.store.key("out", self.name), {"o": piece})
                self.offset += len(piece)


def quiet_cancel_warning(**_: Any) -> None:
    """Silence Celery's warning that a lost connection may cancel tasks."""
    warnings.filterwarnings("ignore", message=_CANCEL_WARNING)


class WorkerSession:
    """A worker's entry and heartbeat on the server, and its ``stop`` flag.

    The heartbeat and the look for lost messages are timers of the worker's
    event loop (installed when each of its Celery workers is ready): a
    worker whose loop is stuck stops beating, as one that died does.
    """

    def __init__(
        self,
        backend: Backend,
        store: RedisStore,
        node: str,
        resend_lost: Callable[[], object],
    ) -> None:
        self.backend = backend
        self.store = store
        self.resend_lost = resend_lost
        self.node = node
        self.ident = f"{backend.host}/{node}"
        offer = backend.app.conf.get(slots.OFFER_KEY)
        entry = {
            "node": node,
            "host": backend.host,
            "pid": os.getpid(),
            "started": utc_now(),
            "concurrency": backend.app.conf.get(worker_ops.CONCURRENCY_KEY),
            **(offer.asdict() if isinstance(offer, slots.Offer) else {}),
        }
        store.client.delete(store.key("stop", self.ident))
        store.client.hset(store.key("workers"), self.ident, json.dumps(entry))
        self.beat()
        worker_ready.connect(self._on_ready, weak=False)

    def _on_ready(self, sender: Any = None, **_: Any) -> None:
        """A Celery worker of ours is ready: its loop beats for it."""
        self.beat()
        sender.timer.call_repeatedly(BEAT_S, self.beat)
        sender.timer.call_repeatedly(SWEEP_S, self.sweep)

    def beat(self) -> None:
        """Say that this worker lives; stop it if it was asked to."""
        store = self.store
        try:
            pipe = store.client.pipeline()
            pipe.set(store.key("worker", self.ident), b"1", px=int(ALIVE_S * 1000))
            pipe.exists(store.key("stop", self.ident))
            stop = pipe.execute()[-1]
        except RedisError as exc:
            logger.warning("worker heartbeat: Redis: %s; trying again", exc)
            return
        if stop:
            logger.info("asked to stop: stopping after the running jobs")
            store.client.delete(store.key("stop", self.ident))
            os.kill(os.getpid(), signal.SIGTERM)

    def sweep(self) -> None:
        """One live worker at a time looks for jobs whose message was lost."""
        store = self.store
        try:
            if store.client.set(
                store.key("sweep"), b"1", nx=True, px=int(SWEEP_S * 1000)
            ):
                self.resend_lost()
        except RedisError as exc:
            logger.warning("looking for lost messages: Redis: %s", exc)

    def close(self) -> None:
        """The worker stops: its entry goes from the server."""
        worker_ready.disconnect(self._on_ready)
        store = self.store
        with contextlib.suppress(RedisError):
            pipe = store.client.pipeline()
            pipe.hdel(store.key("workers"), self.ident)
            pipe.delete(store.key("worker", self.ident))
            pipe.execute()


def live_workers(
    backend: Backend, store: RedisStore, jobs: Iterable[Job] | None
) -> list[WorkerInfo]:
    """The workers whose heartbeat is fresh, on every host."""
    raw = cast(dict[bytes, bytes], store.client.hgetall(store.key("workers")))
    if not raw:
        return []
    idents = sorted(key.decode("utf-8", "replace") for key in raw)
    pipe = store.client.pipeline()
    for ident in idents:
        pipe.exists(store.key("worker", ident))
    alive = dict(zip(idents, cast(list[int], pipe.execute())))
    running: dict[tuple[str | None, str | None], list[str]] = {}
    last_end: dict[tuple[str | None, str | None], str] = {}
    for job in reading.jobs(backend) if jobs is None else jobs:
        key = (job.host, job.worker)
        if job.state in (RUNNING, PAUSED):
            running.setdefault(key, []).append(job.name)
        elif job.finished_at and job.finished_at > last_end.get(key, ""):
            last_end[key] = job.finished_at
    found = []
    for ident in idents:
        if not alive[ident]:
            continue
        try:
            entry: dict[str, Any] = json.loads(raw[ident.encode("utf-8")])
        except ValueError:
            continue
        node, host = str(entry.get("node")), str(entry.get("host"))
        key = (host, node)
        busy = tuple(running.get(key, ()))
        since = entry.get("started")
        idle = None if busy else (last_end.get(key) or since)
        pid = entry.get("pid")
        concurrency = entry.get("concurrency")
        found.append(
            WorkerInfo(
                short_name(node),
                node,
                pid if isinstance(pid, int) else None,
                since,
                busy,
                idle,
                concurrency if isinstance(concurrency, int) else None,
                host=host,
                offer=slots.Offer.from_dict(entry),
            )
        )
    return found
