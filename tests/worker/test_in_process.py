"""A TemporaryWorker run inside a program leaves the program as it was."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

PROGRAM = """
import json, logging, signal, sys
from dvc_task.app import FSApp
from dvc_task.worker import TemporaryWorker

app = FSApp("inproc", wdir=sys.argv[1], mkdir=True)

@app.task(name="double")
def double(x):
    return 2 * x

stdout, stderr = sys.stdout, sys.stderr
handlers = list(logging.getLogger().handlers)
sigterm = signal.getsignal(signal.SIGTERM)
first = double.delay(1)
TemporaryWorker(app, timeout=0.3, pool="solo").start("w1")
kept = {
    "stdout": sys.stdout is stdout,
    "stderr": sys.stderr is stderr,
    "logging": logging.getLogger().handlers == handlers,
    "sigterm": signal.getsignal(signal.SIGTERM) == sigterm,
}
got = first.get(timeout=10)
second = double.delay(21)
TemporaryWorker(app, timeout=0.3, pool="threads").start("w2")
print("a plain print")
print(json.dumps({"kept": kept, "first": got, "second": second.get(timeout=10)}))
"""


def test_worker_leaves_streams_logging_signals_and_results_usable(
    tmp_path: Path,
) -> None:
    done = subprocess.run(
        [sys.executable, "-c", PROGRAM, str(tmp_path / "q")],
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
    )

    assert done.returncode == 0, done.stderr
    # Celery's banner comes first (loglevel INFO), then what the program printed.
    lines = done.stdout.splitlines()[-2:]
    assert lines[0] == "a plain print"
    report = json.loads(lines[1])
    assert report["kept"] == {
        "stdout": True,
        "stderr": True,
        "logging": True,
        "sigterm": True,
    }
    assert report["first"] == 2
    # A second worker in the same program runs its job.
    assert report["second"] == 42
    assert "a plain print" not in done.stderr
