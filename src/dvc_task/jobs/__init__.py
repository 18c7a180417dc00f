"""Jobs: commands queued with a record, one true state, and their output.

The layer that the ``dvc-task`` command line and Python programs share::

    from dvc_task.jobs import JobQueue

    queue = JobQueue(".dvc-task")
    job = queue.submit(["python", "train.py"], name="train")
    queue.start_workers()
    print(queue.wait("train").state)
"""

from __future__ import annotations

from typing import TYPE_CHECKING

from dvc_task import lazy

if TYPE_CHECKING:
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

_WHERE = {
    "DEPENDENCY_FAILED": "dvc_task.jobs.record",
    "FAILED": "dvc_task.jobs.record",
    "FAILED_TO_START": "dvc_task.jobs.record",
    "FINAL_STATES": "dvc_task.jobs.record",
    "HELD": "dvc_task.jobs.record",
    "KILLED": "dvc_task.jobs.record",
    "LOST": "dvc_task.jobs.record",
    "QUEUED": "dvc_task.jobs.record",
    "RUNNING": "dvc_task.jobs.record",
    "SKIPPED": "dvc_task.jobs.record",
    "STARTING": "dvc_task.jobs.record",
    "STATES": "dvc_task.jobs.record",
    "SUCCEEDED": "dvc_task.jobs.record",
    "SUCCESS_STATES": "dvc_task.jobs.record",
    "TIMED_OUT": "dvc_task.jobs.record",
    "UNREADABLE": "dvc_task.jobs.listing",
    "WAITING": "dvc_task.jobs.record",
    "InvalidJobRecordError": "dvc_task.jobs.record",
    "Job": "dvc_task.jobs.view",
    "JobError": "dvc_task.jobs.record",
    "JobNotFinishedError": "dvc_task.jobs.record",
    "JobQueue": "dvc_task.jobs.queue",
    "Offer": "dvc_task.jobs.slots",
    "UnknownJobError": "dvc_task.jobs.record",
    "WorkerInfo": "dvc_task.jobs.view",
    "open_queue": "dvc_task.jobs.factory",
}

__getattr__ = lazy.exports(__name__, _WHERE)
