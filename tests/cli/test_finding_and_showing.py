"""Finding the queue from a subfolder, one job in full, completion, version."""

from __future__ import annotations

import json
import os
import subprocess
from pathlib import Path

import pytest

from conftest import SCRIPT, Cli


def dvc_task(
    *args: str, cwd: Path, env: dict[str, str] | None = None, check: int = 0
) -> subprocess.CompletedProcess[str]:
    """``dvc-task`` without ``--dir`` or DVC_TASK_DIR, run in ``cwd``."""
    base = {k: v for k, v in os.environ.items() if k != "DVC_TASK_DIR"}
    done = subprocess.run(
        [str(SCRIPT), *args],
        capture_output=True,
        text=True,
        cwd=cwd,
        env={**base, **(env or {})},
        timeout=120,
        check=False,
    )
    assert done.returncode == check, (done.stdout, done.stderr)
    return done


def test_the_queue_is_found_from_a_subfolder_as_git_finds_its_repository(
    tmp_path: Path,
) -> None:
    project = tmp_path / "project"
    deep = project / "src" / "deep"
    deep.mkdir(parents=True)
    dvc_task("run", "--no-start", "--name", "top", "--", "true", cwd=project)

    done = dvc_task("status", cwd=deep)
    assert done.stdout.splitlines()[0] == f"queue: {project / '.dvc-task'}"
    assert "top" in done.stdout
    # A job queued from below goes to the same queue, and runs down there.
    dvc_task("run", "--no-start", "--name", "below", "--", "true", cwd=deep)
    rows = json.loads(dvc_task("status", "--json", cwd=project).stdout)
    assert {row["name"]: row["cwd"] for row in rows} == {
        "top": str(project),
        "below": str(deep),
    }
    assert not (deep / ".dvc-task").exists()

    # --dir and DVC_TASK_DIR still win.
    other = tmp_path / "other"
    listed = dvc_task("--dir", str(other), "status", cwd=deep).stdout
    assert "no queue in" in listed
    env = {"DVC_TASK_DIR": str(other)}
    assert "no queue in" in dvc_task("status", cwd=deep, env=env).stdout


def test_without_a_queue_above_one_is_made_here(tmp_path: Path) -> None:
    here = tmp_path / "fresh"
    here.mkdir()
    dvc_task("run", "--no-start", "--", "true", cwd=here)
    assert (here / ".dvc-task").is_dir()


def test_status_name_shows_one_job_in_full(cli: Cli) -> None:
    cli("run", "--no-start", "--name", "first", "--", "true")
    cli(
        "run",
        "--no-start",
        "--name",
        "train",
        "--after",
        "first",
        "--priority",
        "5",
        "--retries",
        "2",
        "--timeout",
        "60",
        "--resources",
        "mem=2",
        "--env",
        "SEED=1",
        "--",
        "python",
        "train.py",
    )

    shown = cli("status", "train").stdout
    lines = dict(line.split(":", 1) for line in shown.splitlines())
    assert lines["name"].strip() == "train"
    assert lines["state"].strip() == "waiting for job first, attempt 1/3"
    assert lines["command"].strip() == "python train.py"
    assert "SEED" in lines["env"]
    assert lines["priority"].strip() == "5"
    assert lines["after"].strip() == "first"
    assert lines["slots"].strip() == "mem=2"
    assert lines["time limit"].strip() == "60 s"
    assert "2 (first after 0 s" in lines["retries"]

    (data,) = json.loads(cli("status", "--json", "train").stdout)
    assert "SEED" in data["env_keys"]
    assert "1" not in data["env_keys"]  # names only, never values
    assert data["timeout"] == 60
    assert "no job named 'nope'" in cli("status", "nope", check=1).stderr


def test_status_shows_priority_and_slots_columns_only_when_a_job_has_them(
    cli: Cli,
) -> None:
    cli("run", "--no-start", "--name", "plain", "--", "true")
    header = cli("status").stdout.splitlines()[1].split()
    assert "PRIORITY" not in header
    assert "SLOTS" not in header

    cli(
        "run",
        "--no-start",
        "--name",
        "big",
        "--priority",
        "3",
        "--resources",
        "mem=4",
        "--",
        "true",
    )
    table = cli("status").stdout.splitlines()
    assert {"PRIORITY", "SLOTS"} <= set(table[1].split())
    big = next(line for line in table if line.startswith("big"))
    assert "3" in big.split()
    assert "mem=4" in big.split()


def test_completion_of_commands_options_and_job_names(cli: Cli) -> None:
    cli("run", "--no-start", "--name", "train-a", "--", "true")
    cli("run", "--no-start", "--name", "train-b", "--", "true")
    cli("run", "--no-start", "--name", "eval", "--", "true")

    def complete(words: str) -> list[str]:
        env = {
            "COMP_WORDS": words,
            "COMP_CWORD": str(len(words.split()) - (0 if words.endswith(" ") else 1)),
            "_DVC_TASK_COMPLETE": "bash_complete",
        }
        done = cli(env=env)
        return [line.split(",", 1)[1] for line in done.stdout.splitlines()]

    assert complete("dvc-task logs tr") == ["train-a", "train-b"]
    assert complete("dvc-task kill ") == ["train-a", "train-b", "eval"]
    assert "pause" in complete("dvc-task pa")
    assert "--signal" in complete("dvc-task kill --si")


@pytest.mark.parametrize("shell", ["bash", "zsh", "fish"])
def test_completion_prints_a_script_for_each_shell(cli: Cli, shell: str) -> None:
    script = cli("completion", shell).stdout
    assert "_DVC_TASK_COMPLETE" in script
    assert f"{shell}_complete" in script


def test_version(cli: Cli) -> None:
    assert cli("--version").stdout.startswith("dvc-task, version ")
