"""DVC's experiment queue on our package, driven through DVC's own CLI.

Runs where ``dvc`` is installed beside this package (``nox -s dvc``);
skipped elsewhere.
"""

from __future__ import annotations

import importlib.util
import json
import os
import re
import shutil
import signal
import stat
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path
from typing import Callable

import pytest

from dvc_task.proc import ProcessInfo

from conftest import wait_for

#: DVC installed beside this package (not some other dvc on the PATH).
DVC = (
    Path(sys.executable).parent / "dvc"
    if importlib.util.find_spec("dvc") is not None
    else None
)
pytestmark = pytest.mark.skipif(
    DVC is None or shutil.which("git") is None,
    reason="needs dvc installed beside dvc-task (nox -s dvc) and git",
)

TRAIN = """\
import json, time
params = dict(line.split(": ") for line in open("params.yaml").read().splitlines())
print("training with", params["x"], flush=True)
time.sleep(float(params["sleep"]))
json.dump({"score": int(params["x"]) * 2}, open("metrics.json", "w"))
"""
STAGE = """\
stages:
  train:
    cmd: python train.py
    deps: [train.py]
    params: [x, sleep]
    metrics:
      - metrics.json:
          cache: false
"""


#: States an experiment does not leave by itself.
FINAL = ("Success", "Failed")


class Repo:
    def __init__(self, path: Path) -> None:
        self.path = path
        self.env = {
            **os.environ,
            "PATH": os.pathsep.join(
                [str(Path(sys.executable).parent), os.environ.get("PATH", "")]
            ),
        }

    def run(self, *args: str, check: bool = True) -> subprocess.CompletedProcess[str]:
        done = subprocess.run(
            list(args),
            cwd=self.path,
            env=self.env,
            capture_output=True,
            text=True,
            timeout=600,
            check=False,
        )
        if check:
            assert done.returncode == 0, f"{args}: {done.stdout}{done.stderr}"
        return done

    def dvc(self, *args: str, check: bool = True) -> subprocess.CompletedProcess[str]:
        return self.run(str(DVC), *args, check=check)

    def states(self) -> dict[str, str]:
        out = self.dvc("queue", "status").stdout
        states = {}
        for line in out.splitlines():
            parts = line.split()
            if len(parts) >= 4 and re.fullmatch(r"[0-9a-f]{7}", parts[0]):
                states[parts[1]] = parts[-1]
        return states

    def wait_state(self, name: str, state: str) -> None:
        def reached() -> bool:
            now = self.states().get(name)
            if now in FINAL and now != state:
                pytest.fail(f"experiment {name} is {now}, not {state}")
            return now == state

        wait_for(reached, f"experiment {name} to be {state}", timeout=300, interval=0.5)

    def settled(self) -> bool:
        return not any(s in ("Queued", "Running") for s in self.states().values())

    def workers(self) -> list[ProcessInfo]:
        folder = self.path / ".dvc" / "tmp" / "exps" / "celery"
        return [
            ProcessInfo.load(p)
            for p in folder.glob("dvc-exp-worker-*.json")
            if not p.name.endswith(".meta.json")
        ]

    def queue(self, name: str, **params: object) -> None:
        sets = [arg for k, v in params.items() for arg in ("-S", f"{k}={v}")]
        self.dvc("exp", "run", "--queue", "-n", name, *sets)

    def shown(self) -> dict[str, int]:
        data = json.loads(self.dvc("exp", "show", "--json").stdout)
        scores = {}
        for baseline in data:
            for exp in baseline.get("experiments") or []:
                for rev in exp.get("revs", []):
                    metrics = rev.get("data", {}).get("metrics", {})
                    score = metrics.get("metrics.json", {}).get("data", {}).get("score")
                    if rev.get("name") and score is not None:
                        scores[rev["name"]] = score
        return scores


@pytest.fixture
def repo(tmp_path: Path) -> Iterator[Repo]:
    repo = Repo(tmp_path / "repo")
    repo.path.mkdir()
    (repo.path / "train.py").write_text(TRAIN)
    (repo.path / "params.yaml").write_text("x: 1\nsleep: 0\n")
    (repo.path / "dvc.yaml").write_text(STAGE)
    repo.run("git", "init", "-q")
    repo.run("git", "config", "user.email", "test@example.com")
    repo.run("git", "config", "user.name", "test")
    repo.dvc("init", "-q")
    repo.run("git", "add", "-A")
    repo.run("git", "commit", "-qm", "project")
    repo.dvc("repro")
    repo.run("git", "add", "-A")
    repo.run("git", "commit", "-qm", "baseline")
    try:
        yield repo
    finally:
        for info in repo.workers():
            for pid in (info.pid, info.runner_pid):
                if pid:
                    try:
                        os.killpg(pid, signal.SIGKILL)
                    except ProcessLookupError:
                        pass


def test_queued_experiments_run_and_report_their_results(repo: Repo) -> None:
    for x in (2, 3, 4):
        repo.queue(f"e{x}", x=x)

    repo.dvc("queue", "start")
    wait_for(repo.settled, "the queue to finish", timeout=300, interval=0.5)

    assert repo.states() == {"e2": "Success", "e3": "Success", "e4": "Success"}
    assert {k: v for k, v in repo.shown().items() if k.startswith("e")} == {
        "e2": 4,
        "e3": 6,
        "e4": 8,
    }
    assert "training with 3" in repo.dvc("queue", "logs", "e3").stdout


def test_long_experiment_can_be_killed(repo: Repo) -> None:
    repo.queue("long", sleep=300)
    repo.dvc("queue", "start")
    repo.wait_state("long", "Running")

    repo.dvc("queue", "kill", "long")

    repo.wait_state("long", "Failed")


def test_logs_follow_a_running_experiment_to_its_end(repo: Repo) -> None:
    repo.queue("followed", x=13, sleep=3)
    repo.dvc("queue", "start")
    repo.wait_state("followed", "Running")

    followed = repo.dvc("queue", "logs", "--follow", "followed")

    assert "training with 13" in followed.stdout
    repo.wait_state("followed", "Success")


def test_remove_all_and_stop(repo: Repo) -> None:
    repo.queue("a", x=5)
    repo.queue("b", x=6)

    repo.dvc("queue", "remove", "--all")

    assert repo.states() == {}
    repo.dvc("queue", "stop")


def test_run_all_runs_the_queue_in_the_foreground(repo: Repo) -> None:
    repo.queue("f1", x=7)
    repo.queue("f2", x=8)

    repo.dvc("exp", "run", "--run-all")

    assert repo.states() == {"f1": "Success", "f2": "Success"}
    assert {k: v for k, v in repo.shown().items() if k.startswith("f")} == {
        "f1": 14,
        "f2": 16,
    }


def test_killed_worker_then_start_finishes_the_rest(repo: Repo) -> None:
    repo.queue("slow", x=9, sleep=20)
    repo.queue("next", x=10)
    repo.dvc("queue", "start")
    repo.wait_state("slow", "Running")

    for info in repo.workers():
        os.kill(info.pid, signal.SIGKILL)

    assert repo.states()["slow"] == "Queued"  # 0.40 shows it Running for ever
    repo.dvc("queue", "start")
    wait_for(repo.settled, "the queue to finish", timeout=300, interval=0.5)
    assert repo.states()["next"] == "Success"
    assert repo.states()["slow"] in ("Success", "Failed")
    assert repo.shown().get("next") == 20


def test_queue_runs_for_a_user_whose_umask_makes_group_writable_folders(
    repo: Repo, umask: Callable[[int], int]
) -> None:
    # Per-user groups come with umask 002: DVC's workspace run then makes
    # .dvc/tmp/exps/run group-writable, and the queue must still work.
    umask(0o002)
    repo.dvc("exp", "run", "-n", "here", "-S", "x=11")
    repo.queue("queued", x=12)

    repo.dvc("queue", "start")

    repo.wait_state("queued", "Success")
    assert repo.shown()["queued"] == 24
    run = repo.path / ".dvc" / "tmp" / "exps" / "run"
    assert stat.S_IMODE(run.stat().st_mode) == 0o700
