"""The one owner of a job's life: every change of its phase is made here.

A job's record holds its phase (see :mod:`~dvc_task.jobs.record`) and
whether a message of its current task id is out (``has_message``). Each
transition below checks its precondition under the jobs lock, writes the
new phase, and says what becomes of the message::

    submit    -> queued (send) | held | waiting for jobs          (no message)
              (submit_all: a batch, all or none)
    hold      queued, waiting for ... -> held                     (unqueue)
    release   held -> queued (send) | waiting for jobs
    promote   waiting for jobs -> queued (send) | dependency failed
              waiting for slots -> queued (send), once slots were freed
    take      queued, waiting to retry -> started | waiting for slots
              | killed | skipped (the worker holds the message: taken)
              started, its worker dead -> queued again here (take over),
              or the attempt ends lost
    pause     started -> paused (its command stopped, its time limit too)
    resume    paused -> started
    end       started, paused -> a final state | waiting to retry (send, delayed)
    retry     final -> queued (send) | held | waiting for jobs
    kill      not started -> killed (unqueue); started: signal recorded
    forget    final -> gone (record, output, message, result)

Nothing else writes a phase: the worker's task (:mod:`~dvc_task.jobs.tasks`),
the command line and the Python API call these.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

from dvc_task import lazy

if TYPE_CHECKING:
    from dvc_task.jobs.lifecycle.queueing import (
        forget,
        hold,
        kill,
        promote,
        release,
        replace,
        retry,
        submit,
        submit_all,
    )
    from dvc_task.jobs.lifecycle.running import (
        Taken,
        end_abandoned,
        end_not_started,
        end_running,
        pause,
        resume,
        take,
    )

__all__ = [
    "Taken",
    "end_abandoned",
    "end_not_started",
    "end_running",
    "forget",
    "hold",
    "kill",
    "pause",
    "promote",
    "release",
    "replace",
    "resume",
    "retry",
    "submit",
    "submit_all",
    "take",
]

_WHERE = {
    "Taken": "dvc_task.jobs.lifecycle.running",
    "end_abandoned": "dvc_task.jobs.lifecycle.running",
    "end_not_started": "dvc_task.jobs.lifecycle.running",
    "end_running": "dvc_task.jobs.lifecycle.running",
    "forget": "dvc_task.jobs.lifecycle.queueing",
    "hold": "dvc_task.jobs.lifecycle.queueing",
    "kill": "dvc_task.jobs.lifecycle.queueing",
    "pause": "dvc_task.jobs.lifecycle.running",
    "promote": "dvc_task.jobs.lifecycle.queueing",
    "release": "dvc_task.jobs.lifecycle.queueing",
    "replace": "dvc_task.jobs.lifecycle.queueing",
    "resume": "dvc_task.jobs.lifecycle.running",
    "retry": "dvc_task.jobs.lifecycle.queueing",
    "submit": "dvc_task.jobs.lifecycle.queueing",
    "submit_all": "dvc_task.jobs.lifecycle.queueing",
    "take": "dvc_task.jobs.lifecycle.running",
}

# A transition imports its module when first used: queueing a job does not
# load what running one needs.
__getattr__ = lazy.exports(__name__, _WHERE)
