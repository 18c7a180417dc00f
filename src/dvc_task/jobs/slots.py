"""GPU and resource slots: which a worker offers, and which a job holds.

A slot is an OS lock (``flock``) on a file, held by the worker process that
runs the job for as long as the job runs; the OS lets go of it however that
process ends. GPU slots are one lock file per device in a folder of the
user's shared by every worker on the machine, so no two jobs of any workers
ever share a GPU. Other resources (``mem=64``) are counted per worker: one
lock file per unit in the queue folder.
"""

from __future__ import annotations

import os
import shutil
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from dvc_task.files import FileLock, check_name
from dvc_task.folders import make_private_folder
from dvc_task.jobs.record import JobError, JobRecord

#: Where the GPU locks of this user live (overridable for tests).
GPU_LOCKS_ENV = "DVC_TASK_GPU_LOCKS"
#: The key of a worker's :class:`Offer` in its Celery app's configuration.
OFFER_KEY = "dvc_task_offer"


def detect_gpus() -> list[str]:
    """The GPU indexes that ``nvidia-smi`` reports; none without it."""
    program = shutil.which("nvidia-smi")
    if program is None:
        return []
    import subprocess  # noqa: PLC0415 - 3 ms of imports: only where a GPU may be

    try:
        done = subprocess.run(
            [program, "--query-gpu=index", "--format=csv,noheader"],
            capture_output=True,
            text=True,
            timeout=30,
            check=False,
        )
    except (OSError, subprocess.TimeoutExpired):
        return []
    if done.returncode != 0:
        return []
    return [line.strip() for line in done.stdout.splitlines() if line.strip().isdigit()]


def check_gpus(wanted: int, offers: Iterable[Offer]) -> None:
    """Refuse a job that needs more GPUs than any worker could ever give it.

    A live worker's ``offers`` (on any host, for a queue on a server) or
    this machine's GPUs (a worker started here gets them) may give them.

    Raises:
        JobError: naming what each could give.

    """
    most = max((len(offer.gpus) for offer in offers), default=0)
    if wanted <= most:
        return
    have = len(detect_gpus())
    if wanted <= have:
        return
    raise JobError(
        f"the job needs {wanted} GPU(s) but no live worker offers that many "
        f"(the most: {most}) and this machine has {have} (as nvidia-smi lists "
        "them): ask for fewer, or start a worker that offers them "
        "('dvc-task start --gpus 0,1,...' on a host that has them)"
    )


def needs_text(gpus: int, resources: Mapping[str, int]) -> str:
    """``'2 GPUs, 5 mem'``: what a job needs, in words."""
    parts = [f"{gpus} GPU{'s' if gpus > 1 else ''}"] if gpus else []
    parts += [f"{count} {name}" for name, count in sorted(resources.items()) if count]
    return ", ".join(parts)


def missing(
    gpus: int, resources: Mapping[str, int], offers: Iterable[Offer]
) -> str | None:
    """Why no one of ``offers`` could ever give a job its slots; None if one could.

    ``'5 mem: no live worker offers it'``.
    """
    offers = list(offers)
    if any(_covers(offer, gpus, resources) for offer in offers):
        return None
    # Each need on its own: which of them no worker offers at all.
    needs: list[tuple[int, dict[str, int]]] = [(gpus, {})] if gpus else []
    needs += [(0, {name: count}) for name, count in sorted(resources.items()) if count]
    lacking = [
        needs_text(*need)
        for need in needs
        if not any(_covers(offer, *need) for offer in offers)
    ]
    if not lacking:
        return f"{needs_text(gpus, resources)}: no live worker offers all of them"
    pronoun = "it" if len(lacking) == 1 else "them"
    return f"{', '.join(lacking)}: no live worker offers {pronoun}"


def _covers(offer: Offer, gpus: int, resources: Mapping[str, int]) -> bool:
    """Whether ``offer`` has enough slots for a job when they are all free."""
    return len(offer.gpus) >= gpus and all(
        offer.resources.get(name, 0) >= count for name, count in resources.items()
    )


def parse_gpus(text: str) -> list[str]:
    """``'0,1'`` -> ``['0', '1']``; ``''`` or ``'none'`` -> no GPU.

    Raises:
        ValueError: an id that is not a number, or one given twice.

    """
    if text.strip().lower() in ("", "none"):
        return []
    ids = [part.strip() for part in text.split(",")]
    bad = [i for i in ids if not i.isdigit()]
    if bad or len(set(ids)) != len(ids):
        raise ValueError(
            f"bad GPU list {text!r}: give device numbers separated by commas, "
            "each once (e.g. 0,1)"
        )
    return ids


def parse_resources(items: Sequence[str]) -> dict[str, int]:
    """``['mem=64', 'disk=2']`` -> ``{'mem': 64, 'disk': 2}``.

    Raises:
        ValueError: an item that is not ``NAME=COUNT`` with a count >= 0.

    """
    found: dict[str, int] = {}
    for item in items:
        key, sep, value = item.partition("=")
        if not sep or not key or not value.strip().isdigit():
            raise ValueError(f"{item!r} is not NAME=COUNT (e.g. mem=64)")
        check_name(key, "resource")
        found[key] = int(value)
    return found


def gpu_lock_folder() -> Path:
    """The folder of this user's GPU locks (private, shared by every worker)."""
    # One folder for every worker of the user, whatever their TMPDIR.
    if os.path.isdir("/tmp"):
        tmp = "/tmp"
    else:
        import tempfile  # noqa: PLC0415 - 3 ms of imports: rarely needed

        tmp = tempfile.gettempdir()
    path = os.environ.get(GPU_LOCKS_ENV) or os.path.join(
        tmp, f"dvc-task-{os.getuid()}-gpus"
    )
    folder = Path(path)
    make_private_folder(folder)
    return folder


#: Seconds a job waits for slots before younger jobs stop overtaking it.
PATIENCE_S = 60.0


@dataclass(frozen=True)
class Offer:
    """The GPUs and resource units a worker runs jobs on.

    A job that needs slots may start before an older one that waits for
    slots (e.g. one GPU is free and the older job needs two), until the
    older one has waited ``patience`` seconds: then it goes first.
    """

    gpus: list[str]
    resources: dict[str, int]
    patience: float = PATIENCE_S

    def asdict(self) -> dict[str, Any]:
        """As JSON-ready data."""
        return {"gpus": list(self.gpus), "resources": dict(self.resources)}

    @classmethod
    def from_dict(cls, data: Mapping[str, Any]) -> Offer | None:
        """The offer that :meth:`asdict` gave; None if ``data`` holds none."""
        gpus, resources = data.get("gpus"), data.get("resources")
        if not isinstance(gpus, list) or not isinstance(resources, dict):
            return None
        return cls(
            [str(gpu) for gpu in gpus],
            {str(k): v for k, v in resources.items() if isinstance(v, int)},
        )


@dataclass
class Slots:
    """The slot locks one job holds; released with :meth:`release`."""

    gpus: list[str] = field(default_factory=list)
    locks: list[FileLock] = field(default_factory=list)

    def release(self) -> None:
        """Let go of every slot."""
        for lock in self.locks:
            lock.release()
        self.locks.clear()


def take(record: JobRecord, offer: Offer, resource_folder: Path) -> Slots | None:
    """Take the slots job ``record`` needs out of ``offer``; None if busy.

    Either every slot is taken or none is (also when taking one raises).
    """
    held = Slots()
    try:
        if _take_all(record, offer, resource_folder, held):
            return held
    except BaseException:
        held.release()
        raise
    held.release()
    return None


def _take_all(
    record: JobRecord, offer: Offer, resource_folder: Path, held: Slots
) -> bool:
    """Add every slot of ``record`` to ``held``; False at the first one busy."""
    if record.gpus:
        folder = gpu_lock_folder()
        units = {gpu: folder / f"gpu{gpu}.lock" for gpu in offer.gpus}
        got = _take_units(units, record.gpus)
        if got is None:
            return False
        held.gpus, held.locks = list(got), list(got.values())
    if record.resources:
        make_private_folder(resource_folder)
    for name, count in record.resources.items():
        units = {
            str(unit): resource_folder / f"{name}.{unit}.lock"
            for unit in range(offer.resources.get(name, 0))
        }
        got = _take_units(units, count)
        if got is None:
            return False
        held.locks.extend(got.values())
    return True


def _take_units(units: dict[str, Path], count: int) -> dict[str, FileLock] | None:
    """Locks on ``count`` of the lock files ``units``; None (none held) if busy."""
    got: dict[str, FileLock] = {}
    try:
        for unit, path in units.items():
            if len(got) == count:
                break
            lock = FileLock(path)
            if lock.acquire():
                got[unit] = lock
    except BaseException:
        for lock in got.values():
            lock.release()
        raise
    if len(got) < count:
        for lock in got.values():
            lock.release()
        return None
    return got
