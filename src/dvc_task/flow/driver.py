"""Running a flow: its generator drives jobs on a queue.

The generator runs in the process that calls :func:`execute` (or, with
``wait=False``, in a detached process of its own: never in a worker's pool
slot, so a flow on a one-job worker cannot deadlock). Each task it yields
becomes a job of the queue, named ``<flow>.<task>``: listed by ``status``
and ``top``, with its output, retries, time limit, slots and hosts. Running
the same flow again is a resume: a job of the same name and command that
succeeded is not run again (unless its outputs are missing or older than
its inputs), one still queued or running is waited for, and one that
failed, was lost or killed runs again.
"""

from __future__ import annotations

import inspect
import os
import sys
import time
from dataclasses import dataclass, field
from typing import Any

from dvc_task.exceptions import DvcTaskError
from dvc_task.flow.tasks import Dependency, Flow, Task
from dvc_task.flow.values import dumps
from dvc_task.jobs import JobQueue, UnknownJobError, open_queue
from dvc_task.jobs.record import SKIPPED, SUCCESS_STATES
from dvc_task.proc import ManagedProcess, ProcessManager

#: How often a flow makes sure a worker lives while it waits for tasks.
WORKER_CHECK_S = 1.0
#: What a task's job is in a result once it was removed while the flow ran.
REMOVED = "removed"


@dataclass
class FlowResult:
    """How a flow ended: every task's final state, and what it returned."""

    name: str
    #: ``job name -> final state`` of every task, in the order yielded;
    #: ``skipped`` for one whose outputs were up to date.
    states: dict[str, str] = field(default_factory=dict)
    #: What the flow's generator returned.
    value: Any = None
    #: The exception the flow's own code raised, in words (None if none).
    error: str | None = None
    #: Whether the flow was started detached (``wait=False``): no states yet.
    detached: bool = False

    @property
    def failed(self) -> list[str]:
        """The tasks that ended without success."""
        return [name for name, s in self.states.items() if s not in SUCCESS_STATES]

    @property
    def ok(self) -> bool:
        """Whether every task succeeded (or was skipped) and the flow's code too."""
        return not self.failed and self.error is None


class FlowFailedError(DvcTaskError):
    """A flow ended with failed tasks, or its code raised (``check=True``)."""

    def __init__(self, result: FlowResult) -> None:
        """Name what failed in ``result``."""
        self.result = result
        parts = [f"{name} {result.states[name]}" for name in result.failed]
        if result.error is not None:
            parts.append(f"the flow raised {result.error}")
        super().__init__(f"flow {result.name} failed: {'; '.join(parts)}")


#: The name users of other flow libraries know.
FlowFailed = FlowFailedError


class FlowRunningError(DvcTaskError):
    """A detached run of the flow has not ended yet."""


class BadStepError(TypeError):
    """A flow yielded something that is not a step (or is no generator)."""


def execute(
    target: Flow,
    folder: str | os.PathLike[str] = ".dvc-task",
    *,
    broker: str | None = None,
    wait: bool = True,
    check: bool = False,
    progress: bool | None = None,
    start_worker: bool = True,
) -> FlowResult:
    """Run flow ``target`` on the queue in ``folder`` (or on ``broker``).

    With ``wait`` (the default) it returns once every task it yielded has
    ended, showing its progress on a terminal (``progress``); without, it
    starts a detached process that runs the flow and returns at once.
    ``start_worker`` starts a worker whenever none lives while tasks wait.

    Raises:
        FlowFailedError: with ``check``, if a task did not succeed or the
            flow's code raised.
        BadStepError: the flow yielded something that is not a step (a
            ``TypeError``).
    """
    queue = open_queue(folder, broker)
    if not wait:
        _start_detached(target, queue, broker)
        return FlowResult(target.name, detached=True)
    shown = sys.stderr.isatty() if progress is None else progress
    result = _Run(queue, shown, start_worker).run(target)
    if check and not result.ok:
        raise FlowFailedError(result)
    return result


class _Run:
    """One run of a flow and its sub-flows on ``queue``."""

    def __init__(self, queue: JobQueue, progress: bool, start_worker: bool) -> None:
        self.queue = queue
        self.progress = progress
        self.start_worker = start_worker
        self.tasks: dict[str, Task] = {}
        #: Tasks not run again: done before, and up to date.
        self.reused: set[str] = set()
        self._checked = 0.0

    def run(self, target: Flow) -> FlowResult:
        result = FlowResult(target.name)
        try:
            result.value = self.drive(target, target.name)
        except BadStepError:
            raise
        except Exception as exc:  # the flow's own code: its tasks go on
            result.error = f"{type(exc).__name__}: {exc}"
        states = self.wait_for(list(self.tasks.values()))
        for name, task in self.tasks.items():
            reused = name in self.reused and task.outputs
            result.states[name] = SKIPPED if reused else states[name]
        if self.progress:
            sys.stderr.write("\n")
        return result

    def drive(self, target: Flow, prefix: str) -> Any:
        """Run ``target``'s generator to its end; what it returned."""
        steps = target.start()
        if not inspect.isgenerator(steps):
            raise BadStepError(
                f"flow {target.name} yields nothing: a flow function is a "
                "generator (it yields tasks)"
            )
        yielded: list[Task] = []
        sent: Any = None
        while True:
            try:
                step = steps.send(sent)
            except StopIteration as stop:
                return stop.value
            sent = None
            if isinstance(step, Dependency):
                self.wait_for(list(step.tasks) or yielded)
                continue
            for one in step if isinstance(step, (list, tuple)) else [step]:
                if isinstance(one, Flow):
                    sent = self.drive(one, f"{prefix}.{one.sub_name}")
                elif isinstance(one, Task):
                    self.submit(one, prefix)
                    yielded.append(one)
                else:
                    raise BadStepError(
                        f"flow {target.name} yields {one!r}: a flow yields "
                        "tasks, lists of tasks, flows and Dependency"
                    )

    def submit(self, task: Task, prefix: str) -> None:
        """Queue ``task`` as job ``<prefix>.<name>`` (a resume keeps what is done)."""
        name = f"{prefix}.{task.name}"
        if name in self.tasks:
            task.bind(self.queue, name)
            return
        for dep in task.after:
            if dep.job_name is None:  # not yielded: it runs first all the same
                self.submit(dep, prefix)
        command = task.command()
        try:
            before = self.queue.job(name)
        except UnknownJobError:
            before = None
        if before is not None and before.command == command:
            if not before.finished:
                self._add(task, name)  # queued or running since a run that stopped
                return
            if before.state in SUCCESS_STATES and self._up_to_date(task):
                self._add(task, name)
                self.reused.add(name)
                return
        if before is not None and not before.finished:
            self.queue.remove(name, force=True)  # another command of that name
        self.queue.submit(
            command,
            name=name,
            after=[dep.job_name for dep in task.after if dep.job_name],
            replace=True,
            **task.options,
        )
        self._add(task, name)

    def _add(self, task: Task, name: str) -> None:
        """``task`` is job ``name`` of this run (queued, or done before)."""
        task.bind(self.queue, name)
        self.tasks[name] = task

    def _up_to_date(self, task: Task) -> bool:
        """Whether ``task``'s outputs are newer than its inputs (make's rule)."""
        if any(dep.job_name not in self.reused for dep in task.after):
            return False  # something it depends on runs again
        if not task.outputs:
            return True
        try:
            oldest = min(path.stat().st_mtime for path in task.outputs)
            inputs = [*task.inputs, *(p for dep in task.after for p in dep.outputs)]
            newest = max((path.stat().st_mtime for path in inputs), default=None)
        except OSError:
            return False  # an output or an input is missing
        return newest is None or oldest >= newest

    def wait_for(self, tasks: list[Task]) -> dict[str, str]:
        """Wait until ``tasks`` have ended; ``job name -> state``."""
        names = [task.job_name for task in tasks if task.job_name]
        waiter = self.queue.changes()
        try:
            while True:
                listed = {job.name: job for job in self.queue.jobs()}
                states = {
                    name: listed[name].state if name in listed else REMOVED
                    for name in names
                }
                if self.progress:
                    self._show(listed)
                if all(name not in listed or listed[name].finished for name in names):
                    return states
                self._ensure_worker()
                waiter.wait(WORKER_CHECK_S)
        finally:
            waiter.close()

    def _ensure_worker(self) -> None:
        now = time.monotonic()
        if self.start_worker and now - self._checked >= WORKER_CHECK_S:
            self._checked = now
            self.queue.ensure_worker()

    def _show(self, listed: dict[str, Any]) -> None:
        """One line on stderr: done/total, running, failed."""
        jobs = [listed[name] for name in self.tasks if name in listed]
        done = sum(job.finished for job in jobs)
        running = sum(job.state == "running" for job in jobs)
        failed = sum(job.finished and job.state not in SUCCESS_STATES for job in jobs)
        sys.stderr.write(
            f"\rflow: {done}/{len(self.tasks)} done, {running} running, "
            f"{failed} failed "
        )
        sys.stderr.flush()


def _start_detached(target: Flow, queue: JobQueue, broker: str | None) -> None:
    """Run ``target`` in a detached process of its own (its log beside it).

    Raises:
        FlowRunningError: a detached run of that flow has not ended.
    """
    spec = {"flow": target.spec, "folder": str(queue.folder), "broker": broker}
    before = ProcessManager(queue.backend.flows_dir).get(target.name)
    if before is not None and before.returncode is None and before.runner_alive():
        raise FlowRunningError(
            f"flow {target.name} runs already (pid {before.pid}; its log: "
            f"{before.stdout}): wait for it to end"
        )
    ManagedProcess.spawn(
        [sys.executable, "-m", "dvc_task.flow.detached", dumps(spec)],
        wdir=queue.backend.flows_dir / target.name,
        name=target.name,
        cwd=os.getcwd(),
        env=queue.backend.worker_env(),
    )
