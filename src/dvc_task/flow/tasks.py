"""The steps of a flow: Python functions, ``Task`` subclasses, commands.

A task knows what to run (a command line, made here), the job options it
runs with, the tasks it comes after, its input and output paths, and its
name: derived from what it runs and its arguments, so that the same task in
a flow run again is the same job (a resume). Once a flow has run it, its
:meth:`Task.result` is read from the end of its job's output, where the
task's own process wrote it (see :mod:`dvc_task.flow.runner`).
"""

from __future__ import annotations

import functools
import json
import os
import sys
from collections.abc import Callable, Generator, Iterable, Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Any, Generic, TypeVar

from dvc_task.exceptions import DvcTaskError
from dvc_task.files import check_name
from dvc_task.flow.values import decode, digest, dumps, encode
from dvc_task.jobs.options import JobOptions
from dvc_task.jobs.record import SUCCESS_STATES

if TYPE_CHECKING:
    from dvc_task.jobs import JobQueue

R = TypeVar("R")

#: The module name a script is loaded under in a task's or a detached flow's
#: process (its ``if __name__ == "__main__"`` block does not run again).
SCRIPT_MODULE = "__dvc_task_script__"
#: The last line of a task's output: its result, as JSON.
RESULT_PREFIX = "dvc-task result: "
#: The job options a task may be given (as ``JobQueue.submit`` takes them).
JOB_OPTIONS = frozenset(
    {
        "retries",
        "retry_delay",
        "retry_backoff",
        "timeout",
        "priority",
        "gpus",
        "resources",
        "held",
    }
)


class TaskFailedError(DvcTaskError):
    """The result of a task that did not succeed was asked for."""


class TaskNotEndedError(DvcTaskError):
    """The result of a task that has not ended (or not run) was asked for."""


def check_options(options: dict[str, Any], where: str) -> dict[str, Any]:
    """``options`` if they are job options with good values.

    Raises:
        TypeError: an option that is not a job option.
        ValueError: a bad value, named.
    """
    unknown = sorted(set(options) - JOB_OPTIONS)
    if unknown:
        raise TypeError(
            f"{where}: {unknown[0]!r} is not a job option (one of: "
            f"{', '.join(sorted(JOB_OPTIONS))})"
        )
    JobOptions(**options)  # raises on a bad value, naming it
    return options


def target_of(obj: Any) -> dict[str, str]:
    """Where a task's process finds ``obj`` (a function or a class).

    One defined in ``__main__`` is found through the script's path.

    Raises:
        ValueError: it cannot be imported by another process.
    """
    qualname = obj.__qualname__
    if "<locals>" in qualname:
        raise ValueError(
            f"{qualname} is defined inside a function: define it at the top "
            "level of a module, so that a task's own process can import it"
        )
    module = obj.__module__
    if module not in ("__main__", SCRIPT_MODULE):
        return {"module": module, "qualname": qualname}
    script = getattr(sys.modules.get(module), "__file__", None)
    if not script:
        raise ValueError(
            f"{qualname} is defined in an interactive session: define it in a "
            "module or a script file, so that a task's own process can import it"
        )
    return {"path": os.path.abspath(script), "qualname": qualname}


def arguments(of: Any, args: Sequence[Any], kwargs: dict[str, Any]) -> dict[str, Any]:
    """``args`` and ``kwargs`` of a call of ``of``, encoded (see ``values``).

    Raises:
        NotJSONError: naming the argument, e.g. ``argument 2 of train``.
    """
    name = of.__name__
    return {
        "args": [encode(v, f"argument {i} of {name}") for i, v in enumerate(args, 1)],
        "kwargs": {
            k: encode(v, f"argument {k!r} of {name}") for k, v in kwargs.items()
        },
    }


class Task:
    """A step of a flow; a job once the flow runs it.

    Subclass it and override :meth:`run` (its arguments must be JSON, or
    paths, so that the task's own process can make it again), or make one
    with :meth:`TaskFunction.make_task` or :func:`sh`.

    Arguments:
        name: its name in the flow (default: derived from what it runs).
        inputs: paths it reads, and tasks whose outputs it reads (it comes
            after those).
        outputs: paths it writes; when all exist and are newer than every
            input, a task that succeeded before is not run again.
        after: tasks it comes after.
        resources, gpus: the slots it needs (``{"mem": 8}``, 1).
        options: other job options (``retries``, ``timeout``, ``priority``...).
    """

    _made_with: tuple[tuple[Any, ...], dict[str, Any]]

    def __new__(cls, *args: Any, **kwargs: Any) -> Task:
        """A new task that keeps what it was made with."""
        task = super().__new__(cls)
        # What made it: its own process makes it again from these.
        task._made_with = (args, kwargs)
        return task

    def __init__(
        self,
        name: str | None = None,
        *,
        inputs: Iterable[Task | str | os.PathLike[str]] = (),
        outputs: Iterable[str | os.PathLike[str]] = (),
        after: Iterable[Task] = (),
        resources: dict[str, int] | None = None,
        gpus: int = 0,
        **options: Any,
    ) -> None:
        """Describe the task (see the class)."""
        inputs = list(inputs)
        self.inputs = [Path(i) for i in inputs if not isinstance(i, Task)]
        self.outputs = [Path(o) for o in outputs]
        self.after = [*(i for i in inputs if isinstance(i, Task)), *after]
        self.options = check_options(
            {**options, "gpus": gpus, "resources": dict(resources or {})},
            type(self).__name__,
        )
        if name is not None:
            check_name(name, "task")
        self._name = name
        #: The job name, once a flow has queued it.
        self.job_name: str | None = None
        self._queue: JobQueue | None = None

    def run(self) -> Any:
        """Do the task's work, in its own process; a JSON result (or None)."""
        raise NotImplementedError(f"{type(self).__name__} does not override run()")

    # --- what runs ----------------------------------------------------------

    def spec(self) -> dict[str, Any]:
        """What the task's process runs (see :mod:`dvc_task.flow.runner`)."""
        args, kwargs = self._made_with
        return {"make": target_of(type(self)), **arguments(type(self), args, kwargs)}

    def command(self) -> list[str]:
        """The command line of the task's job."""
        return [sys.executable, "-m", "dvc_task.flow.runner", dumps(self.spec())]

    @property
    def name(self) -> str:
        """Its name in the flow: given, or what it runs and a fingerprint."""
        if self._name is not None:
            return self._name
        return f"{self.label()}-{digest(self.spec())}"

    def label(self) -> str:
        """The readable part of a derived name."""
        return type(self).__name__

    # --- after a flow ran it ------------------------------------------------

    def bind(self, queue: JobQueue, job_name: str) -> None:
        """Note that ``queue`` has (or had) it as job ``job_name``."""
        self._queue = queue
        self.job_name = job_name

    def result(self) -> Any:
        """What it returned (JSON values, and paths), once it has succeeded.

        Raises:
            TaskNotEndedError: it has not run, or not ended (wait for it with
                ``yield Dependency(...)`` first).
            TaskFailedError: it ended without success.
        """
        if self._queue is None or self.job_name is None:
            raise TaskNotEndedError(
                f"task {self.name} has not run: yield it in a flow first"
            )
        job = self._queue.job(self.job_name)
        if not job.finished:
            raise TaskNotEndedError(
                f"task {self.job_name} is {job.state}: wait for it with "
                "'yield Dependency(...)' before reading its result"
            )
        if job.state not in SUCCESS_STATES:
            raise TaskFailedError(f"task {self.job_name} {job.state}: it has no result")
        return read_result(self._queue.read_output(self.job_name, tail=1))

    def __repr__(self) -> str:
        """``<Task train-1a2b3c>``."""
        return f"<{type(self).__name__} {self.job_name or self.name}>"


def read_result(last_line: bytes) -> Any:
    """The result in a task's last line of output; None if it has none."""
    text = last_line.decode("utf-8", "replace").strip()
    if not text.startswith(RESULT_PREFIX):
        return None
    return decode(json.loads(text[len(RESULT_PREFIX) :]))


class FunctionTask(Task):
    """A call of a :func:`task` function, as a step of a flow."""

    def __init__(
        self,
        function: TaskFunction[Any],
        args: Sequence[Any],
        kwargs: dict[str, Any],
        **task: Any,
    ) -> None:
        """The call ``function(*args, **kwargs)``; ``task``: as for :class:`Task`."""
        super().__init__(**{**function.options, **task})
        self.function = function
        self._call = {
            "call": target_of(function.func),
            **arguments(function, args, kwargs),
        }
        self.args = tuple(args)
        self.kwargs = dict(kwargs)

    def spec(self) -> dict[str, Any]:
        """The call, with its encoded arguments."""
        return self._call

    def label(self) -> str:
        """The function's name."""
        return self.function.__name__


class ShellTask(Task):
    """A command line as a step of a flow (see :func:`sh`)."""

    def __init__(self, argv: Sequence[str | os.PathLike[str]], **task: Any) -> None:
        """Run ``argv``; ``task``: as for :class:`Task`."""
        super().__init__(**task)
        self.argv = [os.fspath(arg) for arg in argv]
        if not self.argv or not self.argv[0]:
            raise ValueError("sh: empty command: give the program and its arguments")

    def spec(self) -> dict[str, Any]:
        """The command line."""
        return {"argv": self.argv}

    def command(self) -> list[str]:
        """The command line itself: its output is the job's."""
        return list(self.argv)

    def label(self) -> str:
        """The program's name."""
        return Path(self.argv[0]).name or "sh"


def sh(argv: Sequence[str | os.PathLike[str]], **task: Any) -> ShellTask:
    """A task that runs the command line ``argv`` (no shell: a list).

    ``task``: ``name``, ``inputs``, ``outputs``, ``after`` and job options,
    as for :class:`Task`.
    """
    return ShellTask(argv, **task)


class TaskFunction(Generic[R]):
    """A function made a task by :func:`task`: still callable as it was."""

    def __init__(self, func: Callable[..., R], options: dict[str, Any]) -> None:
        """Wrap ``func``; ``options`` are the job options of its tasks."""
        functools.update_wrapper(self, func)
        self.func = func
        self.__name__: str = func.__name__
        self.options = check_options(options, func.__name__)
        target_of(func)  # refused now, not when a flow runs

    def __call__(self, *args: Any, **kwargs: Any) -> R:
        """Call the function itself, here."""
        return self.func(*args, **kwargs)

    def make_task(
        self,
        *args: Any,
        name: str | None = None,
        after: Iterable[Task] = (),
        inputs: Iterable[Task | str | os.PathLike[str]] = (),
        outputs: Iterable[str | os.PathLike[str]] = (),
        **kwargs: Any,
    ) -> FunctionTask:
        """A task that calls the function with ``args`` and ``kwargs``.

        ``name``, ``after``, ``inputs`` and ``outputs`` are the task's own (see
        :class:`Task`), not the function's.

        Raises:
            NotJSONError: an argument that is not JSON (or a path), named.
        """
        return FunctionTask(
            self, args, kwargs, name=name, after=after, inputs=inputs, outputs=outputs
        )


def task(func: Callable[..., R] | None = None, **options: Any) -> Any:
    """Make ``func`` a task function (``@task`` or ``@task(retries=2, ...)``).

    ``options`` are job options for every task made of it: ``retries``,
    ``retry_delay``, ``retry_backoff``, ``timeout``, ``priority``, ``gpus``,
    ``resources``, ``held``.

    Raises:
        TypeError: an option that is not a job option.
        ValueError: a bad value, or a function another process cannot import.
    """
    if func is None:
        return lambda f: TaskFunction(f, options)
    return TaskFunction(func, options)


class Dependency:
    """``yield Dependency(*tasks)``: resume the flow once these have ended.

    With no task: once every task yielded so far has ended.
    """

    def __init__(self, *tasks: Task) -> None:
        """Wait for ``tasks`` (all yielded so far if none)."""
        self.tasks = tasks


#: What a flow's generator yields.
Step = Any
FlowGenerator = Generator[Step, None, Any]


class Flow:
    """A call of a :func:`flow` function: run it with ``execute``."""

    def __init__(
        self, function: FlowFunction, args: Sequence[Any], kwargs: dict[str, Any]
    ) -> None:
        """The call ``function(*args, **kwargs)``."""
        self.function = function
        self._arguments = arguments(function, args, kwargs)
        self.args = tuple(args)
        self.kwargs = dict(kwargs)
        #: Its name: the function's, so that a run with other arguments
        #: resumes the tasks the two have in common.
        self.name = function.__name__
        #: Its name as a sub-flow: the same with its arguments' fingerprint.
        self.sub_name = (
            f"{function.__name__}-{digest(function.func.__qualname__, self._arguments)}"
        )

    @property
    def spec(self) -> dict[str, Any]:
        """How another process makes it again (a detached run).

        Raises:
            ValueError: its function cannot be imported by another process.
        """
        return {"call": target_of(self.function.func), **self._arguments}

    def start(self) -> FlowGenerator:
        """Its generator, started afresh."""
        return self.function.func(*self.args, **self.kwargs)


class FlowFunction:
    """A generator function made a flow by :func:`flow`."""

    def __init__(self, func: Callable[..., FlowGenerator]) -> None:
        """Wrap generator function ``func``."""
        functools.update_wrapper(self, func)
        self.func = func
        self.__name__: str = func.__name__

    def __call__(self, *args: Any, **kwargs: Any) -> Flow:
        """The flow of these arguments (nothing runs until ``execute``)."""
        return Flow(self, args, kwargs)


def flow(func: Callable[..., FlowGenerator]) -> FlowFunction:
    """Make generator function ``func`` a flow (run it with ``execute``).

    It yields tasks, lists of tasks, other flows and :class:`Dependency`,
    and may return a result.
    """
    return FlowFunction(func)
