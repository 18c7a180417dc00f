"""Job records on a Redis server, and the client that reaches it.

:class:`RedisStore` is the store of a
:class:`~dvc_task.jobs.redisqueue.RedisBackend`.

Keys (all start with ``dvc-task:``): ``jobs``, a hash of the records (JSON)
by name; ``seq``, the job counter; ``lock``, the jobs lock (``SET NX PX``
with a token, renewed while held); ``kill:<name>`` and ``killq:<name>``, the
signal asked and the list the job's worker reads; ``waiting``, the jobs that
wait out of the queue; ``alive:<name>``, set while a worker runs the job;
``changed``, a channel published on every record written; ``open``, the
jobs queued or running, whose message a worker looks for now and then.
"""

from __future__ import annotations

import logging
import os
import threading
import time
from collections.abc import Iterable
from pathlib import Path
from typing import TYPE_CHECKING, Any, cast

import redis
from redis.backoff import ExponentialBackoff
from redis.client import Pipeline
from redis.exceptions import (
    BusyLoadingError,
    LockNotOwnedError,
    RedisError,
    WatchError,
)
from redis.exceptions import ConnectionError as RedisConnectionError
from redis.exceptions import TimeoutError as RedisTimeoutError
from redis.retry import Retry

from dvc_task.exceptions import DvcTaskError
from dvc_task.jobs.record import (
    InvalidJobRecordError,
    JobRecord,
    UnknownJobError,
)
from dvc_task.jobs.store import Entry, KnownRecords, RecordCache, open_index
from dvc_task.statindex import bytes_key

if TYPE_CHECKING:
    from contextlib import AbstractContextManager

logger = logging.getLogger(__name__)

PREFIX = "dvc-task:"
#: Seconds between a worker's heartbeats; a job or worker without one for
#: ``ALIVE_S`` is taken for dead.
BEAT_S = 1.0
ALIVE_S = 5.0
#: The jobs lock expires this long after its holder's last renewal.
LOCK_TTL_S = 10.0
#: How long one call of a command waits for the server (a second's blip is
#: ridden out; a server that is down is said within 2 s).
RECONNECT_S = 1.5
#: Longest wait for a connection to be made (a host that drops packets).
CONNECT_TIMEOUT_S = 5.0


def connect(url: str, patience: float = RECONNECT_S) -> redis.Redis:
    """A client of the server at ``url`` that retries while it restarts.

    A call gives up once it has waited about ``patience`` seconds between
    its tries without the server.
    """
    backoff = ExponentialBackoff(cap=0.5, base=0.02)
    retries, waited = 0, 0.0
    while waited + backoff.compute(retries + 1) <= patience:
        retries += 1
        waited += backoff.compute(retries)
    return redis.Redis.from_url(
        url,
        retry=Retry(backoff, max(1, retries)),
        retry_on_error=[BusyLoadingError, RedisConnectionError, RedisTimeoutError],
        health_check_interval=30,
        socket_connect_timeout=min(CONNECT_TIMEOUT_S, max(0.5, patience)),
    )


class JobsLockLostError(DvcTaskError):
    """The jobs lock expired while this process held it; nothing more is saved."""

    def __init__(self) -> None:
        super().__init__(
            "the jobs lock on the Redis server expired while this process held it "
            f"(paused for over {LOCK_TTL_S:.0f} s, or the server restarted): "
            "another process may have changed the same jobs, so this change was "
            "not saved; look at 'dvc-task status' and do it again"
        )


class _Renewer:
    """One thread per process that renews every Redis lock held here.

    A lock that cannot be renewed because another holder has it now is
    marked lost: its holder's next write, and its release, raise.
    """

    def __init__(self) -> None:
        self._held: set[_Lock] = set()
        self._guard = threading.Lock()
        self._thread: threading.Thread | None = None

    def add(self, lock: _Lock) -> None:
        with self._guard:
            self._held.add(lock)
            if self._thread is None:
                self._thread = threading.Thread(
                    target=self._run, name="dvc-task-locks", daemon=True
                )
                self._thread.start()

    def discard(self, lock: _Lock) -> None:
        with self._guard:
            self._held.discard(lock)

    def _run(self) -> None:
        while True:
            time.sleep(LOCK_TTL_S / 3)
            with self._guard:
                held = list(self._held)
            for lock in held:
                lock.renew()


_RENEWER = _Renewer()


class _Lock:
    """The jobs lock: ``SET NX PX`` with a token, renewed while it is held."""

    def __init__(self, client: redis.Redis, key: str, holder: threading.local) -> None:
        self.key = key
        self._lock = client.lock(
            key, timeout=LOCK_TTL_S, sleep=0.002, thread_local=False
        )
        self._holder = holder
        self.lost = False

    @property
    def token(self) -> bytes | None:
        """The token of this holder (what the server keeps under the key)."""
        token: bytes | None = self._lock.local.token
        return token

    def renew(self) -> None:
        """Push the expiry back; a lock someone else holds now is lost."""
        try:
            self._lock.reacquire()
        except LockNotOwnedError:
            self.lost = True
            _RENEWER.discard(self)
            logger.error("%s", JobsLockLostError())
        except RedisError:
            pass  # away for a moment: the next renewal tries again

    def __enter__(self) -> _Lock:
        self._lock.acquire(blocking=True)
        _RENEWER.add(self)
        self._holder.lock = self
        return self

    def __exit__(self, kind: object, *exc: object) -> None:
        _RENEWER.discard(self)
        self._holder.lock = None
        try:
            self._lock.release()
        except LockNotOwnedError:
            self.lost = True
        except RedisError:
            pass  # the server is away: the lock expires by itself
        if self.lost and kind is None:
            raise JobsLockLostError


class _ChannelWaiter:
    """Woken by a message on the ``changed`` channel."""

    def __init__(self, client: redis.Redis, channel: str) -> None:
        self._pubsub = client.pubsub(ignore_subscribe_messages=True)
        self._pubsub.subscribe(channel)

    def wait(self, timeout: float) -> bool:
        deadline = time.monotonic() + timeout
        while True:
            left = deadline - time.monotonic()
            try:
                message = self._pubsub.get_message(timeout=max(0.0, left))
            except RedisError:
                time.sleep(min(0.2, max(0.0, left)))  # restarting: look again
                message = None
            if message is not None:
                while self._pubsub.get_message(timeout=0) is not None:
                    pass  # several changes: one wake-up
                return True
            if left <= 0:
                return False

    def close(self) -> None:
        self._pubsub.close()


class RedisStore:
    """The job records and what goes with them on a Redis server."""

    def __init__(
        self, client: redis.Redis, host: str, index_path: Path | None = None
    ) -> None:
        """Keep records on the server of ``client``; ``host`` is this host.

        ``index_path``: where this host keeps the records that it read, by a
        digest of their bytes, so that listing thousands does not parse and
        check each one every time.
        """
        self.client = client
        self.host = host
        self.index_path = index_path
        #: The jobs lock that this thread holds (``lock``), if any.
        self._holder = threading.local()

    def key(self, *parts: str) -> str:
        """A key of ours."""
        return PREFIX + ":".join(parts)

    def load(self, name: str) -> JobRecord:
        """The record of job ``name``."""
        data = self.client.hget(self.key("jobs"), name)
        if data is None:
            raise UnknownJobError(name)
        return JobRecord.parse(cast(bytes, data), f"job record {name!r} on Redis")

    def save(self, record: JobRecord) -> None:
        """Write ``record``; a started one written by its worker is alive.

        Under the jobs lock, only while this thread still holds it: the
        write and the check of the lock's token are one transaction.

        Raises:
            JobsLockLostError: the lock expired and someone else holds it.
        """
        held: _Lock | None = getattr(self._holder, "lock", None)
        while True:
            with self.client.pipeline() as pipe:
                try:
                    if held is not None:
                        cast(Any, pipe).watch(held.key)
                        if held.lost or pipe.get(held.key) != held.token:
                            held.lost = True
                            raise JobsLockLostError
                        pipe.multi()
                    self._write(pipe, record)
                    pipe.execute()
                    return
                except WatchError:
                    # The lock's key changed: renewed by this process (its
                    # renewer thread), or taken by another since it expired.
                    if held is None or self.client.get(held.key) != held.token:
                        if held is not None:
                            held.lost = True
                        raise JobsLockLostError from None

    def _write(self, pipe: Pipeline, record: JobRecord) -> None:
        pipe.hset(self.key("jobs"), record.name, record.to_json())
        # The jobs that should have a message somewhere (see "open").
        if record.finished or record.parked:
            pipe.srem(self.key("open"), record.name)
        else:
            pipe.sadd(self.key("open"), record.name)
        alive = self.key("alive", record.name)
        if record.finished:
            pipe.delete(alive)
        elif (
            record.runs
            and record.host == self.host
            and record.worker_pid == os.getpid()
        ):
            pipe.set(alive, b"{}", px=int(ALIVE_S * 1000), nx=True)
        pipe.publish(self.key("changed"), record.name)

    def has(self, name: str) -> bool:
        """Whether the hash has the job."""
        return bool(self.client.hexists(self.key("jobs"), name))

    def delete(self, name: str) -> None:
        """Delete the record and every key of the job."""
        pipe = self.client.pipeline()
        pipe.hdel(self.key("jobs"), name)
        pipe.srem(self.key("waiting"), name)
        pipe.srem(self.key("open"), name)
        pipe.delete(
            *(self.key(kind, name) for kind in ("kill", "killq", "alive", "out"))
        )
        pipe.publish(self.key("changed"), name)
        pipe.execute()

    def entries(
        self, names: Iterable[str] | None = None, cache: RecordCache | None = None
    ) -> dict[str, Entry]:
        """Every record (those of ``names``), read in one call.

        A record read before is taken from ``cache``, or, in a listing of
        every record, from the index at ``index_path``, while its bytes on
        the server are the same (the same BLAKE2 digest).
        """
        found: dict[str, Entry] = {}
        index = (
            open_index(self.index_path, keys_are_ctimes=False)
            if names is None and self.index_path is not None
            else None
        )
        if names is None:
            raw = cast(dict[bytes, bytes], self.client.hgetall(self.key("jobs")))
        else:
            wanted = list(names)
            values = cast(list[bytes], self.client.hmget(self.key("jobs"), wanted))
            raw = {
                name.encode("utf-8"): data
                for name, data in zip(wanted, values)
                if data is not None
            }
        known = KnownRecords(cache, index)
        for field, data in raw.items():
            name = field.decode("utf-8", "replace")
            key = bytes_key(data)
            entry = known.get(name, key)
            if entry is None:
                try:
                    entry = JobRecord.parse(data, f"job record {name!r} on Redis")
                except InvalidJobRecordError as exc:
                    entry = exc
                known.add(name, key, entry)
            found[name] = entry
        known.close(found, everything=names is None)
        return found

    def locked(self) -> AbstractContextManager[object]:
        """The jobs lock."""
        return _Lock(self.client, self.key("lock"), self._holder)

    def named_lock(self, name: str) -> AbstractContextManager[object]:
        """Another lock like the jobs lock (e.g. the schedules')."""
        return _Lock(self.client, self.key(name), threading.local())

    def next_seq(self, count: int = 1) -> int:
        """``INCRBY`` of the counter: the first of the ``count`` numbers."""
        return int(self.client.incr(self.key("seq"), count)) - count + 1

    def request_kill(self, name: str, sig: int) -> None:
        """Store the signal and wake the worker that runs the job."""
        pipe = self.client.pipeline()
        pipe.set(self.key("kill", name), int(sig))
        pipe.rpush(self.key("killq", name), int(sig))
        pipe.expire(self.key("killq", name), 24 * 3600)
        pipe.execute()

    def kill_requested(self, name: str) -> int | None:
        """The signal stored for the job."""
        value = self.client.get(self.key("kill", name))
        try:
            return int(cast(bytes, value)) if value is not None else None
        except ValueError:
            return None

    def clear_kill_request(self, name: str) -> None:
        """Delete the signal and the wake-ups."""
        self.client.delete(self.key("kill", name), self.key("killq", name))

    def mark_waiting(self, name: str) -> None:
        """Add the job to the ``waiting`` set."""
        self.client.sadd(self.key("waiting"), name)

    def unmark_waiting(self, name: str) -> None:
        """Take the job out of the ``waiting`` set."""
        self.client.srem(self.key("waiting"), name)

    def open_names(self) -> list[str]:
        """The jobs queued or running (whose message should exist)."""
        return _names(self.client.smembers(self.key("open")))

    def waiting_names(self) -> list[str]:
        """The ``waiting`` set."""
        return _names(self.client.smembers(self.key("waiting")))

    def changes(self) -> _ChannelWaiter:
        """A subscriber of the ``changed`` channel."""
        return _ChannelWaiter(self.client, self.key("changed"))


def _names(members: object) -> list[str]:
    return [name.decode("utf-8", "replace") for name in cast(set[bytes], members)]
