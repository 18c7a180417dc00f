"""Bad input on the command line: one line in the user's words, nothing queued."""

from __future__ import annotations

import json
import subprocess
from pathlib import Path

import pytest

from conftest import SCRIPT, Cli, Processes, wait_for


@pytest.mark.parametrize(
    ("options", "said"),
    [
        (["--priority", "1" + "0" * 20], "priority must be a whole number from"),
        (["--priority", "-1000001"], "priority must be a whole number from"),
        (["--retry-delay", "nan"], "'--retry-delay': 'nan' is not a finite number"),
        (["--retry-backoff", "inf"], "'--retry-backoff'"),
        (["--timeout", "inf"], "'--timeout': 'inf' is not a finite number"),
    ],
)
def test_an_option_out_of_range_is_refused_in_one_line(
    cli: Cli, options: list[str], said: str
) -> None:
    done = cli("run", "--no-start", *options, "--", "true", check=None)
    assert done.returncode in (1, 2)
    assert said in done.stderr
    assert done.stderr.count("\n") == 1
    assert "retry_delay" not in done.stderr
    assert not (cli.folder / "jobs").exists() or cli.states() == {}


def test_the_largest_priority_allowed_is_kept(cli: Cli) -> None:
    cli("run", "--no-start", "--name", "p", "--priority", "1000000", "--", "true")
    assert cli.states()["p"]["priority"] == 1_000_000


def test_an_empty_command_is_refused(cli: Cli) -> None:
    done = cli("run", "--no-start", "--", "", check=1)
    assert done.stderr == (
        "Error: empty command: give the program to run and its arguments\n"
    )
    assert not (cli.folder / "jobs").exists() or cli.states() == {}


def test_a_record_missing_a_field_is_named_in_the_listing(cli: Cli) -> None:
    cli("run", "--no-start", "--held", "--name", "broken", "--", "true")
    path = cli.folder / "jobs" / "broken.json"
    record = json.loads(path.read_text())
    del record["name"]
    path.write_text(json.dumps(record))

    row = cli.states()["broken"]
    assert row["state"] == "unreadable"
    assert "field 'name' is missing" in row["error"]
    assert "positional argument" not in row["error"]


@pytest.mark.parametrize(
    "args",
    [["logs", "-f", "h"], ["run", "--wait", "--no-start", "--held", "--", "true"]],
    ids=["logs -f", "run --held --wait"],
)
def test_waiting_on_a_held_job_says_how_to_release_it(
    cli: Cli, processes: Processes, tmp_path: Path, args: list[str]
) -> None:
    cli("run", "--no-start", "--held", "--name", "h", "--", "echo", "hi")
    said = tmp_path / "stderr"
    with said.open("wb") as err:
        proc = processes.start(
            SCRIPT,
            *args,
            env=cli.env,
            cwd=cli.cwd,
            stdout=subprocess.DEVNULL,
            stderr=err,
        )
    wait_for(lambda: b"is held" in said.read_bytes(), "the job said to be held")
    proc.kill()
    proc.wait()
    assert b"'dvc-task release " in said.read_bytes()


def test_a_job_that_never_ran_has_no_run_header_when_retried(cli: Cli) -> None:
    cli("run", "--wait", "--name", "f", "--", "false", check=1)
    cli("run", "--wait", "--name", "d", "--after", "f", "--", "echo", "ran", check=1)
    assert cli.states()["d"]["state"] == "dependency failed"
    cli("run", "--wait", "--replace", "--name", "f", "--", "true")
    cli("retry", "d")
    cli.wait_state("d", "succeeded")
    assert cli("logs", "d").stdout == "ran\n"


def test_two_starts_at_once_start_two_workers_with_their_own_names(
    cli: Cli, processes: Processes
) -> None:
    cli("run", "--no-start", "--name", "j", "--", "true")  # the queue exists
    starts = [
        processes.start(
            SCRIPT,
            "start",
            "--timeout",
            "30",
            env=cli.env,
            cwd=cli.cwd,
            stdout=subprocess.PIPE,
        )
        for _ in range(2)
    ]
    said = []
    for proc in starts:
        out, _ = proc.communicate(timeout=60)
        assert proc.returncode == 0
        said.append(out.decode().strip())
    assert sorted(said) == [
        "started worker dvc-task-worker",
        "started worker dvc-task-worker-2",
    ]
    wait_for(lambda: len(cli.workers()) == 2, "both workers to run")
