"""A queue folder seen by task id: which tasks wait, which are taken.

The job layer knows its messages by Celery task id, not by file; this is
where the folder queue answers in those terms (without importing Celery):
the messages waiting or claimed, taking one off the queue, and forgetting
a finished task's processed message and result.
"""

from __future__ import annotations

import json
from collections.abc import Collection
from pathlib import Path

from dvc_task.app.broker import BrokerFolders, list_messages
from dvc_task.app.folderqueue import FolderQueue
from dvc_task.files import read_regular
from dvc_task.utils import remove

#: What :meth:`TaskIndex.states` says of a task's message.
WAITING = "queued"
CLAIMED = "starting"
#: The file name prefix of a task's result in Celery's filesystem backend.
RESULT_PREFIX = "celery-task-meta-"


def message_task_id(path: Path, tasks: Collection[str] | None = None) -> str | None:
    """The Celery task id in message file ``path`` (None if unreadable).

    With ``tasks``, None also for a message of a task not among them.
    """
    try:
        headers = json.loads(read_regular(path))["headers"]
        task_id = headers["id"]
    except (OSError, ValueError, KeyError, TypeError):
        return None
    if tasks is not None and headers.get("task") not in tasks:
        return None
    return task_id if isinstance(task_id, str) else None


class TaskIndex:
    """The messages of the queue in ``<app wdir>`` by task id."""

    def __init__(self, app_dir: Path) -> None:
        """The queue of the FSApp whose ``wdir`` is ``app_dir``."""
        self.folders = BrokerFolders.from_options(
            {"data_folder_in": str(app_dir / "broker" / "in")}
        )
        self.results = app_dir / "result"

    def states(self) -> dict[str, str]:
        """``task id ->`` :data:`WAITING` or :data:`CLAIMED`, of every message.

        A message claimed by a dead worker waits. One that moves while this
        reads is still found: into a claim after the inbox was read, or
        back into the inbox (a dead claim recovered, a requeue) after it,
        which is why the inbox is read again at the end.
        """
        inbox = self.folders.inbox
        states: dict[str, str] = {}
        seen: set[str] = set()

        def read_inbox() -> None:
            for name in list_messages(inbox):
                if name not in seen:
                    seen.add(name)
                    task_id = message_task_id(inbox / name)
                    if task_id:
                        states.setdefault(task_id, WAITING)

        read_inbox()
        for owner, alive in FolderQueue(self.folders).claims():
            for name in list_messages(owner):
                task_id = message_task_id(owner / name)
                if task_id:
                    states[task_id] = CLAIMED if alive else WAITING
        read_inbox()
        return states

    def unqueue(self, task_id: str) -> bool:
        """Delete the waiting message of ``task_id``; whether it was deleted.

        One that a worker claims meanwhile stays with the worker.
        """
        inbox = self.folders.inbox
        queue = FolderQueue(self.folders)
        return any(
            queue.delete(inbox / name)
            for name in list_messages(inbox)
            if message_task_id(inbox / name) == task_id
        )

    def processed(self, tasks: Collection[str]) -> dict[str, Path]:
        """``task id -> message file`` of the processed messages of ``tasks``."""
        folder = self.folders.processed
        found: dict[str, Path] = {}
        for name in list_messages(folder):
            task_id = message_task_id(folder / name, tasks)
            if task_id is not None:
                found[task_id] = folder / name
        return found

    def forget(self, task_id: str, processed: dict[str, Path]) -> None:
        """Delete the result of ``task_id`` and its message in ``processed``."""
        remove(self.results / f"{RESULT_PREFIX}{task_id}")
        if task_id in processed:
            remove(processed.pop(task_id))
