"""Flows: Python tasks and generator pipelines, every task a job.

.. code-block:: python

    from dvc_task.flow import Dependency, execute, flow, sh, task

    @task(retries=2, timeout=600)
    def train(lr: float, out: str) -> dict:
        ...

    @flow
    def sweep(lrs):
        runs = [train.make_task(lr, f"models/{lr}.pt") for lr in lrs]
        yield runs
        yield Dependency(*runs)
        best = max(runs, key=lambda t: t.result()["score"])
        yield sh(["python", "report.py", str(best.args[0])], name="report")

    result = execute(sweep([0.1, 0.01]), folder=".dvc-task")

See ``docs/flows.md``.
"""

from dvc_task.flow.driver import (
    BadStepError,
    FlowFailed,
    FlowFailedError,
    FlowResult,
    FlowRunningError,
    execute,
)
from dvc_task.flow.tasks import (
    Dependency,
    Flow,
    FlowFunction,
    FunctionTask,
    ShellTask,
    Task,
    TaskFailedError,
    TaskFunction,
    TaskNotEndedError,
    flow,
    sh,
    task,
)
from dvc_task.flow.values import NotJSONError

__all__ = [
    "BadStepError",
    "Dependency",
    "Flow",
    "FlowFailed",
    "FlowFailedError",
    "FlowFunction",
    "FlowResult",
    "FlowRunningError",
    "FunctionTask",
    "NotJSONError",
    "ShellTask",
    "Task",
    "TaskFailedError",
    "TaskFunction",
    "TaskNotEndedError",
    "execute",
    "flow",
    "sh",
    "task",
]
