"""Where a folder queue keeps its schedules, and who checks them.

``<folder>/schedules/<name>.json`` holds one schedule (0600, replaced
atomically); ``.lock`` is held while one is read and written again, and
``.beat.lock`` by the one scheduler of the folder (an OS lock: if its holder
dies, however it dies, another can take it at once).
"""

from __future__ import annotations

import json
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

from dvc_task.files import (
    FileLock,
    check_name,
    read_regular,
    unlink_quietly,
    write_atomic,
)
from dvc_task.folders import make_private_folder
from dvc_task.jobs.schedules import Schedule, ScheduleError

_SUFFIX = ".json"


class FolderScheduleStore:
    """The schedules of a folder queue (see the module)."""

    #: An OS lock passes at once when its holder dies.
    handover_s = 0.0

    def __init__(self, folder: Path) -> None:
        """Schedules in ``folder`` (made when the first is saved)."""
        self.folder = folder
        self._beat = FileLock(folder / ".beat.lock")

    def names(self) -> list[str]:
        """Every schedule's name, sorted."""
        try:
            entries = sorted(p.name for p in self.folder.iterdir())
        except FileNotFoundError:
            return []
        return [
            n[: -len(_SUFFIX)] for n in entries if n.endswith(_SUFFIX) and n[0] != "."
        ]

    def load(self, name: str) -> Schedule:
        """Schedule ``name``.

        Raises:
            ScheduleError: there is none, or its file is not a schedule.
        """
        try:
            data = json.loads(read_regular(self._path(name)))
        except FileNotFoundError:
            raise ScheduleError(f"no schedule named {name!r}") from None
        except (OSError, ValueError) as exc:
            raise ScheduleError(f"schedule {name!r} cannot be read: {exc}") from None
        if not isinstance(data, dict):
            raise ScheduleError(f"schedule {name!r} cannot be read: not an object")
        return Schedule.from_json(data)

    def save(self, schedule: Schedule) -> None:
        """Write ``schedule`` (atomically)."""
        make_private_folder(self.folder)
        write_atomic(self._path(schedule.name), json.dumps(schedule.to_json()).encode())

    def delete(self, name: str) -> None:
        """Remove schedule ``name`` (none: nothing)."""
        unlink_quietly(self._path(name))

    @contextmanager
    def locked(self) -> Iterator[None]:
        """Hold the schedules' lock (read, change, write one)."""
        make_private_folder(self.folder)
        with FileLock(self.folder / ".lock"):
            yield

    def hold_beat(self) -> bool:
        """Be the folder's scheduler; whether this process is (it stays so)."""
        if not self.folder.is_dir():
            make_private_folder(self.folder)
        return self._beat.acquire()

    def drop_beat(self) -> None:
        """Stop being the scheduler."""
        self._beat.release()

    def _path(self, name: str) -> Path:
        return self.folder / f"{check_name(name, 'schedule')}{_SUFFIX}"
