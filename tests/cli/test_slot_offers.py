"""GPUs and resources a job asks for, against what live workers offer.

This machine has no GPU (no ``nvidia-smi`` on the tests' ``PATH``): a GPU
job is accepted only when a live worker offers GPUs, as one on a GPU host
of a shared server would. The GPU locks live in the test's folder.
"""

from __future__ import annotations

import shutil
from pathlib import Path
from typing import Any

import pytest

from conftest import Cli, wait_for


@pytest.fixture(autouse=True)
def no_gpu_here(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    if shutil.which("nvidia-smi"):
        pytest.skip("this machine has GPUs")
    monkeypatch.setenv("DVC_TASK_GPU_LOCKS", str(tmp_path / "gpu-locks"))


def offered(cli: Cli) -> list[dict[str, Any]]:
    return [w for w in cli.workers() if w["gpus"] is not None]


def start_worker(cli: Cli, *options: str) -> None:
    cli("start", "--timeout", "120", *options)
    wait_for(lambda: offered(cli), "the worker to say what it offers")


def test_a_gpu_job_is_refused_when_no_worker_or_gpu_could_run_it(cli: Cli) -> None:
    done = cli("run", "--no-start", "--gpus", "1", "--", "true", check=1)

    assert "needs 1 GPU(s) but no live worker offers that many" in done.stderr
    assert "this machine has 0" in done.stderr
    assert done.stderr.count("\n") == 1
    assert not (cli.folder / "jobs").exists() or cli.states() == {}


def test_a_gpu_job_is_accepted_for_a_worker_that_offers_gpus(cli: Cli) -> None:
    start_worker(cli, "--gpus", "0,1")
    assert offered(cli)[0]["gpus"] == ["0", "1"]

    done = cli(
        "run",
        "--name",
        "g",
        "--gpus",
        "2",
        "--",
        "sh",
        "-c",
        "echo $CUDA_VISIBLE_DEVICES",
    )
    assert done.stderr == ""
    cli.wait_state("g", "succeeded")
    assert cli("logs", "g").stdout == "0,1\n"

    refused = cli("run", "--no-start", "--gpus", "3", "--", "true", check=1)
    assert "(the most: 2)" in refused.stderr


def test_a_job_no_worker_offers_resources_for_says_what_it_waits_for(
    cli: Cli,
) -> None:
    start_worker(cli)  # offers no resources

    done = cli("run", "--name", "big", "--resources", "mem=5", "--", "true")
    assert done.stdout == "big\n"
    assert done.stderr == (
        "warning: job big waits for 5 mem: no live worker offers it "
        "('dvc-task start --resources mem=5' starts one)\n"
    )
    cli.wait_state("big", "waiting")
    assert cli.states()["big"]["waiting_for"] == "5 mem: no live worker offers it"
    assert "waiting for 5 mem: no live worker offers it" in cli("status").stdout

    # Still true, and still said, once no worker lives at all.
    cli("stop")
    wait_for(lambda: not cli.workers(), "the worker to stop")
    assert cli.states()["big"]["waiting_for"] == "5 mem: no live worker offers it"

    # A worker that offers it runs it.
    start_worker(cli, "--resources", "mem=8")
    cli.wait_state("big", "succeeded")


def test_a_job_waiting_for_others_names_those_not_done(cli: Cli) -> None:
    cli("run", "--no-start", "--name", "a", "--held", "--", "true")
    cli("run", "--no-start", "--name", "b", "--", "true")
    cli("run", "--no-start", "--name", "c", "--after", "a,b", "--", "true")

    assert cli.states()["c"]["waiting_for"] == "jobs a, b"
    cli("worker", "--timeout", "0")
    row = cli.states()["c"]
    assert (row["state"], row["waiting_for"]) == ("waiting", "job a")
    assert "waiting for job a" in cli("status").stdout
