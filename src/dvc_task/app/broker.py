"""The on-disk queue: its folders, message names, and how a message is written.

How a message is checked is in :mod:`.reader`; how it is written, claimed,
acked, recovered and listed, in :mod:`.folderqueue`.

Layout under the broker folder (the first three as dvc-task 0.40 had them)::

    in/          queued messages, ``<ms>_<uuid>.<queue>.msg``
    processed/   messages a worker has finished with (acked or rejected)
    control/     exchange tables for fanout (broadcast) routing
    reserved/    one folder per live consumer: ``<owner>/.lock`` + claimed files
    quarantine/  files that are not valid messages, kept for inspection
    tmp/         messages being written, before they are renamed into ``in/``

A message only ever moves by ``rename`` inside one file system, so it is in
exactly one of these folders at any time and is never seen half-written. A
consumer claims a message by renaming it into its own ``reserved/<owner>/``
folder (only one of several competing renames succeeds), and moves it on to
``processed/`` when it is acked. Each owner folder holds ``.lock`` under an OS
file lock for as long as the consumer lives; once the lock can be taken, the
owner is dead and anyone may move its messages back to ``in/``.
"""

from __future__ import annotations

import logging
import os
import threading
import time
import uuid
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from dvc_task.files import check_name
from dvc_task.folders import check_private, make_private_folder
from dvc_task.utils import StrPath, unc_path

logger = logging.getLogger(__name__)

MSG_SUFFIX = ".msg"


@dataclass(frozen=True)
class BrokerFolders:
    """Paths of one on-disk queue."""

    inbox: Path
    processed: Path
    control: Path
    reserved: Path
    quarantine: Path
    tmp: Path

    @classmethod
    def from_options(cls, options: Mapping[str, Any]) -> BrokerFolders:
        """Read the folders from Kombu transport options (0.40 keys kept)."""
        inbox = Path(options.get("data_folder_in", "data_in"))
        base = inbox.parent

        def _path(key: str, default: str) -> Path:
            return Path(options.get(key) or base / default)

        return cls(
            inbox=inbox,
            processed=_path("processed_folder", "processed"),
            control=_path("control_folder", "control"),
            reserved=_path("reserved_folder", "reserved"),
            quarantine=_path("quarantine_folder", "quarantine"),
            tmp=_path("tmp_folder", "tmp"),
        )

    def all(self) -> tuple[Path, ...]:
        """Every folder of the queue."""
        return (
            self.inbox,
            self.processed,
            self.control,
            self.reserved,
            self.quarantine,
            self.tmp,
        )


def app_folders(wdir: StrPath, mkdir: bool = False) -> tuple[BrokerFolders, Path]:
    """The broker folders and the result folder of an ``FSApp`` in ``wdir``.

    With ``mkdir``, they are created (mode 0700); existing ones are checked
    either way: a folder others may write to could hold their messages.

    Raises:
        UnsafeFolderError: an existing folder is not private to its owner.
    """
    broker_path = os.path.join(os.fspath(wdir), "broker")
    folders = BrokerFolders(
        *(
            Path(unc_path(os.path.join(broker_path, name)))
            for name in ("in", "processed", "control", "reserved", "quarantine", "tmp")
        )
    )
    result_path = Path(unc_path(os.path.join(os.fspath(wdir), "result")))
    for path in (Path(unc_path(broker_path)), *folders.all(), result_path):
        if mkdir:
            make_private_folder(path)
        elif path.is_dir():
            check_private(path)
    return folders, result_path


# --- names -----------------------------------------------------------------

_stamp_lock = threading.Lock()
_last_stamp = 0


def _next_stamp() -> int:
    # Millisecond stamps as 0.40 wrote them (monotonic clock, shared by every
    # process on the host), made strictly increasing within this process so
    # that messages published in the same millisecond keep their order.
    global _last_stamp  # noqa: PLW0603
    with _stamp_lock:
        _last_stamp = max(int(time.monotonic() * 1000), _last_stamp + 1)
        return _last_stamp


def message_name(queue: str, priority: int = 0) -> str:
    """File name for a new message on ``queue``.

    A priority other than 0 is written after the stamp (``_p5_``): higher
    priorities are delivered first, each in publish order.

    Raises:
        ValueError: a queue name that cannot be a part of a file name.

    """
    check_name(queue, what="queue")
    marker = f"p{priority}_" if priority else ""
    return f"{_next_stamp()}_{marker}{uuid.uuid4()}.{queue}{MSG_SUFFIX}"


def queue_of_message(name: str) -> str | None:
    """The queue a message file name belongs to, or None if it is no message."""
    prefix, _, rest = name.partition(".")
    if not prefix or not rest.endswith(MSG_SUFFIX) or len(rest) <= len(MSG_SUFFIX):
        return None
    return rest[: -len(MSG_SUFFIX)]


def sort_key(name: str) -> tuple[int, int, str]:
    """Order of delivery: higher priority first, then by publish stamp.

    Names without a stamp come last.
    """
    stamp, _, rest = name.partition("_")
    priority = 0
    if rest.startswith("p"):
        marker = rest[1:].partition("_")[0]
        if marker.lstrip("-").isdigit() and len(marker) < 20:
            priority = int(marker)
    return (-priority, int(stamp) if stamp.isdigit() else 1 << 62, name)


def list_messages(folder: Path) -> list[str]:
    """Names of the message files in ``folder``, in delivery order."""
    try:
        names = [n for n in os.listdir(folder) if n.endswith(MSG_SUFFIX)]
    except FileNotFoundError:
        return []
    names.sort(key=sort_key)
    return names
