"""The ``dvc-task`` command line: queue commands, watch and control them."""

from __future__ import annotations

import functools
import json
import logging
import signal
import sys
import time
from collections.abc import Iterator
from datetime import datetime
from pathlib import Path
from typing import Any, Callable, TypeVar

import click

from dvc_task.app import FSApp
from dvc_task.exceptions import DvcTaskError
from dvc_task.proc import ManagedProcess, ProcessInfo, ProcessManager
from dvc_task.utils import module_command
from dvc_task.worker import TemporaryWorker

F = TypeVar("F", bound=Callable[..., Any])
DEFAULT_WORKER = "dvc-task-worker"
#: How long ``run --wait`` waits for a worker to start the job.
START_TIMEOUT_S = 120.0


class Context:
    """The queue folder a command works on: ``<dir>/app`` and ``<dir>/procs``."""

    def __init__(self, folder: str) -> None:
        # Absolute: jobs record their folders, and a worker may run elsewhere.
        self.folder = Path(folder).resolve()

    @functools.cached_property
    def app(self) -> FSApp:
        """The FSApp of the queue (folders created on first use)."""
        return FSApp(
            "dvc-task",
            wdir=self.folder / "app",
            mkdir=True,
            include=["dvc_task.proc.tasks"],
        )

    @functools.cached_property
    def manager(self) -> ProcessManager:
        """The process manager of the queue."""
        return ProcessManager(self.folder / "procs")

    def queued(self) -> Iterator[tuple[str, Any]]:
        """``(process name, message)`` of the jobs waiting in the queue."""
        for msg in self.app.iter_queued():
            message: Any = msg
            try:
                _args, kwargs, _embed = message.decode()
                name = kwargs.get("name")
            except (ValueError, TypeError, AttributeError):
                continue
            if isinstance(name, str):
                yield name, msg


def handle_errors(func: F) -> F:
    """Turn expected failures into one line on stderr and exit code 1."""

    @functools.wraps(func)
    def wrapper(*args: Any, **kwargs: Any) -> Any:
        try:
            return func(*args, **kwargs)
        except KeyError as exc:
            raise click.ClickException(f"no job named {exc.args[0]!r}") from None
        except (DvcTaskError, OSError, ValueError) as exc:
            raise click.ClickException(str(exc)) from None

    return wrapper  # type: ignore[return-value]


pass_context = click.make_pass_decorator(Context)


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
@click.version_option(package_name="dvc-task")
@click.pass_context
def cli(ctx: click.Context, folder: str) -> None:
    """Run commands in the background, without a broker server.

    \b
    Example:
      dvc-task run --wait -- python train.py --epochs 3
      dvc-task status
    """
    ctx.obj = Context(folder)


@cli.command(context_settings={"ignore_unknown_options": True})
@click.option("--name", help="Job name (default: a short uuid).")
@click.option("--wait", is_flag=True, help="Start a worker and stream the output.")
@click.argument("command", nargs=-1, required=True, type=click.UNPROCESSED)
@pass_context
@handle_errors
def run(obj: Context, name: str | None, wait: bool, command: tuple[str, ...]) -> None:
    """Queue COMMAND as a job; print its name.

    \b
    Example:
      dvc-task run --name train -- python train.py --lr 0.1
    """
    signature = obj.manager.run_signature(list(command), name=name)
    job = signature.kwargs["name"]
    obj.app.send_task(signature.task, args=signature.args, kwargs=signature.kwargs)
    click.echo(job)
    if wait:
        _spawn_worker(obj)
        sys.exit(_stream(obj, job))


def _spawn_worker(obj: Context) -> None:
    # A worker of that name that already runs makes this one return at once.
    ManagedProcess.spawn(
        module_command("dvc_task", "--dir", str(obj.folder), "worker"),
        wdir=obj.folder / "workers" / DEFAULT_WORKER,
        name=DEFAULT_WORKER,
    )


def _stream(obj: Context, job: str) -> int:
    deadline = time.monotonic() + START_TIMEOUT_S
    while obj.manager.get(job) is None:
        if time.monotonic() > deadline:
            raise click.ClickException(f"no worker started job {job!r}")
        time.sleep(0.01)
    for line in obj.manager.follow(job):
        click.echo(line, nl=False)
    info = obj.manager[job]
    return info.returncode if info.returncode is not None else 1


def _duration(info: ProcessInfo) -> float | None:
    if not info.started_at:
        return None
    start = datetime.fromisoformat(info.started_at)
    end = (
        datetime.fromisoformat(info.finished_at)
        if info.finished_at
        else datetime.now(start.tzinfo)
    )
    return max(0.0, (end - start).total_seconds())


def _state(info: ProcessInfo) -> str:
    if info.returncode is None:
        return "running"
    return "done" if info.returncode == 0 else "failed"


@cli.command()
@click.option("--json", "as_json", is_flag=True, help="Print JSON instead of a table.")
@pass_context
@handle_errors
def status(obj: Context, as_json: bool) -> None:
    """List queued jobs and processes.

    \b
    Example:
      dvc-task status --json
    """
    rows: list[dict[str, Any]] = [
        {"name": name, "state": "queued"} for name, _ in obj.queued()
    ]
    for name, info in sorted(obj.manager.processes()):
        rows.append(
            {
                "name": name,
                "state": _state(info),
                "pid": info.pid,
                "started": info.started_at,
                "finished": info.finished_at,
                "duration": _duration(info),
                "returncode": info.returncode,
            }
        )
    if as_json:
        click.echo(json.dumps(rows, indent=2))
        return
    header = ["NAME", "STATE", "PID", "STARTED", "FINISHED", "DURATION", "RC"]
    table = [header]
    for row in rows:
        duration = row.get("duration")
        table.append(
            [
                row["name"],
                row["state"],
                str(row.get("pid") or ""),
                (row.get("started") or "")[:19],
                (row.get("finished") or "")[:19],
                f"{duration:.1f}s" if duration is not None else "",
                "" if row.get("returncode") is None else str(row["returncode"]),
            ]
        )
    widths = [max(len(cells[i]) for cells in table) for i in range(len(header))]
    for cells in table:
        click.echo("  ".join(c.ljust(w) for c, w in zip(cells, widths)).rstrip())


@cli.command()
@click.option("-f", "--follow", is_flag=True, help="Keep printing until the job ends.")
@click.argument("name")
@pass_context
@handle_errors
def logs(obj: Context, follow: bool, name: str) -> None:
    """Print the output of job NAME.

    \b
    Example:
      dvc-task logs -f train
    """
    if follow:
        for line in obj.manager.follow(name):
            click.echo(line, nl=False)
        return
    out = obj.manager[name].stdout
    if out:
        with open(out, "rb") as fobj:
            sys.stdout.flush()
            sys.stdout.buffer.write(fobj.read())


@cli.command()
@click.option("--force", is_flag=True, help="SIGKILL instead of SIGTERM.")
@click.argument("name")
@pass_context
@handle_errors
def kill(obj: Context, force: bool, name: str) -> None:
    """Stop job NAME and all its children; a queued job is taken off the queue.

    \b
    Example:
      dvc-task kill --force train
    """
    for queued, msg in obj.queued():
        if queued == name:
            obj.app.reject(msg.delivery_tag)
            click.echo(f"removed queued job {name}")
            return
    sig = signal.SIGKILL if force else signal.SIGTERM
    try:
        obj.manager.send_signal(name, sig, group=True)
    except ProcessLookupError:
        if obj.manager.get(name) is None:
            raise KeyError(name) from None
        raise click.ClickException(f"job {name!r} is not running") from None
    click.echo(f"sent {signal.Signals(sig).name} to job {name}")


@cli.command()
@click.argument("name")
@pass_context
@handle_errors
def rm(obj: Context, name: str) -> None:
    """Remove finished job NAME and its output.

    \b
    Example:
      dvc-task rm train
    """
    if obj.manager.get(name) is None:
        raise KeyError(name)
    obj.manager.remove(name)


@cli.command()
@pass_context
@handle_errors
def cleanup(obj: Context) -> None:
    """Remove every finished job and tidy the queue folder.

    \b
    Example:
      dvc-task cleanup
    """
    obj.manager.cleanup()
    obj.app.clean()


@cli.command()
@click.option("--timeout", default=10.0, show_default=True, help="Idle seconds.")
@click.option("--concurrency", default=1, show_default=True, help="Jobs at once.")
@click.option("--name", default=DEFAULT_WORKER, show_default=True, help="Worker name.")
@pass_context
@handle_errors
def worker(obj: Context, timeout: float, concurrency: int, name: str) -> None:
    """Run a worker in the foreground until the queue stays empty.

    \b
    Example:
      dvc-task worker --timeout 30 --concurrency 2
    """
    logging.basicConfig(level=logging.INFO)
    TemporaryWorker(
        obj.app,
        timeout=timeout,
        pool="threads",
        concurrency=concurrency,
        prefetch_multiplier=1,
        without_heartbeat=True,
        without_mingle=True,
        without_gossip=True,
        loglevel="INFO",
    ).start(name)


def main() -> None:
    """Console script entry point."""
    cli(prog_name="dvc-task")
