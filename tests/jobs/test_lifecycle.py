"""A job's life through its one owner: defects that each opened a path where
a job was lost, stuck or hidden, checked through the command line and the API."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from dvc_task.jobs import JobQueue, UnknownJobError

from conftest import Cli


def test_a_record_with_a_bad_time_is_listed_unreadable_and_can_be_removed(
    cli: Cli,
) -> None:
    cli("run", "--no-start", "--held", "--name", "good", "--", "true")
    cli("run", "--no-start", "--held", "--name", "bad", "--", "true")
    path = cli.folder / "jobs" / "bad.json"
    record = json.loads(path.read_text())
    record["queued_at"] = "yesterday-ish"
    path.write_text(json.dumps(record))

    states = cli.states()
    assert states["bad"]["state"] == "unreadable"
    assert states["good"]["state"] == "held"
    assert "yesterday-ish" in cli("status").stdout or "bad" in cli("status").stdout
    assert cli("rm", "bad").stdout == "removed bad\n"
    assert set(cli.states()) == {"good"}
    assert cli("cleanup").returncode == 0


@pytest.mark.parametrize("name", [".hidden", "-dash"])
def test_a_name_that_listings_or_options_would_swallow_is_refused(
    cli: Cli, name: str
) -> None:
    done = cli("run", "--no-start", "--name", name, "--", "true", check=1)
    assert f"invalid job name {name!r}" in done.stderr
    assert done.stderr.count("\n") == 1
    assert not (cli.folder / "jobs").exists() or cli.states() == {}


@pytest.mark.parametrize("command", ["hold", "release", "retry", "kill", "rm"])
def test_an_unknown_job_in_a_folder_without_a_queue_creates_nothing(
    cli: Cli, command: str
) -> None:
    done = cli(command, "ghost", check=1)
    assert "no job named 'ghost'" in done.stderr
    assert not cli.folder.exists()
    assert "no queue" in cli("status").stdout


@pytest.mark.parametrize("command", ["hold", "release", "retry", "kill", "rm", "logs"])
def test_a_bad_name_is_one_line_without_a_traceback(cli: Cli, command: str) -> None:
    cli("run", "--no-start", "--held", "--name", "x", "--", "true")
    done = cli(command, "a/b", check=1)
    assert "Traceback" not in done.stderr
    assert done.stderr.startswith("Error: invalid job name 'a/b'")
    assert done.stderr.count("\n") == 1


def test_usage_errors_are_one_line_naming_the_help(cli: Cli) -> None:
    done = cli("run", "--no-such-option", "--", "true", check=2)
    assert done.stderr.count("\n") == 1
    assert "--no-such-option" in done.stderr
    assert "dvc-task run --help" in done.stderr


def test_a_job_with_an_unknown_name_is_refused_by_every_verb(
    queue: JobQueue, tmp_path: Path
) -> None:
    queue.submit(["true"], name="real", held=True)
    for verb in (queue.hold, queue.release, queue.kill, queue.remove):
        with pytest.raises(UnknownJobError):
            verb("ghost")
    with pytest.raises(UnknownJobError):
        queue.retry(["ghost"])
    assert [job.name for job in queue.jobs()] == ["real"]
