"""Flows as their users run them: a script that calls ``execute``, real
workers on a real queue, a driver killed with SIGKILL, a resume.
"""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import textwrap
from pathlib import Path
from typing import Any

import pytest

from dvc_task.flow import (
    BadStepError,
    Dependency,
    NotJSONError,
    execute,
    flow,
    sh,
    task,
)

from conftest import Cli, Processes, wait_for

PIPELINES = """
import json, os, sys, time
from pathlib import Path
from dvc_task.flow import Dependency, Task, execute, flow, sh, task

def note(what):
    with open("ran.txt", "a") as out:
        out.write(what + "\\n")

@task(retries=1)
def train(lr, out):
    note(f"train {lr}")
    print("training", lr, end="")  # no line end: the result still reads
    return {"score": -abs(lr - 0.01), "lr": lr, "model": Path(out)}

@flow
def sweep(lrs):
    runs = [train.make_task(lr, f"models/{lr}.pt") for lr in lrs]
    yield runs
    yield Dependency(*runs)
    best = max(runs, key=lambda t: t.result()["score"])
    yield sh(["sh", "-c", f"echo best {best.args[0]} >> ran.txt"], name="report")
    return best.result()["lr"]

@task
def wait_for_gate(name):
    note(f"gated {name}")
    while not os.path.exists("gate"):
        time.sleep(0.01)
    return name

@task
def quick(name):
    note(f"quick {name}")
    return name

@flow
def gated():
    first = quick.make_task("a")
    yield first
    yield Dependency(first)
    yield wait_for_gate.make_task("b")

@task
def fail(how):
    note(f"fail {how}")
    if how == "exit":
        os._exit(3)
    raise RuntimeError("it went wrong")

@flow
def branches(how):
    bad = fail.make_task(how)
    yield bad
    yield sh(["sh", "-c", "echo dependant >> ran.txt"], name="dependant", after=[bad])
    yield quick.make_task("other")

@task
def build(src, dst):
    note("build")
    Path(dst).write_text(Path(src).read_text().upper())

@flow
def make_like():
    yield build.make_task("in.txt", "out.txt", inputs=["in.txt"], outputs=["out.txt"])

class Square(Task):
    def __init__(self, number):
        super().__init__(name=f"square-{number}")
        self.number = number

    def run(self):
        note(f"square {self.number}")
        return self.number * self.number

@flow
def inner(number):
    squared = Square(number)
    yield squared
    yield Dependency()
    return squared.result()

@flow
def outer():
    total = 0
    for number in (2, 3):
        total += yield inner(number)
    return total

if __name__ == "__main__":
    target = globals()[sys.argv[1]](*json.loads(sys.argv[2]))
    result = execute(target, os.environ["DVC_TASK_DIR"])
    print(json.dumps({"states": result.states, "value": result.value,
                      "error": result.error}))
"""


@pytest.fixture
def pipelines(tmp_path: Path) -> Path:
    script = tmp_path / "pipelines.py"
    script.write_text(textwrap.dedent(PIPELINES))
    return script


def run_flow(
    cli: Cli, script: Path, name: str, *args: Any, check: int = 0
) -> dict[str, Any]:
    done = subprocess.run(
        [sys.executable, str(script), name, json.dumps(list(args))],
        capture_output=True,
        text=True,
        cwd=script.parent,
        env=cli.env,
        timeout=300,
        check=False,
    )
    assert done.returncode == check, done.stderr
    found: dict[str, Any] = json.loads(done.stdout.splitlines()[-1])
    return found


def ran(tmp_path: Path) -> list[str]:
    path = tmp_path / "ran.txt"
    return path.read_text().splitlines() if path.exists() else []


def test_a_sweep_runs_each_task_as_a_job_and_a_rerun_resumes(
    cli: Cli, pipelines: Path, tmp_path: Path
) -> None:
    first = run_flow(cli, pipelines, "sweep", [0.1, 0.01])

    assert first["value"] == 0.01
    assert first["error"] is None
    names = list(first["states"])
    assert [name.split("-")[0] for name in names] == [
        "sweep.train",
        "sweep.train",
        "sweep.report",
    ]
    assert set(first["states"].values()) == {"succeeded"}
    assert sorted(ran(tmp_path)) == ["best 0.01", "train 0.01", "train 0.1"]
    listed = cli.states()
    assert all(listed[name]["state"] == "succeeded" for name in names)
    assert listed[names[0]]["max_attempts"] == 2  # the task's retries

    # Again with one more learning rate: only the new one trains (the report,
    # the same command as before, is done already).
    second = run_flow(cli, pipelines, "sweep", [0.1, 0.01, 0.001])
    assert second["value"] == 0.01
    assert sorted(ran(tmp_path)) == [
        "best 0.01",
        "train 0.001",
        "train 0.01",
        "train 0.1",
    ]


def test_a_driver_killed_with_sigkill_resumes_and_runs_nothing_twice(
    cli: Cli, pipelines: Path, tmp_path: Path, processes: Processes
) -> None:
    driver = processes.start(
        sys.executable,
        pipelines,
        "gated",
        "[]",
        cwd=tmp_path,
        env=cli.env,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    wait_for(lambda: "gated b" in ran(tmp_path), "the second task to run")
    os.kill(driver.pid, signal.SIGKILL)
    driver.wait()
    (tmp_path / "gate").touch()

    again = run_flow(cli, pipelines, "gated")

    assert set(again["states"].values()) == {"succeeded"}
    assert ran(tmp_path) == ["quick a", "gated b"]


@pytest.mark.parametrize("how", ["raise", "exit"])
def test_a_failed_task_fails_its_dependants_and_other_branches_go_on(
    cli: Cli, pipelines: Path, tmp_path: Path, how: str
) -> None:
    result = run_flow(cli, pipelines, "branches", how)

    states = {
        name.split(".")[1].split("-")[0]: s for name, s in result["states"].items()
    }
    assert states == {
        "fail": "failed",
        "dependant": "dependency failed",
        "quick": "succeeded",
    }
    assert "dependant" not in ran(tmp_path)
    name = next(n for n in result["states"] if ".fail-" in n)
    log = cli("logs", name).stdout
    assert (
        ("it went wrong" in log) if how == "raise" else ("dvc-task result" not in log)
    )


def test_check_raises_naming_the_failed_tasks(
    cli: Cli, pipelines: Path, tmp_path: Path
) -> None:
    program = (
        "import os, sys; sys.path.insert(0, '.')\n"
        "from pipelines import branches\n"
        "from dvc_task.flow import FlowFailed, execute\n"
        "try:\n"
        "    execute(branches('raise'), os.environ['DVC_TASK_DIR'], check=True)\n"
        "except FlowFailed as exc:\n"
        "    print(exc)\n"
    )
    done = subprocess.run(
        [sys.executable, "-c", program],
        capture_output=True,
        text=True,
        cwd=tmp_path,
        env=cli.env,
        timeout=300,
        check=True,
    )
    assert done.stdout.startswith("flow branches failed: branches.fail-")
    assert "failed; branches.dependant dependency failed" in done.stdout


def test_outputs_newer_than_inputs_make_a_task_up_to_date(
    cli: Cli, pipelines: Path, tmp_path: Path
) -> None:
    source = tmp_path / "in.txt"
    source.write_text("data")
    first = run_flow(cli, pipelines, "make_like")
    assert set(first["states"].values()) == {"succeeded"}
    assert (tmp_path / "out.txt").read_text() == "DATA"

    second = run_flow(cli, pipelines, "make_like")
    assert set(second["states"].values()) == {"skipped"}
    assert ran(tmp_path) == ["build"]

    source.write_text("new")
    os.utime(
        source, (source.stat().st_atime, (tmp_path / "out.txt").stat().st_mtime + 5)
    )
    third = run_flow(cli, pipelines, "make_like")
    assert set(third["states"].values()) == {"succeeded"}
    assert ran(tmp_path) == ["build", "build"]
    assert (tmp_path / "out.txt").read_text() == "NEW"


def test_task_classes_and_sub_flows_are_named_under_their_flow(
    cli: Cli, pipelines: Path, tmp_path: Path
) -> None:
    result = run_flow(cli, pipelines, "outer")

    assert result["value"] == 4 + 9
    names = list(result["states"])
    assert [n.split(".")[0] for n in names] == ["outer", "outer"]
    assert [n.split(".")[1].split("-")[0] for n in names] == ["inner", "inner"]
    assert [n.split(".")[2] for n in names] == ["square-2", "square-3"]
    assert sorted(ran(tmp_path)) == ["square 2", "square 3"]


def test_a_detached_flow_on_a_one_job_worker_does_not_deadlock(
    cli: Cli, pipelines: Path, tmp_path: Path
) -> None:
    cli("start", "-j", "1", "--timeout", "60")
    done = cli("flow", "run", "pipelines:sweep", "[0.1, 0.01]", cwd=tmp_path)
    assert done.stdout == "sweep\n"

    log = cli.folder / "flows" / "sweep" / "sweep.out"
    wait_for(
        lambda: log.exists() and "report: succeeded" in log.read_text(), "the flow"
    )
    assert sorted(ran(tmp_path)) == ["best 0.01", "train 0.01", "train 0.1"]


@task
def double(number: int) -> int:
    return number * 2


def test_a_task_function_stays_callable_and_bad_arguments_are_refused() -> None:
    assert double(4) == 8
    with pytest.raises(NotJSONError, match="argument 1 of double is of type object"):
        double.make_task(object())
    with pytest.raises(TypeError, match="'retires' is not a job option"):
        task(retires=2)(len)

    def local(x: int) -> int:
        return x

    with pytest.raises(ValueError, match="defined inside a function"):
        task(local)


def test_a_flow_that_yields_something_else_is_refused(tmp_path: Path) -> None:
    @flow
    def wrong() -> Any:
        yield 42

    with pytest.raises(BadStepError, match="yields 42"):
        execute(wrong(), tmp_path / "q", start_worker=False)
    with pytest.raises(ValueError, match="defined inside a function"):
        execute(wrong(), tmp_path / "q", wait=False)
    assert Dependency().tasks == ()
    assert sh(["true"]).command() == ["true"]


def test_a_flow_running_detached_is_not_started_twice(
    cli: Cli, pipelines: Path, tmp_path: Path
) -> None:
    assert cli("flow", "run", "pipelines:gated").stdout == "gated\n"
    wait_for(lambda: "gated b" in ran(tmp_path), "the flow's second task")

    again = cli("flow", "run", "pipelines:gated", check=1)
    assert "flow gated runs already" in again.stderr
    assert again.stderr.count("\n") == 1

    (tmp_path / "gate").touch()
    log = cli.folder / "flows" / "gated" / "gated.out"
    wait_for(
        lambda: log.exists() and "wait_for_gate" in log.read_text(), "the flow to end"
    )
