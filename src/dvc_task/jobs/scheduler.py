"""Firing what is due: the scheduler of a worker (``--beat``), and ``tick``.

Every fire is a job named ``<schedule>@<tick>`` (the tick in UTC): a tick
fired twice would be a job of a name that exists, so it is never queued
twice.

Whoever checks the schedules (the one worker that holds the beat lock, or
``schedule tick`` run by the operating system's timer) calls :func:`fire_due`
holding that lock. The ticks due since the last one fired are on time if
they fell due while a scheduler was awake: since the present one took the
lock (or woke from a sleep of the machine), less the time the lock takes to
pass from a scheduler that died and two of its checks. Older ones are
missed, and the schedule's catch-up rule says which of them fire: ``none``,
``last`` (the latest, once) or ``all`` (oldest first, at most
:data:`~dvc_task.jobs.schedules.CATCH_UP_CAP`).
"""

from __future__ import annotations

import logging
import time
from collections.abc import Callable
from contextlib import AbstractContextManager
from datetime import datetime, timedelta, timezone
from typing import Any, Protocol

from dvc_task.jobs.record import FINAL_STATES, HELD
from dvc_task.jobs.schedules import KEPT_FIRES, Schedule, ScheduleError, utc

logger = logging.getLogger(__name__)

#: A beat worker whose own checks stopped this long was asleep (the machine
#: was suspended): the ticks of the sleep are missed.
SLEPT_S = 30.0

#: Ticks this many of a scheduler's check intervals (plus a second, plus the
#: time its lock takes to pass from one that died) before it was awake are
#: on time still.
AWAKE_CHECKS = 2


class Submitter(Protocol):
    """What the scheduler needs of a job queue (a ``JobQueue``)."""

    @property
    def submit(self) -> Callable[..., Any]:
        """Queue a job (as ``JobQueue.submit``)."""

    def job(self, name: str) -> Any:
        """A job as it is now."""

    def release(self, name: str) -> None:
        """Let a held job start."""

    def kill(self, name: str) -> str:
        """Stop a job (one that has not started never runs)."""


class ScheduleStore(Protocol):
    """Where schedules are kept (a folder, or a Redis server)."""

    #: Seconds the scheduler's lock may take to pass to another scheduler.
    handover_s: float

    def names(self) -> list[str]:
        """Every schedule's name."""

    def load(self, name: str) -> Schedule:
        """Schedule ``name`` (``ScheduleError`` if none)."""

    def save(self, schedule: Schedule) -> None:
        """Write ``schedule``."""

    def delete(self, name: str) -> None:
        """Remove schedule ``name``."""

    def locked(self) -> AbstractContextManager[object]:
        """Hold the schedules' lock while one is read and written again."""

    def hold_beat(self) -> bool:
        """Be (or stay) the one scheduler; whether this process is."""

    def drop_beat(self) -> None:
        """Stop being the scheduler."""


def grace(interval: float, store: ScheduleStore) -> timedelta:
    """How long before a scheduler was awake a tick is on time still.

    ``interval``: the seconds between its checks.
    """
    return timedelta(seconds=AWAKE_CHECKS * interval + 1 + store.handover_s)


def fire_due(
    store: ScheduleStore,
    queue: Submitter,
    now: datetime,
    awake_since: datetime,
    only: str | None = None,
) -> list[str]:
    """Fire the ticks of every schedule that are due; the jobs queued.

    Call it holding the beat lock; ticks before ``awake_since`` are missed.
    ``only``: one schedule.
    """
    queued: list[str] = []
    for name in [only] if only else store.names():
        try:
            schedule = store.load(name)
        except ScheduleError as exc:
            logger.warning("schedule %s: %s", name, exc)
            continue
        if schedule.overlap == "queue":
            _release_next(schedule, queue)
        if not schedule.paused:
            queued += _fire(schedule, queue, now, awake_since)
        store.save(schedule)
    return queued


def _fire(
    schedule: Schedule, queue: Submitter, now: datetime, awake_since: datetime
) -> list[str]:
    ticks, dropped = schedule.due(now, awake_since)
    if dropped:
        logger.info(
            "schedule %s: %d missed tick(s) not fired (catch-up %s)",
            schedule.name,
            dropped,
            schedule.catch_up,
        )
        missed = list(schedule.ticks(schedule.last_fired(now), now))[:dropped]
        schedule.note(
            missed[-1], skipped=f"{dropped} missed (catch-up {schedule.catch_up})"
        )
    queued = []
    for tick in ticks:
        name = schedule.job_name(tick)
        busy = _running_fire(schedule, queue)
        if busy is not None and schedule.overlap == "skip":
            schedule.note(tick, skipped=f"job {busy} had not ended")
            continue
        try:
            queue.job(name)
        except KeyError:
            pass
        else:
            schedule.note(tick, job=name)  # fired before the last one noted it
            continue
        start_by = (
            None if schedule.sla is None else tick + timedelta(seconds=schedule.sla)
        )
        queue.submit(
            schedule.command,
            name=name,
            cwd=schedule.cwd,
            env=schedule.env,
            start_by=start_by,
            **{
                **schedule.options,
                "held": (busy is not None and schedule.overlap == "queue")
                or bool(schedule.options.get("held")),
            },
        )
        schedule.note(tick, job=name)
        queued.append(name)
    return queued


def fire_now(schedule: Schedule, queue: Submitter, now: datetime) -> str:
    """Fire ``schedule`` once now (``schedule run``); the job's name."""
    # To the microsecond: never the name of a tick's fire.
    name = f"{schedule.name}@{utc(now).strftime('%Y-%m-%dT%H:%M:%S.%fZ')}"
    queue.submit(
        schedule.command,
        name=name,
        cwd=schedule.cwd,
        env=schedule.env,
        **schedule.options,
    )
    schedule.fires.append({"tick": now.isoformat(), "job": name, "by_hand": True})
    del schedule.fires[:-KEPT_FIRES]
    return name


def _unended_fires(schedule: Schedule, queue: Submitter) -> list[tuple[str, str]]:
    """``(job, state)`` of the schedule's recent fires that have not ended."""
    found = []
    for fire in schedule.fires:
        name = fire.get("job")
        if not name:
            continue
        try:
            state = queue.job(name).state
        except KeyError:
            continue  # removed
        if state not in FINAL_STATES:
            found.append((str(name), state))
    return found


def _running_fire(schedule: Schedule, queue: Submitter) -> str | None:
    """The schedule's most recent fire that has not ended, if any."""
    unended = _unended_fires(schedule, queue)
    return unended[-1][0] if unended else None


def _release_next(schedule: Schedule, queue: Submitter) -> None:
    """``overlap queue``: release the oldest held fire once none runs."""
    unended = _unended_fires(schedule, queue)
    if unended and all(state == HELD for _, state in unended):
        queue.release(unended[0][0])


#: Seconds between a beat worker's checks of the schedules.
BEAT_CHECK_S = 1.0


class Beat:
    """The scheduler in a worker (``worker --beat``): a timer of its loop.

    At each check it holds (or takes, or renews) the beat lock and fires
    what is due; a worker that does not hold it does nothing.
    """

    def __init__(self, store: ScheduleStore, queue: Submitter) -> None:
        """Check ``store``'s schedules, queueing their jobs on ``queue``."""
        self.store = store
        self.queue = queue
        #: Since when this worker has been the scheduler, awake (None: not).
        self._since: datetime | None = None
        self._last = 0.0

    def check(self) -> None:
        """Fire what is due, if this worker is the scheduler."""
        try:
            if not self.store.hold_beat():
                self._since = None
                return
            now = datetime.now(timezone.utc)
            clock = time.monotonic()
            if self._since is None or clock - self._last > SLEPT_S:
                self._since = now  # took the lock, or woke up from a sleep
            self._last = clock
            awake_since = self._since - grace(BEAT_CHECK_S, self.store)
            with self.store.locked():
                fire_due(self.store, self.queue, now, awake_since)
        except Exception:
            logger.exception("schedules: could not check them; trying again")

    def close(self) -> None:
        """The worker stops: another may be the scheduler at once."""
        self.store.drop_beat()


# --- the verbs of ``schedule`` (``JobQueue`` and the command line) -------------


def add(store: ScheduleStore, schedule: Schedule, replace: bool = False) -> None:
    """Keep ``schedule``; one of that name is refused unless ``replace``.

    Raises:
        ScheduleError: the name is taken.
    """
    with store.locked():
        if schedule.name in store.names() and not replace:
            raise ScheduleError(
                f"a schedule named {schedule.name!r} exists: remove it first "
                f"('dvc-task schedule rm {schedule.name}'), or replace it"
            )
        store.save(schedule)


def set_paused(store: ScheduleStore, name: str, paused: bool, now: datetime) -> None:
    """Pause or resume schedule ``name``; ticks while paused never fire.

    Raises:
        ScheduleError: no such schedule.
    """
    with store.locked():
        schedule = store.load(name)
        if schedule.paused and not paused:
            schedule.last_tick = max(schedule.last_fired(now), now).isoformat()
        schedule.paused = paused
        store.save(schedule)


def remove(store: ScheduleStore, queue: Submitter, name: str) -> list[str]:
    """Forget schedule ``name``; the fires it held back (``overlap queue``).

    The jobs it fired stay, but those it held only to run one after
    another are killed: nobody would release them any more.

    Raises:
        ScheduleError: no such schedule.
    """
    with store.locked():
        schedule = store.load(name)
        store.delete(name)
    held_back = []
    if schedule.overlap == "queue" and not schedule.options.get("held"):
        held_back = [
            job for job, state in _unended_fires(schedule, queue) if state == HELD
        ]
    for job in held_back:
        queue.kill(job)
    return held_back


def run_now(store: ScheduleStore, queue: Submitter, name: str, now: datetime) -> str:
    """Fire schedule ``name`` once, now; the job's name.

    Raises:
        ScheduleError: no such schedule.
    """
    with store.locked():
        schedule = store.load(name)
        job = fire_now(schedule, queue, now)
        store.save(schedule)
    return job


def tick(
    store: ScheduleStore, queue: Submitter, now: datetime, interval: float
) -> list[str] | None:
    """Fire what is due, as the scheduler for a moment; the jobs queued.

    ``interval``: the seconds until the caller's next call. None if another
    scheduler (a worker started with ``--beat``, or another ``tick``) holds
    the lock: it fires them.
    """
    if not store.hold_beat():
        return None
    try:
        with store.locked():
            return fire_due(store, queue, now, now - grace(interval, store))
    finally:
        store.drop_beat()


def describe(schedule: Schedule, queue: Submitter, now: datetime) -> dict[str, Any]:
    """Schedule ``schedule`` for listings: its rule, next and last fire.

    The last fire is the last tick that queued a job (a skipped tick after
    it is in ``fires``); one that was only skipped shows if none did.
    """
    jobs = [fire for fire in schedule.fires if fire.get("job")]
    last = jobs[-1] if jobs else (schedule.fires[-1] if schedule.fires else None)
    state = None
    late = False
    if last is not None and last.get("job"):
        try:
            job = queue.job(last["job"])
        except KeyError:
            state = "removed"
        else:
            state, late = job.state, job.late
    upcoming = None if schedule.paused else schedule.next_tick(now)
    return {
        "name": schedule.name,
        "rule": schedule.rule(),
        "tz": schedule.tz,
        "next": None if upcoming is None else upcoming.isoformat(),
        "last": last,
        "last_state": state,
        "late": late,
        "paused": schedule.paused,
        "command": schedule.command,
        "catch_up": schedule.catch_up,
        "overlap": schedule.overlap,
        "sla": schedule.sla,
        "start": schedule.start,
        "end": schedule.end,
        "fires": list(schedule.fires),
    }
