"""The ``schedule`` commands: recurring jobs, and who wakes up to fire them."""

from __future__ import annotations

import json
import os
import sys
from datetime import datetime, timezone
from typing import Any

import click

from dvc_task.cli.control import (
    job_options,
    parse_duration,
    parse_env,
    parse_when,
    pass_queue,
)
from dvc_task.cli.flows import load_flow
from dvc_task.jobs import JobQueue, display
from dvc_task.jobs.defaults import LOCAL
from dvc_task.jobs.schedules import CATCH_UP, OVERLAP, ScheduleError
from dvc_task.utils import module_command


@click.group()
def schedule() -> None:
    """Recurring jobs: fired by a worker started with --beat, or by the OS.

    \b
    Example:
      dvc-task schedule add nightly --cron '0 2 * * *' -- ./backup.sh
      dvc-task schedule add poll --every 5m --overlap skip -- python poll.py
      dvc-task start --beat        # or: dvc-task schedule install
    """


@schedule.command("add")
@click.option("--cron", metavar="EXPR", help="Cron expression: '0 2 * * *'.")
@click.option(
    "--every", callback=parse_duration, metavar="D", help="Every D: 30s, 10m."
)
@click.option("--tz", default=LOCAL, show_default=True, help="Time zone of --cron.")
@click.option("--start", callback=parse_when, metavar="TIME", help="No tick before.")
@click.option("--end", callback=parse_when, metavar="TIME", help="No tick after.")
@click.option(
    "--catch-up",
    type=click.Choice(CATCH_UP),
    default="last",
    show_default=True,
    help="Ticks missed while nothing was awake: fire none, the last, or all.",
)
@click.option(
    "--overlap",
    type=click.Choice(OVERLAP),
    default="skip",
    show_default=True,
    help="A tick while the last fire runs: skip it, queue it behind, or allow.",
)
@click.option(
    "--sla",
    callback=parse_duration,
    metavar="D",
    help="A fire that starts over D after its tick is late.",
)
@click.option(
    "--cwd",
    type=click.Path(exists=True, file_okay=False),
    help="Run there (default: here).",
)
@click.option(
    "--env",
    multiple=True,
    metavar="KEY=VALUE",
    callback=parse_env,
    help="Set a variable.",
)
@click.option(
    "--flow",
    metavar="MODULE:FLOW",
    help="Fire a flow instead (what follows -- are its arguments).",
)
@click.option("--replace", is_flag=True, help="Replace a schedule of that name.")
@job_options
@click.argument("name")
@click.argument("command", nargs=-1, type=click.UNPROCESSED)
@pass_queue
def add(
    queue: JobQueue,
    /,
    *,
    name: str,
    cron: str | None,
    every: float | None,
    tz: str,
    start: datetime | None,
    end: datetime | None,
    catch_up: str,
    overlap: str,
    sla: float | None,
    cwd: str | None,
    env: dict[str, str],
    flow: str | None,
    replace: bool,
    command: tuple[str, ...],
    **options: Any,
) -> None:
    """Fire COMMAND (or --flow) as job NAME@TICK at each tick of a rule.

    \b
    Example:
      dvc-task schedule add nightly --cron '0 2 * * *' --tz Europe/Berlin -- ./backup.sh
      dvc-task schedule add retrain --every 6h --gpus 1 -- python train.py
    """
    if cron is not None and every is not None:
        raise click.UsageError("give --cron EXPR or --every DURATION, not both")
    if cron is None and every is None:
        raise click.UsageError("give --cron EXPR or --every DURATION")
    if not command and not flow:
        raise click.UsageError("give a command (after --) or --flow MODULE:FLOW")
    if flow:
        load_flow(flow)  # refused now, not at each fire
        # Its fire starts the flow detached (COMMAND: the flow's arguments).
        command = tuple(
            module_command(
                "dvc_task", "--dir", str(queue.folder), "flow", "run", flow, *command
            )
        )
    try:
        found = queue.schedule(
            name,
            list(command),
            cron=cron,
            every=every,
            tz=tz,
            start=start,
            end=end,
            catch_up=catch_up,
            overlap=overlap,
            sla=sla,
            cwd=cwd,
            env={**os.environ, **env},
            replace=replace,
            **options,
        )
    except ScheduleError as exc:
        raise click.ClickException(str(exc)) from None
    upcoming = found.next_tick(datetime.now(timezone.utc))
    when = "never" if upcoming is None else _local(upcoming.isoformat())
    click.echo(f"added schedule {name}: {found.rule()}, next at {when}")


def _local(when: str | None) -> str:
    """A UTC time as local ``YYYY-MM-DD HH:MM:SS``; '' for none."""
    if not when:
        return ""
    return f"{datetime.fromisoformat(when).astimezone():%Y-%m-%d %H:%M:%S}"


@schedule.command("list")
@click.option("--json", "as_json", is_flag=True, help="Print JSON instead of a table.")
@pass_queue
def list_schedules(queue: JobQueue, as_json: bool) -> None:
    """List the schedules: rule, zone, next fire, last fire and its job's state.

    \b
    Example:
      dvc-task schedule list --json
    """
    found = queue.schedules() if queue.exists() else []
    if as_json:
        click.echo(json.dumps(found, indent=2))
        return
    if not found:
        click.echo("no schedules")
        return
    rows = [["NAME", "RULE", "TZ", "NEXT", "LAST FIRE", "STATE", "PAUSED"]]
    for each in found:
        if "error" in each:
            rows.append(
                [each["name"], "", "", "", "", f"unreadable: {each['error']}", ""]
            )
            continue
        last = each["last"] or {}
        state = each["last_state"] or (
            f"skipped: {last['skipped']}" if last.get("skipped") else ""
        )
        if each["late"]:
            state += " (late)"
        rows.append(
            [
                display.printable(each["name"]),
                display.printable(each["rule"]),
                each["tz"],
                _local(each["next"]),
                _local(last.get("tick")),
                display.printable(state or ""),
                "yes" if each["paused"] else "",
            ]
        )
    for line in display.table(rows):
        click.echo(line)


def _each(names: tuple[str, ...], action: Any, done: str) -> None:
    """``action(name)`` for each of ``names``; say ``done``, or the error."""
    for name in names:
        try:
            action(name)
        except ScheduleError as exc:
            raise click.ClickException(str(exc)) from None
        click.echo(f"{done} schedule {name}")


@schedule.command("pause")
@click.argument("names", nargs=-1, required=True, metavar="NAME...")
@pass_queue
def pause(queue: JobQueue, names: tuple[str, ...]) -> None:
    """Fire nothing until 'resume' (ticks meanwhile are never fired)."""
    _each(names, queue.pause_schedule, "paused")


@schedule.command("resume")
@click.argument("names", nargs=-1, required=True, metavar="NAME...")
@pass_queue
def resume(queue: JobQueue, names: tuple[str, ...]) -> None:
    """Fire again, from the next tick."""
    _each(names, queue.resume_schedule, "resumed")


@schedule.command("rm")
@click.argument("names", nargs=-1, required=True, metavar="NAME...")
@pass_queue
def remove(queue: JobQueue, names: tuple[str, ...]) -> None:
    """Forget schedules (the jobs they fired stay; those held back go)."""
    for name in names:
        try:
            killed = queue.remove_schedule(name)
        except ScheduleError as exc:
            raise click.ClickException(str(exc)) from None
        held = f" (killed {len(killed)} held-back fire(s))" if killed else ""
        click.echo(f"removed schedule {name}{held}")


@schedule.command("run")
@click.option("--no-start", is_flag=True, help="Only queue; start no worker.")
@click.argument("name")
@pass_queue
def run_now(queue: JobQueue, no_start: bool, name: str) -> None:
    """Fire schedule NAME once, now; print the job's name.

    \b
    Example:
      dvc-task schedule run nightly
    """
    try:
        job = queue.run_schedule(name)
    except ScheduleError as exc:
        raise click.ClickException(str(exc)) from None
    if not no_start:
        queue.ensure_worker()
    click.echo(job)


@schedule.command("tick")
@click.option("--no-start", is_flag=True, help="Only queue; start no worker.")
@pass_queue
def tick(queue: JobQueue, no_start: bool) -> None:
    """Fire what is due, start a worker if anything was queued, and exit.

    Run every minute by 'schedule install' (safe to run from several places
    at once; with a worker started with --beat it does nothing).
    """
    queued = queue.tick()
    if queued is None:
        click.echo("a scheduler holds the schedules: it fires them")
        return
    for name in queued:
        click.echo(f"queued {name}")
    if queued and not no_start:
        queue.ensure_worker()


@schedule.command("install")
@pass_queue
def install(queue: JobQueue) -> None:
    """Have the OS run 'schedule tick' every minute (systemd, else cron).

    'schedule uninstall' removes exactly what this adds.
    """
    from dvc_task import ostimer  # noqa: PLC0415

    click.echo(ostimer.install(queue.folder, queue.broker_url, sys.executable))


@schedule.command("uninstall")
@pass_queue
def uninstall(queue: JobQueue) -> None:
    """Remove what 'schedule install' added for this queue."""
    from dvc_task import ostimer  # noqa: PLC0415

    click.echo(ostimer.uninstall(queue.folder))
