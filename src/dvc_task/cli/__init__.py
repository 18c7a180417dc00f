"""The ``dvc-task`` command line: queue commands, watch and control them.

The commands live in :mod:`.jobs`, :mod:`.workers` and :mod:`.control`;
:mod:`.errors` turns every failure into one line.
"""

from __future__ import annotations

import click

from dvc_task.cli import control, errors, jobs, workers
from dvc_task.jobs import open_queue

#: The program's name in messages.
PROG = "dvc-task"


@click.group(
    cls=errors.Commands, context_settings={"help_option_names": ["-h", "--help"]}
)
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
    ctx.obj = open_queue(folder, broker)


for _command in (
    jobs.run,
    jobs.status,
    jobs.logs,
    jobs.kill,
    jobs.rm,
    jobs.cleanup,
    jobs.wait_jobs,
    workers.worker,
    workers.start,
    workers.stop,
    workers.workers,
    control.retry,
    control.hold,
    control.release,
    control.pause,
    control.resume,
    control.top,
):
    cli.add_command(_command)


def main() -> None:
    """Console script entry point."""
    errors.run(cli, PROG)
