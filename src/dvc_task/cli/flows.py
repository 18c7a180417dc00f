"""The ``flow`` commands: run a flow of Python tasks from the command line."""

from __future__ import annotations

import json
import os
import sys
from typing import TYPE_CHECKING, Any

import click

from dvc_task.cli.control import pass_queue
from dvc_task.jobs import JobQueue

if TYPE_CHECKING:
    from dvc_task.flow import FlowFunction


def _value(text: str) -> Any:
    """A command-line argument of a flow: JSON if it reads as JSON, else text."""
    try:
        return json.loads(text)
    except ValueError:
        return text


def load_flow(target: str) -> FlowFunction:
    """The flow ``MODULE:FLOW`` names (a module found from here, or a script).

    Raises:
        click.ClickException: it cannot be loaded, or is not a flow.
    """
    from dvc_task.flow import FlowFunction  # noqa: PLC0415
    from dvc_task.flow.runner import load  # noqa: PLC0415

    module, sep, name = target.rpartition(":")
    if not sep or not module or not name:
        raise click.BadParameter(
            f"{target!r} is not MODULE:FLOW (e.g. pipelines:sweep)",
            param_hint="MODULE:FLOW",
        )
    where = (
        {"path": os.path.abspath(module), "qualname": name}
        if module.endswith(".py") or os.sep in module
        else {"module": module, "qualname": name}
    )
    if os.getcwd() not in sys.path:
        sys.path.insert(0, os.getcwd())  # as 'python -m' finds a module here
    try:
        function = load(where, unwrap=False)
    except (ImportError, AttributeError, OSError) as exc:
        raise click.ClickException(f"cannot load {target}: {exc}") from None
    if not isinstance(function, FlowFunction):
        raise click.ClickException(f"{target} is not a flow (decorate it with @flow)")
    return function


@click.group()
def flow() -> None:
    """Run flows: Python generators that yield tasks (see docs/flows.md)."""


@flow.command("run")
@click.option("--wait", is_flag=True, help="Run it here, showing its progress.")
@click.argument("target", metavar="MODULE:FLOW")
@click.argument("args", nargs=-1, metavar="[ARG...]")
@pass_queue
def run_flow(queue: JobQueue, wait: bool, target: str, args: tuple[str, ...]) -> None:
    """Run flow FLOW of MODULE (a module, or a script's path) with ARGs.

    Each ARG is JSON if it reads as JSON (0.1, [1,2], "text"), else text.
    Without --wait the flow runs detached and this prints its name; its
    tasks are jobs like any other ('dvc-task status').

    \b
    Example:
      dvc-task flow run pipelines:sweep '[0.1, 0.01]'
      dvc-task flow run --wait ./train.py:sweep 0.1
    """
    from dvc_task.flow import execute  # noqa: PLC0415

    function = load_flow(target)
    folder = str(queue.folder)
    broker = queue.broker_url
    result = execute(
        function(*(_value(arg) for arg in args)), folder, broker=broker, wait=wait
    )
    if not wait:
        click.echo(result.name)
        return
    for job, state in result.states.items():
        click.echo(f"{job}: {state}")
    if result.error:
        click.echo(f"the flow raised {result.error}", err=True)
    if not result.ok:
        sys.exit(1)
