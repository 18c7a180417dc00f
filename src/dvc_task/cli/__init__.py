"""The ``dvc-task`` command line: queue commands, watch and control them.

The commands live in :mod:`.jobs`, :mod:`.workers` and :mod:`.control`;
:mod:`.errors` turns every failure into one line.
"""

from __future__ import annotations

import click

from dvc_task.cli import control, errors, flows, jobs, schedules, workers

#: The program's name in messages.
PROG = "dvc-task"


@click.group(
    cls=errors.Commands, context_settings={"help_option_names": ["-h", "--help"]}
)
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
    control.completion,
    flows.flow,
    schedules.schedule,
):
    cli.add_command(_command)


def main() -> None:
    """Console script entry point."""
    errors.run(cli, PROG)
