"""Queue a shell command, run it with a temporary worker, print its output.

Run: ``python examples/quickstart.py [COMMAND]`` (default: ``echo hello from
dvc-task``). The queue lives in a temporary folder that is removed at exit.
"""

from __future__ import annotations

import logging
import subprocess
import sys
import tempfile

from dvc_task.app import FSApp
from dvc_task.worker import TemporaryWorker


def main(argv: list[str]) -> int:
    """Run ``argv`` (a shell command) as a job; return its exit code."""
    command = " ".join(argv) or "echo hello from dvc-task"
    logging.basicConfig(level=logging.WARNING)
    with tempfile.TemporaryDirectory() as wdir:
        app = FSApp("quickstart", wdir=wdir, mkdir=True)

        @app.task(name="shell")
        def shell(cmd: str) -> dict[str, object]:
            done = subprocess.run(
                cmd, shell=True, capture_output=True, text=True, check=False
            )
            return {"returncode": done.returncode, "output": done.stdout + done.stderr}

        result = shell.delay(command)
        print(f"queued {command!r} as job {result.id}", file=sys.__stdout__)
        worker = TemporaryWorker(app, timeout=0.5, pool="solo", loglevel="WARNING")
        worker.start("quickstart")
        outcome = result.get(timeout=60, disable_sync_subtasks=False)
        print(outcome["output"], end="", file=sys.__stdout__)
        print(f"exit code {outcome['returncode']}", file=sys.__stdout__)
        return int(outcome["returncode"])


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
