"""How a job is run beside its command: retries, limits, order and slots."""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from datetime import datetime, timezone

from dvc_task.files import check_name
from dvc_task.jobs.record import JobRecord

#: The range of ``priority`` (higher starts first).
PRIORITY_RANGE = (-1_000_000, 1_000_000)


@dataclass(frozen=True)
class JobOptions:
    """How a job is run, beside its command (see :meth:`JobQueue.submit`)."""

    retries: int = 0
    retry_delay: float = 0.0
    retry_backoff: float = 1.0
    timeout: float | None = None
    after: Sequence[str] = ()
    priority: int = 0
    held: bool = False
    creates: Sequence[str] = ()
    gpus: int = 0
    resources: Mapping[str, int] = field(default_factory=dict)
    start_at: datetime | None = None
    start_by: datetime | None = None

    def __post_init__(self) -> None:
        """Check every option; a bad one raises ``ValueError`` naming it."""
        _check_count("retries", self.retries)
        _check_count("gpus", self.gpus)
        for what, seconds in (
            ("retry_delay", self.retry_delay),
            ("timeout", self.timeout),
        ):
            if seconds is not None and (
                isinstance(seconds, bool)
                or not isinstance(seconds, (int, float))
                or not math.isfinite(seconds)
                or seconds < 0
                or (what == "timeout" and seconds == 0)
            ):
                bound = "> 0" if what == "timeout" else ">= 0"
                raise ValueError(
                    f"{what} must be a number of seconds {bound}, not {seconds!r}"
                )
        if (
            isinstance(self.retry_backoff, bool)
            or not isinstance(self.retry_backoff, (int, float))
            or not 1 <= self.retry_backoff <= 100
        ):
            raise ValueError(
                "retry_backoff must be a factor from 1 to 100, "
                f"not {self.retry_backoff!r}"
            )
        low, high = PRIORITY_RANGE
        if (
            isinstance(self.priority, bool)
            or not isinstance(self.priority, int)
            or not low <= self.priority <= high
        ):
            raise ValueError(
                f"priority must be a whole number from {low} to {high}, "
                f"not {self.priority!r}"
            )
        if isinstance(self.after, str) or isinstance(self.creates, str):
            raise ValueError("after and creates are lists, not one string")
        for name in self.after:
            check_name(name, "job")
        for path in self.creates:
            if not isinstance(path, str) or not path:
                raise ValueError(f"creates: {path!r} is not a path")
        for name, count in self.resources.items():
            check_name(name, "resource")
            _check_count(f"resource {name!r}", count)
        for what, when in (("start_at", self.start_at), ("start_by", self.start_by)):
            if when is not None and not isinstance(when, datetime):
                raise ValueError(f"{what} must be a datetime, not {when!r}")

    def apply(self, record: JobRecord) -> None:
        """Write the options into ``record``."""
        record.retries = self.retries
        record.retry_delay = float(self.retry_delay)
        record.retry_backoff = float(self.retry_backoff)
        record.timeout = None if self.timeout is None else float(self.timeout)
        record.after = list(dict.fromkeys(self.after))
        record.priority = self.priority
        record.creates = list(self.creates)
        record.gpus = self.gpus
        record.resources = {k: v for k, v in self.resources.items() if v}
        # A naive time is the local time, as a user means it.
        if self.start_at is not None:
            record.not_before = self.start_at.astimezone(timezone.utc).isoformat()
        if self.start_by is not None:
            record.start_by = self.start_by.astimezone(timezone.utc).isoformat()


def _check_count(what: str, value: object) -> None:
    if isinstance(value, bool) or not isinstance(value, int) or value < 0:
        raise ValueError(f"{what} must be a whole number >= 0, not {value!r}")
