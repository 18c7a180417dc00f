"""Jobs: commands queued with a record, one true state, and their output.

The layer that the ``dvc-task`` command line and Python programs share::

    from dvc_task.jobs import JobQueue

    queue = JobQueue(".dvc-task")
    job = queue.submit(["python", "train.py"], name="train")
    queue.start_workers()
    print(queue.wait("train").state)
"""

from __future__ import annotations

from dvc_task.jobs.factory import open_queue
from dvc_task.jobs.listing import UNREADABLE
from dvc_task.jobs.queue import JobQueue
from dvc_task.jobs.record import (
    DEPENDENCY_FAILED,
    FAILED,
    FAILED_TO_START,
    FINAL_STATES,
    HELD,
    KILLED,
    LOST,
    QUEUED,
    RUNNING,
    SKIPPED,
    STARTING,
    STATES,
    SUCCEEDED,
    SUCCESS_STATES,
    TIMED_OUT,
    WAITING,
    InvalidJobRecordError,
    JobError,
    JobNotFinishedError,
    UnknownJobError,
)
from dvc_task.jobs.slots import Offer
from dvc_task.jobs.view import Job, WorkerInfo

__all__ = [
    "DEPENDENCY_FAILED",
    "FAILED",
    "FAILED_TO_START",
    "FINAL_STATES",
    "HELD",
    "KILLED",
    "LOST",
    "QUEUED",
    "RUNNING",
    "SKIPPED",
    "STARTING",
    "STATES",
    "SUCCEEDED",
    "SUCCESS_STATES",
    "TIMED_OUT",
    "UNREADABLE",
    "WAITING",
    "InvalidJobRecordError",
    "Job",
    "JobError",
    "JobNotFinishedError",
    "JobQueue",
    "Offer",
    "UnknownJobError",
    "WorkerInfo",
    "open_queue",
]
