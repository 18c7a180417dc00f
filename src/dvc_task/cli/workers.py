"""The commands of workers: worker, start, stop, workers."""

from __future__ import annotations

import json
import logging
import os
import sys
import warnings
from typing import Any, Callable, TypeVar

import click

from dvc_task.cli.control import Finite, make_offer, offer_options, pass_queue
from dvc_task.cli.jobs import print_workers
from dvc_task.jobs import JobQueue, display
from dvc_task.jobs.defaults import IDLE_TIMEOUT_S, WORKER_NAME

F = TypeVar("F", bound=Callable[..., Any])


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
        type=Finite(min=0),
        default=IDLE_TIMEOUT_S,
        show_default=True,
        help=text,
    )


@click.command()
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
@click.option(
    "--beat", is_flag=True, help="Also fire the schedules' jobs; run until stopped."
)
@click.option("-v", "--verbose", is_flag=True, help="Celery's own log too.")
@click.option("-q", "--quiet", is_flag=True, help="Only warnings and errors.")
@offer_options
@pass_queue
def worker(
    queue: JobQueue,
    *,
    timeout: float,
    concurrency: int,
    name: str,
    beat: bool,
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
    if not queue.work(name, timeout, concurrency, loglevel, offer=offer, beat=beat):
        raise click.ClickException(f"a worker called {name!r} is already running")


@click.command()
@click.option(
    "--workers",
    "count",
    type=click.IntRange(min=1),
    default=1,
    show_default=True,
    help="Workers to start (at most one per CPU unless --force).",
)
@click.option("--force", is_flag=True, help="Start more workers than CPUs.")
@click.option(
    "--beat", is_flag=True, help="Also fire the schedules' jobs; run until stopped."
)
@_timeout_option("Each exits after this many idle seconds.")
@click.option(
    "-j",
    "--concurrency",
    type=click.IntRange(min=1),
    default=1,
    show_default=True,
    help="Jobs at once, per worker.",
)
@offer_options
@pass_queue
def start(
    queue: JobQueue,
    *,
    count: int,
    force: bool,
    beat: bool,
    timeout: float,
    concurrency: int,
    gpu_ids: list[str] | None,
    resources: dict[str, int],
    slot_patience: float,
) -> None:
    """Start detached workers that run the queued jobs, then exit when idle.

    \b
    Example:
      dvc-task start -j 4
      dvc-task start --workers 2 --concurrency 2 --gpus 0,1
    """
    cpus = os.cpu_count() or 1
    if count > cpus and not force:
        raise click.UsageError(
            f"--workers {count} is more than this machine's {cpus} CPUs: give "
            "--force to start them anyway (-j N runs N jobs at once per worker)"
        )
    offer = make_offer(gpu_ids, resources, slot_patience)
    for name in queue.start_workers(count, timeout, concurrency, offer, beat=beat):
        click.echo(f"started worker {name}")


@click.command()
@click.option("--kill", is_flag=True, help="Kill their running jobs (SIGKILL) first.")
@pass_queue
def stop(queue: JobQueue, kill: bool) -> None:
    """Stop the workers; running jobs finish first unless --kill.

    \b
    Example:
      dvc-task stop --kill
    """
    stopped = queue.stop_workers(kill) if queue.exists() else []
    for found in stopped:
        click.echo(f"stopping worker {display.printable(found.label)}")
    if not stopped:
        click.echo("no worker is running")


@click.command()
@click.option("--json", "as_json", is_flag=True, help="Print JSON instead of a table.")
@pass_queue
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
    print_workers(found, [])
