"""The dvc-task command line, run as a user would: the console script."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest

from conftest import Processes, wait_for

SCRIPT = Path(sys.executable).parent / "dvc-task"


@pytest.fixture
def cli(tmp_path: Path, processes: Processes) -> Any:
    env = {**processes.env, "DVC_TASK_DIR": str(tmp_path / "q")}

    def run(*args: str, check: int | None = 0) -> subprocess.CompletedProcess[str]:
        done = subprocess.run(
            [str(SCRIPT), *args],
            capture_output=True,
            text=True,
            env=env,
            cwd=tmp_path,
            timeout=180,
            check=False,
        )
        if check is not None:
            assert done.returncode == check, done.stderr
        return done

    run.env = env  # type: ignore[attr-defined]
    return run


def states(cli: Any) -> dict[str, dict[str, Any]]:
    return {row["name"]: row for row in json.loads(cli("status", "--json").stdout)}


def test_run_wait_streams_output_and_exits_with_the_jobs_code(cli: Any) -> None:
    done = cli(
        "run",
        "--wait",
        "--name",
        "hello",
        "--",
        "sh",
        "-c",
        "echo hello; echo oops >&2; exit 3",
        check=3,
    )

    assert done.stdout.splitlines() == ["hello", "hello", "oops"]
    row = states(cli)["hello"]
    assert row["state"] == "failed"
    assert row["returncode"] == 3
    assert row["duration"] is not None


def test_queued_job_is_listed_then_run_by_a_worker(
    cli: Any, processes: Processes
) -> None:
    name = cli("run", "--", "echo", "later").stdout.strip()
    assert states(cli)[name]["state"] == "queued"
    assert name in cli("status").stdout

    worker = cli("worker", "--timeout", "0.5")

    assert "succeeded" in worker.stderr
    assert states(cli)[name]["state"] == "done"
    assert cli("logs", name).stdout == "later\n"
    assert cli("logs", "-f", name).stdout == "later\n"


def test_worker_ignores_modules_in_the_current_directory(
    cli: Any, tmp_path: Path
) -> None:
    for module in ("copy", "json", "logging"):
        (tmp_path / f"{module}.py").write_text("raise SystemExit('shadowed')\n")

    done = cli("run", "--wait", "--name", "job", "--", "echo", "ran")

    assert done.stdout.splitlines() == ["job", "ran"]
    assert states(cli)["job"]["state"] == "done"


def test_kill_stops_a_running_job_and_rm_removes_it(
    cli: Any, processes: Processes, tmp_path: Path
) -> None:
    cli("run", "--name", "long", "--", "sh", "-c", "echo started; sleep 120")
    worker = processes.start(
        str(SCRIPT), "worker", "--timeout", "0.5", env=cli.env, cwd=tmp_path
    )
    wait_for(lambda: states(cli).get("long", {}).get("state") == "running", "start")
    failed = cli("rm", "long", check=1)
    assert "force" in failed.stderr

    assert "SIGTERM" in cli("kill", "long").stdout

    wait_for(lambda: states(cli)["long"]["state"] == "failed", "the job to stop")
    assert worker.wait(timeout=120) == 0
    cli("rm", "long")
    assert "long" not in states(cli)


def test_kill_of_a_queued_job_takes_it_off_the_queue(cli: Any) -> None:
    cli("run", "--name", "q1", "--", "true")

    assert "removed" in cli("kill", "q1").stdout
    assert states(cli) == {}


def test_cleanup_removes_finished_jobs(cli: Any) -> None:
    cli("run", "--wait", "--name", "a", "--", "true")
    cli("cleanup")
    assert states(cli) == {}


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (["kill", "nope"], "no job named 'nope'"),
        (["logs", "nope"], "no job named 'nope'"),
        (["rm", "nope"], "no job named 'nope'"),
        (["run", "--name", "../x", "--", "true"], "invalid process name"),
    ],
)
def test_errors_are_one_line_without_traceback(
    cli: Any, args: list[str], message: str
) -> None:
    done = cli(*args, check=1)
    assert message in done.stderr
    assert "Traceback" not in done.stderr
    assert len(done.stderr.strip().splitlines()) == 1


def test_a_file_as_the_folder_is_a_clear_error(cli: Any, tmp_path: Path) -> None:
    (tmp_path / "file").write_text("x")
    done = cli("--dir", str(tmp_path / "file"), "status", check=2)
    assert "Traceback" not in done.stderr
    assert "file" in done.stderr


@pytest.mark.parametrize(
    "command", ["run", "status", "logs", "kill", "rm", "cleanup", "worker"]
)
def test_every_command_has_help_with_an_example(cli: Any, command: str) -> None:
    assert "Example" in cli(command, "--help").stdout


def test_module_entry_point_matches_the_script(tmp_path: Path) -> None:
    done = subprocess.run(
        [sys.executable, "-m", "dvc_task", "--help"],
        capture_output=True,
        text=True,
        check=True,
        cwd=tmp_path,
        env={**os.environ},
    )
    assert "Example" in done.stdout
