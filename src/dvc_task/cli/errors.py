"""The one place where the command line turns a failure into words.

Every command runs under :func:`run`: bad input of any kind (a usage
error, a bad name, an unknown job, an unreachable server, a folder that is
not private) ends as one line on stderr and a non-zero exit code, never a
traceback. What is not an expected failure is a bug, and keeps its traceback.
"""

from __future__ import annotations

import os
import sys
from typing import NoReturn

import click

from dvc_task.exceptions import DvcTaskError

#: Exit code of a usage error (as click has it), and of Ctrl-C.
USAGE_EXIT = 2
INTERRUPTED_EXIT = 130


def fail(message: str, code: int = 1) -> NoReturn:
    """Print ``Error: message`` on stderr and exit with ``code``."""
    click.echo(f"Error: {message}", err=True)
    sys.exit(code)


def quiet_stdout() -> None:
    """Send what is left of stdout nowhere: its reader has gone (``| head``).

    Python must then not complain when it flushes stdout at exit.
    """
    devnull = os.open(os.devnull, os.O_WRONLY)
    os.dup2(devnull, sys.stdout.fileno())
    os.close(devnull)


class Commands(click.Group):
    """A command group whose commands end quietly on a closed pipe or Ctrl-C.

    Click would turn both into its own exit 1 before :func:`run` sees them.
    """

    def invoke(self, ctx: click.Context) -> object:
        """Run the chosen command."""
        try:
            return super().invoke(ctx)
        except BrokenPipeError:
            quiet_stdout()  # its reader has gone (``| head``): no error
            sys.exit(0)
        except KeyboardInterrupt:
            sys.exit(INTERRUPTED_EXIT)


def run(group: click.Group, prog_name: str) -> NoReturn:
    """Run the command line of ``group``; exit with its code."""
    try:
        result = group.main(prog_name=prog_name, standalone_mode=False)
    except click.UsageError as exc:
        where = exc.ctx.command_path if exc.ctx is not None else prog_name
        fail(f"{exc.format_message()} (see '{where} --help')", USAGE_EXIT)
    except click.ClickException as exc:
        fail(exc.format_message(), exc.exit_code)
    except click.Abort:
        fail("aborted", INTERRUPTED_EXIT)
    except (DvcTaskError, OSError, ValueError, TimeoutError) as exc:
        fail(str(exc))
    except Exception as exc:
        if not _is_redis_error(exc):
            raise
        fail(
            f"the Redis server: {exc}: is it running and reachable, and is "
            "--broker (DVC_TASK_BROKER) right?"
        )
    sys.exit(result if isinstance(result, int) else 0)


def _is_redis_error(exc: Exception) -> bool:
    # The Redis client is imported only for a queue on a Redis server.
    errors = sys.modules.get("redis.exceptions")
    return errors is not None and isinstance(exc, errors.RedisError)
