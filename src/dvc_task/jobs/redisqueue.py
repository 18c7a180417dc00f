"""Jobs on a Redis server: the same job API, for workers on many hosts.

Everything that every host must see lives on the server, under keys that
start with ``dvc-task:``:

- ``jobs``: a hash of the job records (JSON), by name; ``seq``: the counter;
  ``lock``: the jobs lock (``SET NX PX`` with a token, renewed while held);
- ``out:<name>``: a stream of the job's output, appended by its worker while
  the command runs (``logs -f`` reads it on any host);
- ``alive:<name>``: set while a worker runs the job, renewed every second,
  gone a few seconds after the worker dies;
- ``kill:<name>`` and ``killq:<name>``: the signal asked, and the list that
  the running job's worker reads every 0.1 s;
- ``waiting``: the jobs that wait out of the queue; ``workers``,
  ``worker:<host>/<node>`` and ``stop:<host>/<node>``: the live workers;
- ``changed``: a channel published on every record written.

The messages are Celery's, on Redis (see :class:`~dvc_task.app.redisapp.RedisApp`).
Each host keeps its local folder (``--dir``) for its processes and its
workers' logs.
"""

from __future__ import annotations

import contextlib
import functools
import io
import json
import logging
import os
import time
from collections.abc import Collection, Iterable, Iterator
from dataclasses import replace
from datetime import datetime, timezone
from typing import TYPE_CHECKING, cast

from celery.signals import worker_ready
from redis.exceptions import BusyLoadingError, RedisError
from redis.exceptions import ConnectionError as RedisConnectionError
from redis.exceptions import TimeoutError as RedisTimeoutError

from dvc_task.app.redisapp import RedisApp, check_redis_url, redacted
from dvc_task.files import check_name
from dvc_task.folders import make_private_folder
from dvc_task.jobs import output, reading
from dvc_task.jobs.backend import (
    JOB_TASK,
    LOST_ATTEMPT,
    RUNS_ELSEWHERE,
    TAKE_OVER,
    AttemptLink,
)
from dvc_task.jobs.folder import QUEUE_KEY, TASK_MODULES, FolderBackend
from dvc_task.jobs.queue import JobQueue
from dvc_task.jobs.record import (
    QUEUED,
    RUNNING,
    JobError,
    JobRecord,
)
from dvc_task.jobs.redisschedules import RedisScheduleStore
from dvc_task.jobs.redisstore import ALIVE_S, BEAT_S, RedisStore, connect
from dvc_task.jobs.redisworker import (
    RedisLink,
    WorkerSession,
    live_workers,
    quiet_cancel_warning,
)
from dvc_task.jobs.view import (
    YOUNG_RECORD_S,
    Job,
    WorkerInfo,
    being_queued,
    derive,
    due_later,
    parse_time,
)
from dvc_task.utils import StrPath
from dvc_task.worker.temporary import LOCKS_KEY

if TYPE_CHECKING:
    from celery import Celery

    from dvc_task.jobs.scheduler import ScheduleStore

logger = logging.getLogger(__name__)

#: How long a job's heartbeat must stay away, with the server answering,
#: before its worker counts as dead (a cut-off worker beats again by then).
CONFIRM_S = 3 * BEAT_S
#: How many times a job is taken over from dead workers before it is lost.
MAX_HANDOVERS = 3
#: How long a worker's calls wait for the server to come back (a restart):
#: a job's worker that gives up leaves the job to be run again.
WORKER_RECONNECT_S = 120.0


class RedisBackend(FolderBackend):
    """A backend whose jobs, records and output are on a Redis server.

    ``folder`` is this host's own: the processes its workers run and their
    logs. Every host that uses the same server sees the same jobs.
    """

    shared = True

    def __init__(self, folder: StrPath, url: str) -> None:
        """Jobs on the Redis server at ``url``; this host's files in ``folder``.

        Raises:
            UnsafeFolderError: ``folder`` exists but is not private to its owner.
            ValueError: ``url`` is not a Redis URL.
        """
        super().__init__(folder)
        check_redis_url(url)
        self.url = url
        self.client = connect(url)
        # The listing index of a host is its own: in the host's folder.
        self.store: RedisStore = RedisStore(
            self.client, self.host, self.folder / "..index" / "redis-records.json"
        )

    @contextlib.contextmanager
    def batch(self) -> Iterator[None]:
        """Write many records and messages (the server keeps them as it does)."""
        yield

    def prepare(self) -> None:
        """Make this host's folders, and the app of the server."""
        self.app  # noqa: B018 - made with its folders

    def publish(self, record: JobRecord, countdown: float | None = None) -> None:
        """Queue the message of ``record``'s current task id on the server."""
        self.app.send_task(
            JOB_TASK,
            kwargs={"name": record.name, "folder": str(self.folder)},
            task_id=record.task_id,
            priority=self._message_priority(record.priority),
            countdown=countdown or None,
        )

    @functools.cached_property
    def schedules(self) -> ScheduleStore:
        """The schedules, on the server."""
        return RedisScheduleStore(self.store)

    @property
    def broker_url(self) -> str:
        """The server's URL (with its password: not for messages)."""
        return self.url

    @property
    def location(self) -> str:
        """The server's URL, without its password."""
        return redacted(self.url)

    def exists(self) -> bool:
        """Whether the server has jobs (or ever had) or workers."""
        return bool(
            self.client.exists(self.store.key("seq"), self.store.key("workers"))
        )

    @property
    def app(self) -> Celery:
        """The Celery app on the server."""
        app = self.__dict__.get("_app")
        if app is None:
            make_private_folder(self.folder)
            app = RedisApp("dvc-task", url=self.url, include=TASK_MODULES)
            app.conf[QUEUE_KEY] = self
            app.conf[LOCKS_KEY] = str(self.locks_dir)
            self.__dict__["_app"] = app
        return app

    def _message_priority(self, priority: int) -> int | None:
        # Kombu's Redis transport starts the lowest number first, 0 to 9.
        return max(0, min(9, 5 - priority))

    def message_states(self) -> dict[str, str]:
        """Messages are not listed: a job that has not started is queued."""
        return {}

    def job_from_record(
        self, record: JobRecord, view: dict[str, str] | None = None
    ) -> Job:
        """The job of ``record``; a started one is running while its worker beats."""
        del view
        job = derive(record, {record.task_id: QUEUED}, None, None)
        if not record.runs:
            return job
        alive = self.client.get(self.store.key("alive", record.name))
        if alive is None:
            # Its worker died: its message goes back to the queue.
            return replace(job, state=QUEUED, pid=None)
        try:
            pid = json.loads(cast(bytes, alive)).get("pid")
        except (ValueError, AttributeError):
            pid = None
        return replace(job, state=RUNNING, pid=pid if isinstance(pid, int) else None)

    def processes_without_record(self, names: Iterable[str]) -> list[Job]:
        """None: every job on a server has a record."""
        del names
        return []

    def has_queued(self) -> bool:
        """Whether a message waits, or a worker holds one not yet acknowledged."""
        return bool(cast(RedisApp, self.app).pending())

    def signal_job(self, name: str, sig: int) -> None:
        """Nothing: the request stored by ``kill`` reaches the job's worker."""
        del name, sig

    def forget_messages(self, task_ids: Collection[str]) -> None:
        """Nothing: the job task keeps no result on the server."""
        del task_ids

    def forget_orphans(self) -> None:
        """Nothing: the job task keeps no result on the server."""

    def forget_output(self, name: str) -> None:
        """Nothing more: the output stream goes with the record."""
        del name

    # --- the worker's side ---------------------------------------------------

    @contextlib.contextmanager
    def attempt_link(self, name: str) -> Iterator[AttemptLink]:
        """Send the attempt's output and liveness; take kill requests."""
        link = RedisLink(self, self.store, name)
        try:
            yield link
        finally:
            link.close()

    def resend_lost(self) -> list[str]:
        """Queue again the jobs whose message is nowhere; their names.

        Kombu's Redis transport takes a message off the queue, then notes it
        as taken: a worker cut off (or a server stopped) in between loses it.
        A job queued (or whose worker died) over :data:`YOUNG_RECORD_S` ago
        with no message waiting or held gets its message again, with the
        same task id: if the first one turns up after all, the job still runs
        once (the record decides).
        """
        names = self.store.open_names()
        if not names:
            return []
        present = cast(RedisApp, self.app).message_ids()
        resent = []
        with self.locked():
            for name in names:
                try:
                    record = self.load(name)
                except JobError:
                    self.client.srem(self.store.key("open"), name)
                    continue
                if record.task_id in present or not self._lost_message(record):
                    continue
                logger.warning("job %s: its message was lost: queued again", name)
                self.publish(record)
                resent.append(name)
        return resent

    def _lost_message(self, record: JobRecord) -> bool:
        if record.finished or record.parked:
            return False
        if record.not_started:
            return not being_queued(record) and not due_later(record)
        started = parse_time(record.started_at or record.submitted_at)
        old = (datetime.now(timezone.utc) - started).total_seconds() > YOUNG_RECORD_S
        return old and not self.client.exists(self.store.key("alive", record.name))

    def is_outage(self, exc: Exception) -> bool:
        """Whether ``exc`` is the server being away (not a refused command)."""
        return isinstance(
            exc, (RedisConnectionError, RedisTimeoutError, BusyLoadingError)
        )

    def before_start(self, name: str) -> None:
        """Before a message of a started job is judged: tell dead from cut off.

        A dead worker's job heartbeat may outlive it by up to :data:`ALIVE_S`
        seconds, and the message may come back sooner (a short visibility
        timeout): wait for the heartbeat to lapse. A live worker's heartbeat
        lapses too while the server is away, and Celery hands its messages
        back when it reconnects: so the heartbeat must then stay away for
        :data:`CONFIRM_S` more, while the server answers, before the worker
        counts as dead. This waits outside the jobs lock; :meth:`redelivered`
        then judges by the heartbeat.
        """
        try:
            record = self.load(name)
        except JobError:
            return
        if not record.runs:
            return
        alive = self.store.key("alive", name)
        deadline = time.monotonic() + ALIVE_S + BEAT_S
        while self.client.exists(alive) and time.monotonic() < deadline:
            time.sleep(BEAT_S / 4)
        absent_since = time.monotonic()
        while time.monotonic() - absent_since < CONFIRM_S:
            if self.client.exists(alive):
                return  # its worker lives: the message is a duplicate
            time.sleep(BEAT_S / 4)

    def redelivered(self, record: JobRecord) -> str:
        """Drop it if a live worker runs the job, else take it over."""
        if self.client.exists(self.store.key("alive", record.name)):
            return RUNS_ELSEWHERE
        if record.handovers >= MAX_HANDOVERS:
            return LOST_ATTEMPT
        return TAKE_OVER

    @contextlib.contextmanager
    def worker_session(self, node: str) -> Iterator[None]:
        """Register worker ``node``; renew its messages and answer ``stop``.

        Its calls to the server wait longer for a restart than a command's.
        """
        self.client = self.store.client = connect(self.url, WORKER_RECONNECT_S)
        # Celery warns at every lost connection that it may one day cancel
        # the running tasks; the app says it does not (see RedisApp). Its
        # worker turns such warnings on as it starts: turned off once ready.
        worker_ready.connect(quiet_cancel_warning, weak=False)
        session = WorkerSession(self, self.store, node, self.resend_lost)
        try:
            yield
        finally:
            session.close()
            worker_ready.disconnect(quiet_cancel_warning)

    def worker_env(self) -> dict[str, str]:
        """The environment of a detached worker: this one, with the server."""
        return {**os.environ, "DVC_TASK_BROKER": self.url}

    def workers(self, jobs: Iterable[Job] | None = None) -> list[WorkerInfo]:
        """The live workers on every host, and the jobs each runs."""
        return live_workers(self, self.store, jobs)

    def ensure_worker(self) -> str | None:
        """Start a detached worker here unless one lives on any host.

        One started here a moment ago counts before it has registered.
        """
        if live_workers(self, self.store, []):
            return None
        return super().ensure_worker()

    def ask_to_stop(self, worker: WorkerInfo) -> None:
        """Flag ``worker``, on whatever host: its heartbeat sees it and stops it."""
        key = self.store.key("stop", f"{worker.host}/{worker.node}")
        self.client.set(key, b"1", ex=60)

    # --- output --------------------------------------------------------------

    def output_pieces(self, name: str, after: str = "-") -> list[tuple[str, bytes]]:
        """Job ``name``'s output pieces after id ``after`` (``-``: all), with ids."""
        start = after if after == "-" else f"({after}"
        found = []
        for entry_id, fields in cast(
            list[tuple[bytes, dict[bytes, bytes]]],
            self.client.xrange(self.store.key("out", name), start, "+"),
        ):
            found.append((entry_id.decode("ascii"), fields.get(b"o", b"")))
        return found

    def read_output(self, name: str, tail: int | None = None) -> bytes:
        """Job ``name``'s output so far (its last ``tail`` lines if given)."""
        check_name(name, "job")
        return _joined(self.output_pieces(name), tail)

    def copy_output(self, name: str, fd: int, tail: int | None = None) -> None:
        """Write job ``name``'s output so far to file descriptor ``fd``."""
        view = memoryview(self.read_output(name, tail))
        while view:
            view = view[os.write(fd, view) :]

    def follow_output(self, name: str, tail: int | None = None) -> Iterator[bytes]:
        """Yield job ``name``'s output as its worker sends it, until it ends."""
        self.load(name)  # an unknown name raises here
        return self._follow(name, tail)

    def _follow(self, name: str, tail: int | None) -> Iterator[bytes]:
        stream = self.store.key("out", name)
        # One read: what is appended after it comes from the stream below.
        pieces = self.output_pieces(name)
        last = pieces[-1][0] if pieces else "0-0"
        first = _joined(pieces, tail)
        if first:
            yield first
        ended = False
        while True:
            try:
                found = cast(
                    list[tuple[bytes, list[tuple[bytes, dict[bytes, bytes]]]]],
                    self.client.xread({stream: last}, block=500),
                )
            except RedisError:
                found = []  # restarting: look again
            for _, entries in found or []:
                for entry_id, fields in entries:
                    last = entry_id.decode("ascii")
                    if fields.get(b"o"):
                        yield fields[b"o"]
            if found:
                continue
            if ended:
                return
            # Its worker sends the last output before it records the end:
            # once it has ended, one more read gets everything.
            ended = reading.ended(self, name)


def _joined(pieces: list[tuple[str, bytes]], tail: int | None) -> bytes:
    """The output in ``pieces`` (its last ``tail`` lines if given)."""
    data = b"".join(piece for _, piece in pieces)
    if tail is None:
        return data
    return data[output.tail_offset(io.BytesIO(data), tail) :]


class RedisJobQueue(JobQueue):
    """A :class:`JobQueue` whose jobs are on a Redis server (:class:`RedisBackend`).

    ``folder`` is this host's own: the processes its workers run and their
    logs. Every host that uses the same server sees the same jobs.
    """

    def __init__(self, folder: StrPath, url: str) -> None:
        """Jobs on the Redis server at ``url``; this host's files in ``folder``.

        Raises:
            UnsafeFolderError: ``folder`` exists but is not private to its owner.
            ValueError: ``url`` is not a Redis URL.
        """
        super().__init__(folder, RedisBackend(folder, url))
