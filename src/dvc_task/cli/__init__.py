"""The ``dvc-task`` command line: queue commands, watch and control them.

The commands live in :mod:`.jobs`, :mod:`.workers`, :mod:`.control`,
:mod:`.flows` and :mod:`.schedules`, each imported only when one of its
commands runs (a quick command stays quick); :mod:`.errors` turns every
failure into one line.
"""

from __future__ import annotations

import importlib

import click

from dvc_task.cli import control, errors

#: The program's name in messages.
PROG = "dvc-task"


#: ``command -> module:attribute`` of every command, in the order of ``--help``.
COMMANDS = {
    "run": "jobs:run",
    "status": "jobs:status",
    "logs": "jobs:logs",
    "wait": "jobs:wait_jobs",
    "kill": "jobs:kill",
    "pause": "control:pause",
    "resume": "control:resume",
    "rm": "jobs:rm",
    "cleanup": "jobs:cleanup",
    "retry": "control:retry",
    "hold": "control:hold",
    "release": "control:release",
    "top": "control:top",
    "worker": "workers:worker",
    "start": "workers:start",
    "stop": "workers:stop",
    "workers": "workers:workers",
    "schedule": "schedules:schedule",
    "flow": "flows:flow",
    "completion": "control:completion",
}


class LazyCommands(errors.Commands):
    """The commands of :data:`COMMANDS`, each imported when it is asked for."""

    def list_commands(self, ctx: click.Context) -> list[str]:
        """Every command's name."""
        return list(COMMANDS)

    def get_command(self, ctx: click.Context, cmd_name: str) -> click.Command | None:
        """Command ``cmd_name``, imported now (None: no such command)."""
        where = COMMANDS.get(cmd_name)
        if where is None:
            return None
        module, _, attribute = where.partition(":")
        command: click.Command = getattr(
            importlib.import_module(f"dvc_task.cli.{module}"), attribute
        )
        return command


@click.group(cls=LazyCommands, context_settings={"help_option_names": ["-h", "--help"]})
@click.option(
    "--dir",
    "folder",
    envvar="DVC_TASK_DIR",
    type=click.Path(file_okay=False),
    help=(
        f"Folder of the queue and its jobs (or DVC_TASK_DIR; default: the "
        f"nearest {control.FOLDER_NAME} here or in a parent folder, else one "
        "here)."
    ),
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
def cli(ctx: click.Context, folder: str | None, broker: str | None) -> None:
    """Run commands in the background, without a broker server.

    \b
    Example:
      dvc-task run --wait -- python train.py --epochs 3
      dvc-task status
    """
    ctx.obj = control.open_cli_queue(folder, broker)


def main() -> None:
    """Console script entry point."""
    errors.run(cli, PROG)
