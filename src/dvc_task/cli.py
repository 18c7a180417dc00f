"""The ``dvc-task`` command line: queue commands, watch and control them."""

from __future__ import annotations

import functools
import json
import logging
import os
import re
import sys
import warnings
from collections.abc import Iterable
from datetime import datetime, timezone
from typing import Any, Callable, NoReturn, TypeVar

import click

from dvc_task.cli_control import (
    hold,
    job_options,
    make_offer,
    offer_options,
    pass_queue,
    release,
    retry,
    top,
)
from dvc_task.exceptions import DvcTaskError
from dvc_task.jobs import (
    QUEUED,
    STATES,
    UNREADABLE,
    Job,
    JobNotFinishedError,
    JobQueue,
    UnknownJobError,
    WorkerInfo,
    display,
    open_queue,
)
from dvc_task.jobs.workers import IDLE_TIMEOUT_S, WORKER_NAME

F = TypeVar("F", bound=Callable[..., Any])
#: How often ``run --wait`` makes sure a worker lives while its job waits.
WORKER_CHECK_S = 1.0


def handle_errors(func: F) -> F:
    """Turn expected failures into one line on stderr and exit code 1."""

    @functools.wraps(func)
    def wrapper(*args: Any, **kwargs: Any) -> Any:
        try:
            return func(*args, **kwargs)
        except BrokenPipeError:
            _quiet_stdout()  # its reader has gone (`| head`): no error
            return None
        except UnknownJobError as exc:
            raise click.ClickException(str(exc)) from None
        except (DvcTaskError, OSError, ValueError, TimeoutError) as exc:
            raise click.ClickException(str(exc)) from None
        except Exception as exc:
            if not _is_redis_error(exc):
                raise
            raise click.ClickException(
                f"the Redis server: {exc}: is it running and reachable, and is "
                "--broker (DVC_TASK_BROKER) right?"
            ) from None

    return wrapper  # type: ignore[return-value]


def _is_redis_error(exc: Exception) -> bool:
    # The Redis client is imported only for a queue on a Redis server.
    errors = sys.modules.get("redis.exceptions")
    return errors is not None and isinstance(exc, errors.RedisError)


@click.group(context_settings={"help_option_names": ["-h", "--help"]})
@click.option(
    "--dir",
    "folder",
    envvar="DVC_TASK_DIR",
    default=".dvc-task",
    show_default=True,
    type=click.Path(file_okay=False),
    help="Folder of the queue and its jobs (or DVC_TASK_DIR).",
)
@click.option(
    "--broker",
    envvar="DVC_TASK_BROKER",
    metavar="URL",
    help=(
        "Redis server that holds the jobs, for workers on many hosts, e.g. "
        "redis://:PASSWORD@HOST:6379/0 (or DVC_TASK_BROKER); --dir then "
        "holds only this host's processes and logs."
    ),
)
@click.version_option(package_name="dvc-task")
@click.pass_context
def cli(ctx: click.Context, folder: str, broker: str | None) -> None:
    """Run commands in the background, without a broker server.

    \b
    Example:
      dvc-task run --wait -- python train.py --epochs 3
      dvc-task status
    """
    try:
        ctx.obj = open_queue(folder, broker)
    except (DvcTaskError, ValueError) as exc:
        raise click.ClickException(str(exc)) from None


def _parse_env(
    _ctx: click.Context, _param: click.Parameter, values: tuple[str, ...]
) -> dict[str, str]:
    env: dict[str, str] = {}
    for item in values:
        key, sep, value = item.partition("=")
        if not sep or not key:
            raise click.BadParameter(f"{item!r} is not KEY=VALUE")
        env[key] = value
    return env


@cli.command(context_settings={"allow_interspersed_args": False})
@click.option("--name", help="Job name (default: the next free number).")
@click.option("--wait", is_flag=True, help="Stream the output; exit with its code.")
@click.option(
    "--cwd",
    type=click.Path(exists=True, file_okay=False),
    help="Run it there (default: the current directory).",
)
@click.option(
    "--env",
    "env",
    multiple=True,
    metavar="KEY=VALUE",
    callback=_parse_env,
    help="Set a variable for the job (repeatable); the rest is yours.",
)
@click.option("--replace", is_flag=True, help="Remove a finished job of that name.")
@click.option("--no-start", is_flag=True, help="Only queue; start no worker.")
@job_options
@click.argument("command", nargs=-1, required=True, type=click.UNPROCESSED)
@pass_queue
@handle_errors
def run(
    queue: JobQueue,
    /,
    *,
    name: str | None,
    wait: bool,
    cwd: str | None,
    env: dict[str, str],
    replace: bool,
    no_start: bool,
    command: tuple[str, ...],
    **options: Any,
) -> None:
    """Queue COMMAND as a job and print its name.

    It runs in this directory with this environment. A worker is started
    unless one is running. Options go before COMMAND (or before `--`).

    \b
    Example:
      dvc-task run --name train -- python train.py --lr 0.1
      dvc-task run --wait --env SEED=1 -- make test
      dvc-task run --after train --gpus 1 --retries 2 -- python eval.py
    """
    job = queue.submit(
        list(command),
        name=name,
        cwd=cwd,
        env={**os.environ, **env},
        replace=replace,
        **options,
    )
    if not no_start:
        queue.ensure_worker()
    if not wait:
        click.echo(job.name)
        return
    click.echo(f"queued job {job.name}", err=True)
    _exit_with(_stream(queue, job.name, not no_start))


def _stream(queue: JobQueue, name: str, start: bool) -> int:
    try:
        _wait_started(queue, name, start)
        out = sys.stdout.buffer
        for chunk in queue.follow_output(name):
            out.write(chunk)
            out.flush()
    except KeyboardInterrupt:
        click.echo(
            f"\ndetached: job {name} goes on; follow it with 'dvc-task logs -f "
            f"{name}', stop it with 'dvc-task kill {name}'",
            err=True,
        )
        return 130
    except BrokenPipeError:
        _quiet_stdout()
        return 0
    job = queue.job(name)
    if job.returncode is None:
        # It never ran: say why (skipped, dependency failed, killed...).
        reason = f": {job.error}" if job.error else ""
        click.echo(f"job {name} {job.state}{reason}", err=True)
    return job.exit_code


def _wait_started(queue: JobQueue, name: str, start: bool) -> None:
    waiter = queue.changes()
    try:
        while not queue.left_queue(name):
            if start:
                queue.ensure_worker()
            elif not queue.workers():
                raise click.ClickException(
                    f"job {name} is queued and no worker is running: start one "
                    "with 'dvc-task start'"
                )
            waiter.wait(WORKER_CHECK_S)
    finally:
        waiter.close()


def _exit_with(code: int) -> NoReturn:
    sys.exit(code)


def _quiet_stdout() -> None:
    # The reader has gone (e.g. `| head`): nothing more can be written, and
    # Python must not complain when it flushes stdout at exit.
    devnull = os.open(os.devnull, os.O_WRONLY)
    os.dup2(devnull, sys.stdout.fileno())
    os.close(devnull)


# --- status ------------------------------------------------------------------


def _state_choice(value: str) -> str:
    state = value.replace("-", " ").replace("_", " ").lower()
    if state not in (*STATES, UNREADABLE):
        raise click.BadParameter(
            f"{value!r} is not a state; use one of: {', '.join(STATES)}"
        )
    return state


@cli.command()
@click.option("--json", "as_json", is_flag=True, help="Print JSON instead of a table.")
@click.option(
    "--state",
    "states",
    multiple=True,
    metavar="STATE",
    help=f"Only jobs in STATE (repeatable): {', '.join(STATES)}.",
)
@pass_queue
@handle_errors
def status(queue: JobQueue, as_json: bool, states: tuple[str, ...]) -> None:
    """List the jobs, oldest first, and the live workers.

    \b
    Example:
      dvc-task status --state running --state queued
      dvc-task status --json
    """
    wanted = [_state_choice(s) for s in states] or None
    if not queue.exists():
        if as_json:
            click.echo("[]")
        else:
            click.echo(f"no queue in {queue.location} yet: 'dvc-task run' makes one")
        return
    jobs = queue.jobs()
    shown = [job for job in jobs if wanted is None or job.state in wanted]
    if as_json:
        click.echo(json.dumps([job.asdict() for job in shown], indent=2))
        return
    colour = sys.stdout.isatty() and not os.environ.get("NO_COLOR")
    _print_jobs(shown, colour, hosts=queue.shared)
    _print_workers(queue.workers(jobs), jobs)


def _print_jobs(jobs: Iterable[Job], colour: bool, hosts: bool = False) -> None:
    now = datetime.now(timezone.utc)
    header = display.JOB_HEADER_HOSTS if hosts else display.JOB_HEADER
    plain = [header]
    styled = [header]
    for job in jobs:
        cells = display.job_row(job, now, hosts)
        plain.append(cells)
        if colour:
            state = click.style(cells[1], fg=display.COLOURS.get(job.state))
            cells = [cells[0], state, *cells[2:]]
        styled.append(cells)
    if len(plain) == 1:
        click.echo("no jobs")
        return
    for line in display.table(plain, styled):
        click.echo(line)


def _print_workers(workers: list[WorkerInfo], jobs: list[Job]) -> None:
    if not workers:
        if any(job.state == QUEUED for job in jobs):
            click.echo("\nno worker is running: 'dvc-task start' starts one")
        return
    now = datetime.now(timezone.utc)
    click.echo()
    rows = [display.WORKER_HEADER, *(display.worker_row(w, now) for w in workers)]
    for line in display.table(rows):
        click.echo(line)


@cli.command()
@click.option("--json", "as_json", is_flag=True, help="Print JSON instead of a table.")
@pass_queue
@handle_errors
def workers(queue: JobQueue, as_json: bool) -> None:
    """List the live workers and the jobs they run.

    \b
    Example:
      dvc-task workers --json
    """
    found = queue.workers() if queue.exists() else []
    if as_json:
        click.echo(json.dumps([w.asdict() for w in found], indent=2))
        return
    if not found:
        click.echo("no worker is running")
        return
    _print_workers(found, [])


# --- logs, kill, rm, cleanup ---------------------------------------------------


@cli.command()
@click.option("-f", "--follow", is_flag=True, help="Keep printing until the job ends.")
@click.option("-n", "--tail", type=click.IntRange(min=0), help="Only the last N lines.")
@click.argument("name")
@pass_queue
@handle_errors
def logs(queue: JobQueue, follow: bool, tail: int | None, name: str) -> None:
    """Print the output of job NAME as it was written (stdout and stderr).

    \b
    Example:
      dvc-task logs -f train
      dvc-task logs --tail 20 train
    """
    out = sys.stdout.buffer
    try:
        if follow:
            for chunk in queue.follow_output(name, tail):
                out.write(chunk)
                out.flush()
            return
        if not queue.has_record(name) and not queue.output_path(name).exists():
            queue.job(name)  # unknown: raises
        out.flush()
        queue.copy_output(name, out.fileno(), tail)
    except BrokenPipeError:
        _quiet_stdout()
    except KeyboardInterrupt:
        _exit_with(130)


@cli.command()
@click.option("--force", is_flag=True, help="SIGKILL instead of SIGTERM.")
@click.argument("names", nargs=-1, required=True, metavar="NAME...")
@pass_queue
@handle_errors
def kill(queue: JobQueue, force: bool, names: tuple[str, ...]) -> None:
    """Stop jobs and all their children; a queued job will never run.

    \b
    Example:
      dvc-task kill --force train
    """
    for name in names:
        click.echo(queue.kill(name, force=force))


@cli.command()
@click.option("--force", is_flag=True, help="Kill a job that has not finished first.")
@click.argument("names", nargs=-1, required=True, metavar="NAME...")
@pass_queue
@handle_errors
def rm(queue: JobQueue, force: bool, names: tuple[str, ...]) -> None:
    """Forget jobs: their record, output, message and result.

    A job that has not finished is refused unless --force.

    \b
    Example:
      dvc-task rm train
      dvc-task rm --force stuck-job
    """
    for name in names:
        try:
            queue.remove(name, force=force)
        except JobNotFinishedError as exc:
            raise click.ClickException(
                f"job {name!r} is {exc.state}: kill it first, or use "
                f"'dvc-task rm --force {name}'"
            ) from None
        click.echo(f"removed {name}")


_DURATION = re.compile(r"^\s*(\d+(?:\.\d+)?)\s*([smhdw]?)\s*$")
_UNIT_S = {"": 1, "s": 1, "m": 60, "h": 3600, "d": 86400, "w": 604800}


def _parse_duration(
    _ctx: click.Context, _param: click.Parameter, value: str | None
) -> float | None:
    if value is None:
        return None
    match = _DURATION.match(value.lower())
    if not match:
        raise click.BadParameter(
            f"{value!r} is not a duration such as 90s, 30m, 2h, 7d"
        )
    return float(match.group(1)) * _UNIT_S[match.group(2)]


@cli.command()
@click.option(
    "--older-than",
    callback=_parse_duration,
    metavar="D",
    help="Only jobs that finished over D ago (90s, 30m, 2h, 7d).",
)
@pass_queue
@handle_errors
def cleanup(queue: JobQueue, older_than: float | None) -> None:
    """Remove every finished job, with its output, message and result.

    \b
    Example:
      dvc-task cleanup --older-than 7d
    """
    if not queue.exists():
        click.echo("nothing to remove")
        return
    removed = queue.cleanup(older_than)
    for job in removed:
        click.echo(f"removed {display.printable(job.name)} ({job.state})")
    if not removed:
        click.echo("nothing to remove")


# --- workers -------------------------------------------------------------------


def _log_setup(verbose: bool, quiet: bool) -> str:
    """Configure the worker's output; the log level for Celery."""
    handler = logging.StreamHandler(sys.stderr)
    handler.setFormatter(logging.Formatter("%(asctime)s %(message)s", "%H:%M:%S"))
    jobs_log = logging.getLogger("dvc_task.jobs")
    jobs_log.addHandler(handler)
    jobs_log.propagate = False
    jobs_log.setLevel(logging.WARNING if quiet else logging.INFO)
    if verbose:
        return "INFO"
    # Celery's advice against running as root is part of its start-up talk.
    warnings.filterwarnings("ignore", message=".*superuser privileges")
    return "ERROR" if quiet else "WARNING"


def _timeout_option(text: str) -> Callable[[F], F]:
    return click.option(
        "--timeout",
        type=click.FloatRange(min=0),
        default=IDLE_TIMEOUT_S,
        show_default=True,
        help=text,
    )


@cli.command()
@_timeout_option("Exit after this many idle seconds.")
@click.option(
    "-j",
    "--concurrency",
    type=click.IntRange(min=1),
    default=1,
    show_default=True,
    help="Jobs at once.",
)
@click.option("--name", default=WORKER_NAME, show_default=True, help="Worker name.")
@click.option("-v", "--verbose", is_flag=True, help="Celery's own log too.")
@click.option("-q", "--quiet", is_flag=True, help="Only warnings and errors.")
@offer_options
@pass_queue
@handle_errors
def worker(
    queue: JobQueue,
    *,
    timeout: float,
    concurrency: int,
    name: str,
    verbose: bool,
    quiet: bool,
    gpu_ids: list[str] | None,
    resources: dict[str, int],
    slot_patience: float,
) -> None:
    """Run a worker in the foreground until the queue stays empty.

    It prints one line per job: its name, state and duration.

    \b
    Example:
      dvc-task worker --timeout 30 --concurrency 2
      dvc-task worker --gpus 0,1 --resources mem=64 --concurrency 4
    """
    loglevel = _log_setup(verbose, quiet)
    offer = make_offer(gpu_ids, resources, slot_patience)
    if not queue.work(name, timeout, concurrency, loglevel, offer=offer):
        raise click.ClickException(f"a worker called {name!r} is already running")


@cli.command()
@click.option(
    "-j", "--workers", "count", type=click.IntRange(min=1), default=1, show_default=True
)
@_timeout_option("Each exits after this many idle seconds.")
@click.option(
    "--concurrency",
    type=click.IntRange(min=1),
    default=1,
    show_default=True,
    help="Jobs at once, per worker.",
)
@offer_options
@pass_queue
@handle_errors
def start(
    queue: JobQueue,
    *,
    count: int,
    timeout: float,
    concurrency: int,
    gpu_ids: list[str] | None,
    resources: dict[str, int],
    slot_patience: float,
) -> None:
    """Start detached workers that run the queued jobs, then exit when idle.

    \b
    Example:
      dvc-task start -j 2
      dvc-task start --concurrency 2 --gpus 0,1
    """
    offer = make_offer(gpu_ids, resources, slot_patience)
    for name in queue.start_workers(count, timeout, concurrency, offer):
        click.echo(f"started worker {name}")


@cli.command()
@click.option("--kill", is_flag=True, help="Kill their running jobs (SIGKILL) first.")
@pass_queue
@handle_errors
def stop(queue: JobQueue, kill: bool) -> None:
    """Stop the workers; running jobs finish first unless --kill.

    \b
    Example:
      dvc-task stop --kill
    """
    stopped = queue.stop_workers(kill) if queue.exists() else []
    for found in stopped:
        click.echo(f"stopping worker {display.printable(found.name)}")
    if not stopped:
        click.echo("no worker is running")


cli.add_command(retry)
cli.add_command(hold)
cli.add_command(release)
cli.add_command(top)


def main() -> None:
    """Console script entry point."""
    cli(prog_name="dvc-task")
