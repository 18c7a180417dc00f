"""Where a queue on a Redis server keeps its schedules, and who checks them.

The schedules are JSON values of one hash; a short lock guards a read and
write of one. The scheduler of all hosts holds the beat lock: a key with a
token and a time-out of :data:`BEAT_TTL_S`, renewed at each check; if its
holder dies, another worker started with ``--beat`` takes it once it has
expired. The last fired tick is in the schedule, written while the lock is
held, so a hand-over neither fires a tick twice nor loses one.
"""

from __future__ import annotations

import json
from collections.abc import Iterator
from contextlib import contextmanager
from typing import cast

import redis
from redis.exceptions import LockError, RedisError

from dvc_task.files import check_name
from dvc_task.jobs.redisstore import RedisStore
from dvc_task.jobs.schedules import Schedule, ScheduleError

#: Seconds the beat lock outlives its holder's last check.
BEAT_TTL_S = 4.0


class RedisScheduleStore:
    """The schedules on a Redis server (see the module)."""

    #: The beat lock of a dead holder expires, then another takes it.
    handover_s = BEAT_TTL_S + 1.0

    def __init__(self, store: RedisStore) -> None:
        """Schedules kept beside ``store``'s jobs."""
        self.store = store
        self._hash = store.key("schedules")
        self._beat: redis.lock.Lock | None = None

    @property
    def client(self) -> redis.Redis:
        """The server's client (a worker's waits longer for a restart)."""
        return self.store.client

    def names(self) -> list[str]:
        """Every schedule's name, sorted."""
        keys = cast(list[bytes], self.client.hkeys(self._hash))
        return sorted(key.decode("utf-8", "replace") for key in keys)

    def load(self, name: str) -> Schedule:
        """Schedule ``name``.

        Raises:
            ScheduleError: there is none, or it is not a schedule.
        """
        raw = self.client.hget(self._hash, check_name(name, "schedule"))
        if raw is None:
            raise ScheduleError(f"no schedule named {name!r}")
        try:
            data = json.loads(cast(bytes, raw))
        except ValueError as exc:
            raise ScheduleError(f"schedule {name!r} cannot be read: {exc}") from None
        if not isinstance(data, dict):
            raise ScheduleError(f"schedule {name!r} cannot be read: not an object")
        return Schedule.from_json(data)

    def save(self, schedule: Schedule) -> None:
        """Write ``schedule``."""
        self.client.hset(self._hash, schedule.name, json.dumps(schedule.to_json()))

    def delete(self, name: str) -> None:
        """Remove schedule ``name`` (none: nothing)."""
        self.client.hdel(self._hash, check_name(name, "schedule"))

    @contextmanager
    def locked(self) -> Iterator[None]:
        """Hold the schedules' lock (read, change, write one)."""
        with self.store.named_lock("schedules-lock"):
            yield

    def hold_beat(self) -> bool:
        """Be the scheduler of every host; whether this process is, now.

        Called at each check: a holder renews the lock; one that lost it
        (paused past its time-out) is told so and tries to take it again.
        """
        try:
            if self._beat is not None:
                try:
                    self._beat.reacquire()
                except LockError:
                    self._beat = None
                else:
                    return True
            beat = self.client.lock(
                self.store.key("beat"), timeout=BEAT_TTL_S, thread_local=False
            )
            if beat.acquire(blocking=False):
                self._beat = beat
                return True
        except RedisError:
            return False
        return False

    def drop_beat(self) -> None:
        """Stop being the scheduler (the lock goes at once)."""
        beat, self._beat = self._beat, None
        if beat is not None:
            try:
                beat.release()
            except (LockError, RedisError):
                pass  # it expires by itself
