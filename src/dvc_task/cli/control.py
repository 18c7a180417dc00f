"""Job control on the command line.

The options of ``run`` and of the commands that start workers, and the
``retry``, ``hold``, ``release``, ``pause``, ``resume`` and ``top`` commands
(added to ``dvc-task``).
"""

from __future__ import annotations

import math
import re
import signal
from collections.abc import Sequence
from datetime import datetime, time, timedelta
from pathlib import Path
from typing import Any, Callable, TypeVar

import click
from click.shell_completion import CompletionItem, get_completion_class

from dvc_task.exceptions import DvcTaskError
from dvc_task.folders import find_upward
from dvc_task.jobs import FINAL_STATES, SUCCESS_STATES, JobQueue, open_queue
from dvc_task.jobs.slots import (
    PATIENCE_S,
    Offer,
    detect_gpus,
    parse_gpus,
    parse_resources,
)

F = TypeVar("F", bound=Callable[..., Any])

#: The name of a queue's folder, found here or in a parent folder.
FOLDER_NAME = ".dvc-task"
#: The variable that asks ``dvc-task`` for shell completions (click's).
COMPLETE_VAR = "_DVC_TASK_COMPLETE"


def open_cli_queue(folder: str | None, broker: str | None) -> JobQueue:
    """The queue that ``--dir`` and ``--broker`` name.

    Without ``--dir``, the nearest :data:`FOLDER_NAME` here or in a parent
    folder (as git finds its repository), else one here.
    """
    if folder is None:
        here = Path.cwd()
        folder = str(find_upward(FOLDER_NAME, here) or here / FOLDER_NAME)
    return open_queue(folder, broker)


def complete_job_names(
    ctx: click.Context, _param: click.Parameter, incomplete: str
) -> list[CompletionItem]:
    """The names of the queue's jobs that start with ``incomplete``."""
    params = ctx.find_root().params
    try:
        queue = open_cli_queue(params.get("folder"), params.get("broker"))
        names = [job.name for job in queue.jobs()] if queue.exists() else []
    except Exception:  # a completion never fails the shell
        return []
    return [CompletionItem(name) for name in names if name.startswith(incomplete)]


def job_names(required: bool = True) -> Callable[[F], F]:
    """The ``NAME...`` argument of a command, completed with job names."""
    return click.argument(
        "names",
        nargs=-1,
        required=required,
        metavar="NAME..." if required else "[NAME...]",
        shell_complete=complete_job_names,
    )


class Finite(click.FloatRange):
    """A finite number in a range (``nan`` and ``inf`` refused)."""

    def convert(
        self, value: Any, param: click.Parameter | None, ctx: click.Context | None
    ) -> Any:
        """The number, or a usage error naming the option."""
        number = super().convert(value, param, ctx)
        if not math.isfinite(number):
            self.fail(f"{value!r} is not a finite number", param, ctx)
        return number


_DURATION = re.compile(r"^\s*(\d+(?:\.\d+)?)\s*([smhdw]?)\s*$")
_UNIT_S = {"": 1, "s": 1, "m": 60, "h": 3600, "d": 86400, "w": 604800}


def parse_duration(
    _ctx: click.Context, _param: click.Parameter, value: str | None
) -> float | None:
    """``'90s'``, ``'30m'``, ``'2h'``, ``'7d'``, ``'1w'`` (or seconds) -> seconds."""
    if value is None:
        return None
    match = _DURATION.match(value.lower())
    if not match:
        raise click.BadParameter(
            f"{value!r} is not a duration such as 90s, 30m, 2h, 7d"
        )
    return float(match.group(1)) * _UNIT_S[match.group(2)]


def parse_when(
    _ctx: click.Context, _param: click.Parameter, value: str | None
) -> datetime | None:
    """A local time: ``'14:05'`` (the next one), ``'2026-12-24 18:00'``, ISO."""
    if value is None:
        return None
    text = value.strip()
    try:
        clock = time.fromisoformat(text)
    except ValueError:
        pass
    else:
        now = datetime.now().astimezone()
        when = datetime.combine(now.date(), clock).astimezone()
        return when if when > now else when + timedelta(days=1)
    try:
        return datetime.fromisoformat(text).astimezone()
    except ValueError:
        raise click.BadParameter(
            f"{value!r} is not a time such as 14:05, '2026-12-24 18:00' or "
            "2026-12-24T18:00+01:00"
        ) from None


def parse_signal(
    _ctx: click.Context, _param: click.Parameter, value: str | None
) -> int | None:
    """``'TERM'``, ``'SIGTERM'``, ``'term'`` or ``'15'`` -> the signal number."""
    if value is None:
        return None
    text = value.strip().upper()
    if text.isdigit():
        try:
            return int(signal.Signals(int(text)))
        except ValueError:
            pass
    else:
        name = text if text.startswith("SIG") else f"SIG{text}"
        found = getattr(signal.Signals, name, None)
        if found is not None:
            return int(found)
    raise click.BadParameter(
        f"{value!r} is not a signal of this system, such as TERM, INT, KILL, USR1"
    )


def parse_env(
    _ctx: click.Context, _param: click.Parameter, values: tuple[str, ...]
) -> dict[str, str]:
    """``('A=1', 'B=')`` -> ``{'A': '1', 'B': ''}`` (a usage error otherwise)."""
    env: dict[str, str] = {}
    for item in values:
        key, sep, value = item.partition("=")
        if not sep or not key:
            raise click.BadParameter(f"{item!r} is not KEY=VALUE")
        env[key] = value
    return env


def _parse_resources(
    _ctx: click.Context, _param: click.Parameter, values: tuple[str, ...]
) -> dict[str, int]:
    try:
        return parse_resources(values)
    except ValueError as exc:
        raise click.BadParameter(str(exc)) from None


def _parse_names(
    _ctx: click.Context, _param: click.Parameter, values: tuple[str, ...]
) -> list[str]:
    return [name.strip() for value in values for name in value.split(",") if name]


def _parse_gpus(
    _ctx: click.Context, _param: click.Parameter, value: str | None
) -> list[str] | None:
    if value is None:
        return None
    try:
        return parse_gpus(value)
    except ValueError as exc:
        raise click.BadParameter(str(exc)) from None


_JOB_OPTIONS = [
    click.option(
        "--retries",
        type=click.IntRange(min=0),
        default=0,
        help="Run a failed, timed-out or lost attempt again, up to N more times.",
    ),
    click.option(
        "--retry-delay",
        type=Finite(min=0),
        default=0.0,
        metavar="S",
        help="Seconds before the first retry.",
    ),
    click.option(
        "--retry-backoff",
        type=Finite(min=1, max=100),
        default=1.0,
        metavar="F",
        help="Each later retry waits F times longer.",
    ),
    click.option(
        "--timeout",
        type=Finite(min=0, min_open=True),
        metavar="S",
        help="Stop an attempt after S seconds (SIGTERM, then SIGKILL).",
    ),
    click.option(
        "--after",
        multiple=True,
        metavar="A,B",
        callback=_parse_names,
        help="Start only when these jobs have succeeded (repeatable).",
    ),
    click.option(
        "--priority",
        type=int,
        default=0,
        help="Higher starts first (default 0); FIFO within a priority.",
    ),
    click.option("--held", is_flag=True, help="Queue it held, until 'release'."),
    click.option(
        "--creates",
        multiple=True,
        metavar="PATH",
        help="Skip it if every such PATH exists when it would start (repeatable).",
    ),
    click.option(
        "--gpus",
        type=click.IntRange(min=0),
        default=0,
        help="GPUs it needs; it gets CUDA_VISIBLE_DEVICES naming them.",
    ),
    click.option(
        "--resources",
        multiple=True,
        metavar="NAME=COUNT",
        callback=_parse_resources,
        help="Other units it needs out of the worker's (repeatable).",
    ),
]


def job_options(func: F) -> F:
    """Add the job-control options to ``run``."""
    for option in reversed(_JOB_OPTIONS):
        func = option(func)
    return func


_OFFER_OPTIONS = [
    click.option(
        "--gpus",
        "gpu_ids",
        callback=_parse_gpus,
        metavar="0,1",
        help="GPUs to run jobs on (default: all that nvidia-smi lists; 'none').",
    ),
    click.option(
        "--resources",
        multiple=True,
        metavar="NAME=COUNT",
        callback=_parse_resources,
        help="Other units to offer jobs, e.g. mem=64 (repeatable).",
    ),
    click.option(
        "--slot-patience",
        type=Finite(min=0),
        default=PATIENCE_S,
        show_default=True,
        metavar="S",
        help="After S seconds waiting for slots, a job is not overtaken.",
    ),
]


def offer_options(func: F) -> F:
    """Add ``--gpus`` and ``--resources`` to a command that starts workers."""
    for option in reversed(_OFFER_OPTIONS):
        func = option(func)
    return func


def make_offer(
    gpu_ids: list[str] | None, resources: dict[str, int], slot_patience: float
) -> Offer:
    """What a worker offers, from its options."""
    gpus = detect_gpus() if gpu_ids is None else gpu_ids
    return Offer(gpus, resources, slot_patience)


def _each(
    names: Sequence[str], action: Callable[[str], str], then: Callable[[], object]
) -> None:
    """``action`` on each name (an error is said, the others go on).

    ``then`` runs once if any succeeded; the exit code is 1 if any failed.
    """
    done = 0
    for name in names:
        try:
            click.echo(action(name))
        except (DvcTaskError, ValueError) as exc:
            click.echo(f"Error: {exc}", err=True)
        else:
            done += 1
    if done:
        then()
    if done < len(names):
        raise SystemExit(1)


pass_queue = click.make_pass_decorator(JobQueue)


@click.command()
@click.option("--failed", is_flag=True, help="Every job that ended without success.")
@click.option("--no-start", is_flag=True, help="Only queue; start no worker.")
@job_names(required=False)
@pass_queue
def retry(
    queue: JobQueue, failed: bool, no_start: bool, names: tuple[str, ...]
) -> None:
    """Queue finished jobs again, with their command, directory and options.

    \b
    Example:
      dvc-task retry train
      dvc-task retry --failed
    """
    chosen = list(names)
    if failed:
        chosen += [
            job.name
            for job in queue.jobs()
            if job.state in FINAL_STATES
            and job.state not in SUCCESS_STATES
            and job.name not in chosen
        ]
    if not chosen:
        raise click.UsageError("name the jobs to retry, or give --failed")
    queued = queue.retry(chosen)
    for name in queued:
        click.echo(f"queued {name} again")
    if not no_start:
        queue.ensure_worker()


@click.command()
@job_names()
@pass_queue
def hold(queue: JobQueue, names: tuple[str, ...]) -> None:
    """Keep queued jobs from starting until 'release'.

    \b
    Example:
      dvc-task hold train-big
    """
    _each(
        names,
        lambda name: f"held {name}" if queue.hold(name) else f"{name} was held",
        then=lambda: None,
    )


@click.command()
@click.option("--no-start", is_flag=True, help="Start no worker.")
@job_names()
@pass_queue
def release(queue: JobQueue, no_start: bool, names: tuple[str, ...]) -> None:
    """Let held jobs start (once the jobs they wait for are done).

    \b
    Example:
      dvc-task release train-big
    """

    def one(name: str) -> str:
        queue.release(name)
        return f"released {name}"

    _each(names, one, then=lambda: no_start or queue.ensure_worker())


@click.command()
@job_names()
@pass_queue
def pause(queue: JobQueue, names: tuple[str, ...]) -> None:
    """Stop running jobs (and all they started) until 'resume'.

    A paused job's time limit does not run on. Only jobs that run on this
    host can be paused.

    \b
    Example:
      dvc-task pause train
    """
    _each(names, queue.pause, then=lambda: None)


@click.command()
@job_names()
@pass_queue
def resume(queue: JobQueue, names: tuple[str, ...]) -> None:
    """Let paused jobs go on.

    \b
    Example:
      dvc-task resume train
    """
    _each(names, queue.resume, then=lambda: None)


@click.command()
@pass_queue
def top(queue: JobQueue) -> None:
    """Watch the jobs, the workers and a job's log live (q quits).

    Keys: k kill, r retry, h hold/release, d remove, enter full-screen log,
    / filter, s state, q quit. Needs the 'tui' extra (Textual).

    \b
    Example:
      dvc-task top
    """
    if not queue.exists():
        click.echo(f"no queue in {queue.location} yet: 'dvc-task run' makes one")
        return
    try:
        from dvc_task.tui.app import run  # noqa: PLC0415 - an optional extra
    except ModuleNotFoundError as exc:
        if (exc.name or "").split(".")[0] not in ("textual", "rich"):
            raise  # a real bug, not the missing extra
        raise click.ClickException(
            "the monitor needs Textual: pip install 'dvc-task[tui]'"
        ) from None
    run(queue)


@click.command()
@click.argument("shell", type=click.Choice(["bash", "zsh", "fish"]))
@click.pass_context
def completion(ctx: click.Context, shell: str) -> None:
    """Print the script that completes dvc-task's commands, options and jobs.

    \b
    Example:
      eval "$(dvc-task completion bash)"     # in ~/.bashrc
      eval "$(dvc-task completion zsh)"      # in ~/.zshrc
      dvc-task completion fish > ~/.config/fish/completions/dvc-task.fish
    """
    root = ctx.find_root()
    script = get_completion_class(shell)
    assert script is not None  # one of click's own shells
    click.echo(
        script(root.command, {}, root.info_name or "dvc-task", COMPLETE_VAR).source()
    )
