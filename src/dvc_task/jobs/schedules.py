"""Recurring jobs: schedules and their ticks.

A schedule (``schedule add``) is a record of its own: its rule (a cron
expression in a time zone, evaluated by ``cronsim`` as Debian's cron does,
or a period counted from its start), when it may fire (start, end), what it
runs (a command with its directory, environment and job options), and what
it did (its last fired tick, its recent fires). :mod:`.scheduler` fires
them.
"""

from __future__ import annotations

import logging
import os
from collections.abc import Iterator, Mapping
from dataclasses import asdict, dataclass, field
from datetime import datetime, timedelta, timezone, tzinfo
from typing import Any

from dvc_task.files import check_name
from dvc_task.jobs.defaults import LOCAL
from dvc_task.jobs.options import JobOptions

logger = logging.getLogger(__name__)

CATCH_UP = ("none", "last", "all")
OVERLAP = ("skip", "queue", "allow")
#: The most missed ticks that ``catch-up all`` fires at once.
CATCH_UP_CAP = 100
#: Fires (and skipped ticks) kept in a schedule's record.
KEPT_FIRES = 20


class ScheduleError(ValueError):
    """A schedule that cannot be made or found; the message says why."""


def zone(name: str) -> tzinfo:
    """The time zone ``name`` (``'local'``: this machine's, with its DST rules).

    Raises:
        ScheduleError: an unknown zone.
    """
    from zoneinfo import ZoneInfo, ZoneInfoNotFoundError  # noqa: PLC0415

    if name == LOCAL:
        key = os.environ.get("TZ", "").lstrip(":")
        if key:
            try:
                return ZoneInfo(key)
            except (ZoneInfoNotFoundError, ValueError):
                pass
        try:
            with open("/etc/localtime", "rb") as data:
                return ZoneInfo.from_file(data, key="localtime")
        except (OSError, ValueError):
            return datetime.now().astimezone().tzinfo or timezone.utc
    try:
        return ZoneInfo(name)
    except (ZoneInfoNotFoundError, ValueError):
        raise ScheduleError(
            f"unknown time zone {name!r}: give one such as Europe/Berlin, UTC "
            "or America/New_York"
        ) from None


def check_cron(expression: str) -> None:
    """Refuse a cron expression that ``cronsim`` does not read.

    Raises:
        ScheduleError: saying what is wrong.
    """
    from cronsim import CronSim, CronSimError  # noqa: PLC0415

    try:
        CronSim(expression, datetime.now(timezone.utc))
    except (CronSimError, ValueError) as exc:
        raise ScheduleError(
            f"bad cron expression {expression!r} ({exc}): give 5 fields (minute "
            "hour day month weekday) or 6 (seconds first), e.g. '0 2 * * *'"
        ) from None


def utc(when: datetime) -> datetime:
    """``when`` in UTC (a naive time is this machine's local time)."""
    return when.astimezone(timezone.utc)


def tick_text(tick: datetime) -> str:
    """A tick as a job name has it: ``2026-12-04T02:00:00Z``."""
    return utc(tick).strftime("%Y-%m-%dT%H:%M:%SZ")


@dataclass
class Schedule:
    """A recurring job: its rule, what it runs, and what it did."""

    name: str
    command: list[str]
    cwd: str
    env: dict[str, str]
    #: A cron expression (in ``tz``), or None for ``every``.
    cron: str | None = None
    #: Seconds between fires, counted from ``start``.
    every: float | None = None
    tz: str = LOCAL
    #: When it starts (UTC, ISO): it fires no tick before; ``every`` counts
    #: from it. When it ends: no tick after.
    start: str = ""
    end: str | None = None
    catch_up: str = "last"
    overlap: str = "skip"
    #: A fire whose job starts more than this many seconds after its tick
    #: is late.
    sla: float | None = None
    #: ``JobQueue.submit`` options of every fire.
    options: dict[str, Any] = field(default_factory=dict)
    paused: bool = False
    #: The last tick it fired (or skipped): none at or before it fires again.
    last_tick: str | None = None
    #: Its recent fires: ``{"tick", "job"}`` or ``{"tick", "skipped"}``.
    fires: list[dict[str, Any]] = field(default_factory=list)

    def __post_init__(self) -> None:
        """Check the rule and the options; a bad one raises naming it."""
        check_name(self.name, "schedule")
        if "@" in self.name:
            raise ScheduleError(f"invalid schedule name {self.name!r}: no '@' in it")
        if (self.cron is None) == (self.every is None):
            raise ScheduleError("give one rule: a cron expression or every=DURATION")
        if self.cron is not None:
            check_cron(self.cron)
        if self.every is not None and not self.every > 0:
            raise ScheduleError(f"every must be a duration above 0, not {self.every!r}")
        if self.end is not None and datetime.fromisoformat(
            self.end
        ) <= datetime.fromisoformat(self.start):
            raise ScheduleError("its end is not after its start: it would never fire")
        zone(self.tz)
        if self.catch_up not in CATCH_UP:
            raise ScheduleError(f"catch-up must be one of {', '.join(CATCH_UP)}")
        if self.overlap not in OVERLAP:
            raise ScheduleError(f"overlap must be one of {', '.join(OVERLAP)}")
        if not self.command or not self.command[0]:
            raise ScheduleError("empty command: give the program to run")
        try:
            JobOptions(**self.options)
        except TypeError as exc:
            raise ScheduleError(f"not a job option: {exc}") from None

    # --- ticks --------------------------------------------------------------

    def ticks(self, after: datetime, until: datetime) -> Iterator[datetime]:
        """Its ticks in ``(after, until]`` (UTC), within its start and end."""
        begin = datetime.fromisoformat(self.start)
        after = max(after, begin - timedelta(microseconds=1))
        if self.end is not None:
            until = min(until, datetime.fromisoformat(self.end))
        if after >= until:
            return
        if self.every is not None:
            step = timedelta(seconds=self.every)
            count = max(0, int((after - begin) / step))
            tick = begin + count * step
            while tick <= until:
                if tick > after:
                    yield tick
                tick += step
            return
        from cronsim import CronSim  # noqa: PLC0415

        assert self.cron is not None
        for tick in CronSim(self.cron, after.astimezone(zone(self.tz))):
            if utc(tick) > until:
                return
            yield utc(tick)

    def next_tick(self, now: datetime) -> datetime | None:
        """The next tick it fires (due now if it is past; None once it ended)."""
        horizon = now + timedelta(days=366 * 5)
        return next(self.ticks(self.last_fired(now), horizon), None)

    def last_fired(self, now: datetime) -> datetime:
        """The tick after which it fires next (its creation if none fired)."""
        if self.last_tick is not None:
            return datetime.fromisoformat(self.last_tick)
        return min(now, datetime.fromisoformat(self.start)) - timedelta(microseconds=1)

    def due(self, now: datetime, awake_since: datetime) -> tuple[list[datetime], int]:
        """The ticks to fire now, oldest first, and how many missed ones are not.

        Ticks before ``awake_since`` are missed (see the module).
        """
        due = list(self.ticks(self.last_fired(now), now))
        if not due:
            return [], 0
        missed = [tick for tick in due if tick < awake_since]
        current = due[len(missed) :]
        if self.catch_up == "none":
            kept: list[datetime] = []
        elif self.catch_up == "last":
            kept = missed[-1:]
        else:
            kept = missed[-CATCH_UP_CAP:]
        return [*kept, *current], len(missed) - len(kept)

    # --- records -------------------------------------------------------------

    def note(self, tick: datetime, **fire: Any) -> None:
        """Record a fire (or a skipped tick) of ``tick``."""
        self.fires.append({"tick": tick.isoformat(), **fire})
        del self.fires[:-KEPT_FIRES]
        self.last_tick = max(tick, self.last_fired(tick)).isoformat()

    def job_name(self, tick: datetime) -> str:
        """The name of the job that fires ``tick``."""
        return f"{self.name}@{tick_text(tick)}"

    def rule(self) -> str:
        """``'cron 0 2 * * *'`` or ``'every 30s'``, for listings."""
        if self.cron is not None:
            return f"cron {self.cron}"
        assert self.every is not None
        for unit, size in (("d", 86400), ("h", 3600), ("m", 60)):
            if self.every >= size and self.every % size == 0:
                return f"every {self.every / size:g}{unit}"
        return f"every {self.every:g}s"

    def to_json(self) -> dict[str, Any]:
        """As JSON-ready data (what :meth:`from_json` reads)."""
        return asdict(self)

    @classmethod
    def from_json(cls, data: Mapping[str, Any]) -> Schedule:
        """The schedule that :meth:`to_json` gave.

        Raises:
            ScheduleError: not a valid schedule.
        """
        try:
            return cls(**data)
        except TypeError as exc:
            raise ScheduleError(f"not a schedule record: {exc}") from None
