"""The commands of single jobs: run, status, logs, kill, rm, cleanup."""

from __future__ import annotations

import json
import os
import shlex
import sys
import time
from datetime import datetime, timedelta, timezone
from typing import Any, TextIO

import click

from dvc_task.cli.control import (
    Finite,
    complete_job_names,
    job_names,
    job_options,
    parse_duration,
    parse_env,
    parse_signal,
    parse_when,
    pass_queue,
)
from dvc_task.cli.errors import INTERRUPTED_EXIT, quiet_stdout
from dvc_task.exceptions import DvcTaskError
from dvc_task.jobs import (
    HELD,
    QUEUED,
    STATES,
    SUCCESS_STATES,
    UNREADABLE,
    Job,
    JobNotFinishedError,
    JobQueue,
    WorkerInfo,
    display,
)
from dvc_task.jobs.slots import Offer, detect_gpus, missing

#: How often ``run --wait`` makes sure a worker lives while its job waits.
WORKER_CHECK_S = 1.0
#: Exit code of ``wait --timeout`` when time ran out (as ``timeout(1)``'s).
TIMEOUT_EXIT = 124


@click.command(context_settings={"allow_interspersed_args": False})
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
    callback=parse_env,
    help="Set a variable for the job (repeatable); the rest is yours.",
)
@click.option("--replace", is_flag=True, help="Remove a finished job of that name.")
@click.option("--no-start", is_flag=True, help="Only queue; start no worker.")
@click.option(
    "--in",
    "start_in",
    callback=parse_duration,
    metavar="D",
    help="Start it no sooner than D from now (90s, 10m, 2h).",
)
@click.option(
    "--at",
    "start_at",
    callback=parse_when,
    metavar="TIME",
    help="Start it no sooner than TIME (14:05, '2026-12-24 18:00').",
)
@click.option(
    "--from",
    "from_file",
    type=click.File("r"),
    metavar="FILE",
    help="Queue each line of FILE ('-': stdin); --name 'x-{n}' names them.",
)
@job_options
@click.argument("command", nargs=-1, type=click.UNPROCESSED)
@pass_queue
def run(
    queue: JobQueue,
    /,
    *,
    from_file: TextIO | None,
    name: str | None,
    wait: bool,
    cwd: str | None,
    env: dict[str, str],
    replace: bool,
    no_start: bool,
    start_in: float | None,
    start_at: datetime | None,
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
      dvc-task run --at 02:00 -- ./nightly.sh
      dvc-task run --from sweep.txt --name 'sweep-{n}' --gpus 1
    """
    if start_in is not None and start_at is not None:
        raise click.UsageError("give --in or --at, not both")
    if start_in is not None:
        start_at = datetime.now(timezone.utc) + timedelta(seconds=start_in)
    if from_file is not None:
        if command or wait or replace:
            raise click.UsageError("--from takes no COMMAND, --wait or --replace")
        _run_many(
            queue,
            from_file,
            pattern=name,
            cwd=cwd,
            env=env,
            start_at=start_at,
            no_start=no_start,
            options=options,
        )
        return
    if not command:
        raise click.UsageError("give the command to run (after --), or --from FILE")
    job = queue.submit(
        list(command),
        name=name,
        cwd=cwd,
        env={**os.environ, **env},
        replace=replace,
        start_at=start_at,
        **options,
    )
    started = None if no_start else queue.ensure_worker()
    if options["gpus"] or options["resources"]:
        _warn_unoffered(queue, job.name, options["gpus"], options["resources"], started)
    if not wait:
        click.echo(job.name)
        return
    click.echo(f"queued job {job.name}", err=True)
    sys.exit(_stream(queue, job.name, not no_start))


def _run_many(
    queue: JobQueue,
    lines: TextIO,
    *,
    pattern: str | None,
    cwd: str | None,
    env: dict[str, str],
    start_at: datetime | None,
    no_start: bool,
    options: dict[str, Any],
) -> None:
    """Queue each command line of ``lines``, all or none; print their names."""
    commands = []
    numbers = []  # the line of each command
    for number, line in enumerate(lines, start=1):
        if not line.strip() or line.lstrip().startswith("#"):
            continue
        try:
            commands.append(shlex.split(line, comments=True))
        except ValueError as exc:
            raise click.ClickException(f"line {number}: {exc}") from None
        numbers.append(number)
    if pattern is not None and "{n}" not in pattern and len(commands) > 1:
        raise click.UsageError("--name needs {n} (e.g. 'sweep-{n}') with --from")
    names = (
        None
        if pattern is None
        else [pattern.replace("{n}", str(n)) for n in range(1, len(commands) + 1)]
    )
    try:
        queued = queue.submit_many(
            commands,
            names,
            cwd=cwd,
            env={**os.environ, **env},
            start_at=start_at,
            **options,
        )
    except (ValueError, DvcTaskError) as exc:
        # "command N: ..." in the words of the file: its line.
        where, sep, why = str(exc).partition(": ")
        if sep and where.startswith("command ") and where[8:].isdigit():
            raise click.ClickException(
                f"line {numbers[int(where[8:]) - 1]}: {why}"
            ) from None
        raise
    if not no_start and queued:
        queue.ensure_worker()
    click.echo("\n".join(queued))


def _warn_unoffered(
    queue: JobQueue,
    name: str,
    gpus: int,
    resources: dict[str, int],
    started: str | None,
) -> None:
    """Warn when no live worker offers the slots job ``name`` needs.

    A worker ``started`` here just now offers this machine's GPUs.
    """
    offers = queue.offers()
    if started is not None:
        offers.append(Offer(detect_gpus(), {}))
    reason = missing(gpus, resources, offers)
    if reason is None:
        return
    hint = " --gpus 0,1,..." if gpus else ""
    hint += "".join(f" --resources {k}={v}" for k, v in sorted(resources.items()))
    click.echo(
        f"warning: job {name} waits for {reason} ('dvc-task start{hint}' starts one)",
        err=True,
    )


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
        return INTERRUPTED_EXIT
    except BrokenPipeError:
        quiet_stdout()
        return 0
    job = queue.job(name)
    if job.returncode is None:
        # It never ran: say why (skipped, dependency failed, killed...).
        reason = f": {job.error}" if job.error else ""
        click.echo(f"job {name} {job.state}{reason}", err=True)
    return job.exit_code


def _say_held(name: str) -> None:
    """Say on stderr that job ``name`` is held, and how to let it start."""
    click.echo(
        f"job {name} is held: it starts once released ('dvc-task release {name}')",
        err=True,
    )


def _wait_started(queue: JobQueue, name: str, start: bool) -> None:
    waiter = queue.changes()
    was_held = False
    try:
        while not queue.left_queue(name):
            held = queue.job(name).state == HELD
            if held and not was_held:  # once each time it is found held
                _say_held(name)
            was_held = held
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


# --- status ------------------------------------------------------------------


def _state_choice(value: str) -> str:
    state = value.replace("-", " ").replace("_", " ").lower()
    if state not in (*STATES, UNREADABLE):
        raise click.BadParameter(
            f"{value!r} is not a state; use one of: {', '.join(STATES)}"
        )
    return state


@click.command()
@click.option("--json", "as_json", is_flag=True, help="Print JSON instead of a table.")
@click.option(
    "--state",
    "states",
    multiple=True,
    metavar="STATE",
    help=f"Only jobs in STATE (repeatable): {', '.join(STATES)}.",
)
@click.option(
    "--schedule", "schedule_name", metavar="NAME", help="Only the fires of a schedule."
)
@job_names(required=False)
@pass_queue
def status(
    queue: JobQueue,
    as_json: bool,
    states: tuple[str, ...],
    schedule_name: str | None,
    names: tuple[str, ...],
) -> None:
    """List the jobs, oldest first, and the live workers; or show jobs NAME in full.

    \b
    Example:
      dvc-task status --state running --state queued
      dvc-task status --json
      dvc-task status train
    """
    if names:
        _describe(queue, names, as_json)
        return
    wanted = [_state_choice(s) for s in states] or None
    if not queue.exists():
        if as_json:
            click.echo("[]")
        else:
            click.echo(f"no queue in {queue.location} yet: 'dvc-task run' makes one")
        return
    jobs = queue.jobs()
    shown = [
        job
        for job in jobs
        if (wanted is None or job.state in wanted)
        and (schedule_name is None or job.name.startswith(f"{schedule_name}@"))
    ]
    if as_json:
        click.echo(json.dumps([job.asdict() for job in shown], indent=2))
        return
    click.echo(f"queue: {display.printable(queue.location)}")
    colour = sys.stdout.isatty() and not os.environ.get("NO_COLOR")
    hosts = queue.shared or len({job.host for job in jobs if job.host}) > 1
    _print_jobs(shown, colour, hosts)
    print_workers(queue.workers(jobs), jobs)


def _describe(queue: JobQueue, names: tuple[str, ...], as_json: bool) -> None:
    """Print jobs ``names`` in full (a JSON list with ``as_json``)."""
    found = [queue.describe(name) for name in names]
    if as_json:
        click.echo(json.dumps(found, indent=2))
        return
    now = datetime.now(timezone.utc)
    for number, data in enumerate(found):
        if number:
            click.echo()
        for key, value in display.detail_lines(data, now):
            click.echo(f"{key + ':':<12} {value}")


def _print_jobs(jobs: list[Job], colour: bool, hosts: bool = False) -> None:
    now = datetime.now(timezone.utc)
    header = display.job_header(jobs, hosts)
    state_at = header.index("STATE")
    plain = [header]
    styled = [header]
    for job in jobs:
        cells = display.job_row(job, now, header)
        plain.append(cells)
        if colour:
            cells = list(cells)
            cells[state_at] = click.style(
                cells[state_at], fg=display.COLOURS.get(job.state)
            )
        styled.append(cells)
    if len(plain) == 1:
        click.echo("no jobs")
        return
    click.echo("\n".join(display.table(plain, styled)))  # one write: fast


def print_workers(workers: list[WorkerInfo], jobs: list[Job]) -> None:
    """Print the table of ``workers`` (or say none runs while ``jobs`` wait)."""
    if not workers:
        if any(job.state == QUEUED for job in jobs):
            click.echo("\nno worker is running: 'dvc-task start' starts one")
        return
    now = datetime.now(timezone.utc)
    click.echo()
    rows = [display.WORKER_HEADER, *(display.worker_row(w, now) for w in workers)]
    for line in display.table(rows):
        click.echo(line)


# --- logs, kill, rm, cleanup ---------------------------------------------------


@click.command()
@click.option("-f", "--follow", is_flag=True, help="Keep printing until the job ends.")
@click.option("-n", "--tail", type=click.IntRange(min=0), help="Only the last N lines.")
@click.argument("name", shell_complete=complete_job_names)
@pass_queue
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
            chunks = queue.follow_output(name, tail)
            if queue.job(name).state == HELD:
                _say_held(name)
            for chunk in chunks:
                out.write(chunk)
                out.flush()
            return
        if (
            not queue.backend.has_record(name)
            and not queue.backend.output_path(name).exists()
        ):
            queue.job(name)  # unknown: raises
        out.flush()
        queue.copy_output(name, out.fileno(), tail)
    except BrokenPipeError:
        quiet_stdout()
    except KeyboardInterrupt:
        sys.exit(INTERRUPTED_EXIT)


@click.command()
@click.option("--force", is_flag=True, help="SIGKILL instead of SIGTERM.")
@click.option(
    "-s",
    "--signal",
    "sig",
    callback=parse_signal,
    metavar="SIG",
    help="Send SIG instead (INT, HUP, USR1, 9...).",
)
@job_names()
@pass_queue
def kill(queue: JobQueue, force: bool, sig: int | None, names: tuple[str, ...]) -> None:
    """Stop jobs and all their children; a queued job will never run.

    \b
    Example:
      dvc-task kill --force train
      dvc-task kill --signal INT train
    """
    if force and sig is not None:
        raise click.UsageError("give --force or --signal, not both")
    for name in names:
        click.echo(queue.kill(name, force=force, sig=sig))


@click.command()
@click.option("--force", is_flag=True, help="Kill a job that has not finished first.")
@job_names()
@pass_queue
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


@click.command()
@click.option(
    "--older-than",
    callback=parse_duration,
    metavar="D",
    help="Only jobs that finished over D ago (90s, 30m, 2h, 7d).",
)
@click.option(
    "-s", "--successful", is_flag=True, help="Only jobs that succeeded (or skipped)."
)
@pass_queue
def cleanup(queue: JobQueue, older_than: float | None, successful: bool) -> None:
    """Remove every finished job, with its output, message and result.

    \b
    Example:
      dvc-task cleanup --older-than 7d
      dvc-task cleanup --successful
    """
    if not queue.exists():
        click.echo("nothing to remove")
        return
    removed = queue.cleanup(older_than, successful)
    for job in removed:
        click.echo(f"removed {display.printable(job.name)} ({job.state})")
    if not removed:
        click.echo("nothing to remove")


@click.command("wait")
@click.option("--all", "every", is_flag=True, help="Every job not finished now.")
@click.option(
    "--timeout",
    type=Finite(min=0),
    metavar="S",
    help=f"Give up after S seconds (exit {TIMEOUT_EXIT}).",
)
@job_names(required=False)
@pass_queue
def wait_jobs(
    queue: JobQueue, every: bool, timeout: float | None, names: tuple[str, ...]
) -> None:
    """Wait until jobs have ended; exit 1 if one did not succeed.

    It prints one line: how many ended, and how.

    \b
    Example:
      dvc-task wait train eval
      dvc-task wait --all --timeout 3600
    """
    chosen = list(dict.fromkeys(names))
    if every:
        found = queue.jobs() if queue.exists() else []
        chosen += [j.name for j in found if not j.finished and j.name not in chosen]
    elif not chosen:
        raise click.UsageError("name the jobs to wait for, or give --all")
    jobs = [queue.job(name) for name in chosen]  # an unknown name: an error
    for job in jobs:
        if job.state == HELD:
            _say_held(job.name)
    if any(job.state == QUEUED for job in jobs) and not queue.workers():
        click.echo(
            "no worker is running: the queued jobs start once one does "
            "('dvc-task start')",
            err=True,
        )
    deadline = None if timeout is None else time.monotonic() + timeout
    ended = []
    for name in chosen:
        left = None if deadline is None else max(0.0, deadline - time.monotonic())
        try:
            ended.append(queue.wait(name, timeout=left))
        except TimeoutError:
            waiting = len(chosen) - len(ended)
            click.echo(
                f"gave up after {timeout:g} s: {waiting} of {len(chosen)} "
                "jobs have not ended",
                err=True,
            )
            sys.exit(TIMEOUT_EXIT)
    click.echo(_summary(ended))
    if any(job.state not in SUCCESS_STATES for job in ended):
        sys.exit(1)


def _summary(jobs: list[Job]) -> str:
    """``'3 jobs ended: 2 succeeded, 1 failed (b)'``."""
    if not jobs:
        return "no job to wait for"
    by_state: dict[str, list[str]] = {}
    for job in jobs:
        by_state.setdefault(job.state, []).append(display.printable(job.name))
    parts = [
        f"{len(names)} {state}"
        + ("" if state in SUCCESS_STATES else f" ({', '.join(names)})")
        for state, names in by_state.items()
    ]
    plural = "s" if len(jobs) > 1 else ""
    return f"{len(jobs)} job{plural} ended: {', '.join(parts)}"
