"""Job control with real workers: retries, time limits, dependencies, slots,
order, hold and skip."""

from __future__ import annotations

import json
import os
import signal
import sys
from datetime import datetime
from pathlib import Path

import psutil
import pytest

from dvc_task.jobs import JobError, JobQueue
from dvc_task.jobs.slots import Offer

from conftest import Cli, sigkill_the_worker, wait_for

PY = sys.executable


@pytest.fixture
def two_gpus(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    """A machine with two GPUs: an ``nvidia-smi`` that lists devices 0 and 1.

    GPUs cannot be made real here; everything else (the locks, the workers,
    the jobs' environment) is. The GPU locks live in the test's folder.
    """
    bin_dir = tmp_path / "bin"
    bin_dir.mkdir()
    fake = bin_dir / "nvidia-smi"
    fake.write_text("#!/bin/sh\nprintf '0\\n1\\n'\n")
    fake.chmod(0o755)
    monkeypatch.setenv("PATH", f"{bin_dir}{os.pathsep}{os.environ['PATH']}")
    locks = tmp_path / "gpu-locks"
    monkeypatch.setenv("DVC_TASK_GPU_LOCKS", str(locks))
    return locks


def seconds(when: str | None) -> float:
    assert when is not None
    return datetime.fromisoformat(when).timestamp()


def finished(queue: JobQueue, *names: str, timeout: float = 120) -> None:
    for name in names:
        queue.wait(name, timeout=timeout)


# --- retries -------------------------------------------------------------------


def test_failed_attempts_are_retried_with_growing_delays(cli: Cli) -> None:
    cli(
        "run",
        "--name",
        "flaky",
        "--retries",
        "2",
        "--retry-delay",
        "0.5",
        "--retry-backoff",
        "2",
        "--",
        "sh",
        "-c",
        "echo try; false",
    )
    cli.wait_state("flaky", "failed")

    record = json.loads((cli.folder / "jobs" / "flaky.json").read_text())
    earlier = record["attempts"]
    assert [a["attempt"] for a in earlier] == [1, 2]
    assert all(a["state"] == "failed" and a["returncode"] == 1 for a in earlier)
    waits = [
        seconds(earlier[1]["started_at"]) - seconds(earlier[0]["finished_at"]),
        seconds(record["started_at"]) - seconds(earlier[1]["finished_at"]),
    ]
    assert 0.5 <= waits[0] < 5
    assert 1.0 <= waits[1] < 6
    row = cli.states()["flaky"]
    assert (row["attempt"], row["max_attempts"], row["returncode"]) == (3, 3, 1)
    assert "failed, attempt 3/3" in cli("status").stdout
    out = cli("logs", "flaky").stdout
    assert out == "".join(f"--- dvc-task: attempt {n}/3 ---\ntry\n" for n in (1, 2, 3))


def test_a_job_that_succeeds_on_a_retry_succeeds(
    queue: JobQueue, tmp_path: Path
) -> None:
    marker = tmp_path / "second-time"
    queue.submit(
        ["sh", "-c", f"test -e {marker} || {{ touch {marker}; exit 7; }}"],
        name="j",
        retries=3,
    )
    queue.start_workers()
    job = queue.wait("j", timeout=120)

    assert (job.state, job.attempt, job.returncode) == ("succeeded", 2, 0)


def test_retry_queues_finished_jobs_again_as_they_were(
    cli: Cli, tmp_path: Path
) -> None:
    here = tmp_path / "here"
    here.mkdir()
    script = 'echo "$FLAVOUR $(pwd)"; test -e ok'
    cli(
        "run",
        "--wait",
        "--name",
        "a",
        "--env",
        "FLAVOUR=mint",
        "--",
        "sh",
        "-c",
        script,
        check=1,
        cwd=here,
    )
    cli("run", "--wait", "--name", "b", "--", "false", check=1)
    cli("run", "--wait", "--name", "c", "--", "true")
    (here / "ok").touch()

    done = cli("retry", "a")
    assert "queued a again" in done.stdout
    cli.wait_state("a", "succeeded")
    run_2 = "--- dvc-task: run 2 ---\n"
    assert cli("logs", "a").stdout == f"mint {here}\n{run_2}mint {here}\n"

    done = cli("retry", "--failed")
    assert done.stdout.split() == ["queued", "b", "again"]
    cli.wait_state("b", "failed")
    assert cli.states()["c"]["state"] == "succeeded"


def test_retry_refuses_unknown_and_unfinished_jobs(cli: Cli) -> None:
    assert "no job named 'nope'" in cli("retry", "nope", check=1).stderr
    cli("run", "--no-start", "--name", "w", "--", "true")
    assert "only a finished job can be retried" in cli("retry", "w", check=1).stderr
    assert "--failed" in cli("retry", check=2).stderr


def test_worker_killed_mid_attempt_uses_up_that_attempt_only(
    queue: JobQueue, tmp_path: Path
) -> None:
    started = tmp_path / "started"
    queue.submit(
        ["sh", "-c", f"test -e {started} && exit 0; touch {started}; sleep 60"],
        name="j",
        retries=1,
    )
    queue.start_workers()
    wait_for(lambda: queue.job("j").state == "running", "the first attempt")
    sigkill_the_worker(queue)

    queue.start_workers()
    job = queue.wait("j", timeout=120)

    assert (job.state, job.attempt) == ("succeeded", 2)
    (first,) = json.loads((queue.backend.jobs_dir / "j.json").read_text())["attempts"]
    assert first["state"] == "lost"


# --- time limits ---------------------------------------------------------------


def test_timeout_stops_the_job_and_its_children(cli: Cli, tmp_path: Path) -> None:
    pids = tmp_path / "pids"
    script = f"sleep 60 & echo $! > {pids}; echo $$ >> {pids}; wait"
    done = cli(
        "run",
        "--wait",
        "--timeout",
        "1",
        "--name",
        "slow",
        "--",
        "sh",
        "-c",
        script,
        check=None,
    )

    assert done.returncode == 128 + signal.SIGTERM
    row = cli.states()["slow"]
    assert row["state"] == "timed out"
    assert 1 <= row["duration"] < 1 + 5  # within the grace period
    for pid in map(int, pids.read_text().split()):
        assert not psutil.pid_exists(pid) or (
            psutil.Process(pid).status() == psutil.STATUS_ZOMBIE
        )


def test_timeout_kills_a_job_that_ignores_sigterm(queue: JobQueue) -> None:
    queue.submit(
        ["sh", "-c", "trap '' TERM; sleep 60 & wait; sleep 60"], name="j", timeout=0.5
    )
    queue.start_workers()
    job = queue.wait("j", timeout=120)

    assert (job.state, job.returncode) == ("timed out", -signal.SIGKILL)
    assert job.duration is not None
    assert job.duration < 0.5 + 5 + 3


def test_timed_out_attempts_are_retried(queue: JobQueue) -> None:
    queue.submit(["sleep", "60"], name="j", timeout=0.3, retries=1)
    queue.start_workers()
    job = queue.wait("j", timeout=120)

    assert (job.state, job.attempt) == ("timed out", 2)


# --- dependencies --------------------------------------------------------------


def test_a_diamond_where_one_branch_fails(queue: JobQueue, tmp_path: Path) -> None:
    ran = tmp_path / "ran"
    ran.mkdir()

    def job(name: str, code: int, after: tuple[str, ...] = ()) -> None:
        queue.submit(
            ["sh", "-c", f"touch {ran}/{name}; exit {code}"], name=name, after=after
        )

    job("top", 0)
    job("left", 1, ("top",))
    job("right", 0, ("top",))
    job("bottom", 0, ("left", "right"))
    job("after-right", 0, ("right",))
    job("after-bottom", 0, ("bottom",))
    assert queue.job("bottom").state == "waiting"
    queue.start_workers()
    finished(queue, "top", "left", "right", "bottom", "after-right", "after-bottom")

    states = {job.name: job.state for job in queue.jobs()}
    assert states == {
        "top": "succeeded",
        "left": "failed",
        "right": "succeeded",
        "bottom": "dependency failed",
        "after-right": "succeeded",
        "after-bottom": "dependency failed",
    }
    assert sorted(os.listdir(ran)) == ["after-right", "left", "right", "top"]
    assert "'left'" in (queue.job("bottom").error or "")


def test_dependants_start_right_after_their_dependency(queue: JobQueue) -> None:
    queue.submit(["sleep", "0.3"], name="first")
    for i in range(5):
        queue.submit(
            ["true"], name=f"then{i}", after=[f"then{i - 1}" if i else "first"]
        )
    queue.start_workers()
    finished(queue, *(f"then{i}" for i in range(5)))

    chain = ["first", *(f"then{i}" for i in range(5))]
    jobs = {job.name: job for job in queue.jobs()}
    gaps = [
        seconds(jobs[b].started_at) - seconds(jobs[a].finished_at)
        for a, b in zip(chain, chain[1:])
    ]
    assert all(job.state == "succeeded" for job in jobs.values())
    assert sorted(gaps)[len(gaps) // 2] < 0.5  # a poll of a second would miss


def test_unknown_dependencies_and_cycles_are_refused(cli: Cli) -> None:
    done = cli("run", "--after", "ghost", "--", "true", check=1)
    assert "no job named 'ghost'" in done.stderr
    cli("run", "--wait", "--name", "a", "--", "true")
    cli("run", "--name", "b", "--after", "a", "--", "true")
    cli.wait_state("b", "succeeded")

    done = cli("run", "--replace", "--name", "a", "--after", "b", "--", "true", check=1)
    assert "a -> b -> a" in done.stderr
    assert cli.states()["a"]["state"] == "succeeded"  # nothing replaced
    done = cli("run", "--name", "self", "--after", "self", "--", "true", check=1)
    assert "wait for itself" in done.stderr
    assert set(cli.states()) == {"a", "b"}


def test_a_dependency_killed_with_its_worker_fails_its_dependants(
    queue: JobQueue, tmp_path: Path
) -> None:
    queue.submit(["sleep", "60"], name="long")
    queue.submit(["true"], name="next", after=["long"])
    queue.submit(["true"], name="other")
    queue.start_workers(count=2)
    wait_for(lambda: queue.job("long").state == "running", "the long job")
    runner = [w for w in queue.workers() if "long" in w.running]
    assert len(runner) == 1
    assert runner[0].pid is not None
    assert runner[0].pid > 1
    os.kill(runner[0].pid, signal.SIGKILL)

    queue.start_workers()  # stands in for the next 'dvc-task run'
    finished(queue, "long", "next", "other")

    assert queue.job("long").state == "lost"
    assert queue.job("next").state == "dependency failed"
    assert queue.job("other").state == "succeeded"


def test_a_waiting_job_holds_no_worker(queue: JobQueue) -> None:
    queue.submit(["sleep", "0.5"], name="first")
    queue.submit(["true"], name="second", after=["first"])
    queue.submit(["true"], name="free")
    queue.work(timeout=0.2, concurrency=1)  # in this process, until idle

    assert [job.state for job in queue.jobs()] == ["succeeded"] * 3


# --- order, priority, hold -----------------------------------------------------


def test_jobs_start_in_submission_order_and_by_priority(queue: JobQueue) -> None:
    count = 1000
    priorities = [(i * 7) % 3 for i in range(count)]  # 0, 1, 2 mixed
    for i, priority in enumerate(priorities):
        queue.submit(["true"], name=f"j{i:04d}", priority=priority)
    queue.work(timeout=0.2, concurrency=1)

    jobs = queue.jobs()
    assert all(job.state == "succeeded" for job in jobs)
    started = [job.name for job in sorted(jobs, key=lambda j: seconds(j.started_at))]
    expected = sorted(
        (f"j{i:04d}" for i in range(count)), key=lambda n: -priorities[int(n[1:])]
    )
    assert started == expected


def test_hold_and_release(cli: Cli) -> None:
    cli("run", "--no-start", "--name", "a", "--", "true")
    cli("run", "--no-start", "--held", "--name", "b", "--", "true")
    assert cli("hold", "a").stdout.strip() == "held a"
    assert (cli.state("a"), cli.state("b")) == ("held", "held")
    cli("start", "--timeout", "0.5")
    wait_for(lambda: not cli.workers(), "the idle worker to leave")
    assert (cli.state("a"), cli.state("b")) == ("held", "held")

    cli("release", "a", "b")
    cli.wait_state("a", "succeeded")
    cli.wait_state("b", "succeeded")
    assert "is not held" in cli("release", "a", check=1).stderr
    assert "only a job that has not started" in cli("hold", "a", check=1).stderr


def test_a_held_dependency_keeps_its_dependants_waiting(queue: JobQueue) -> None:
    queue.submit(["true"], name="a", held=True)
    queue.submit(["true"], name="b", after=["a"])
    assert queue.job("b").state == "waiting"
    queue.release("a")
    queue.start_workers()
    finished(queue, "a", "b")
    assert queue.job("b").state == "succeeded"


# --- skip when done --------------------------------------------------------------


def test_a_job_whose_outputs_exist_is_skipped_and_counts_as_success(
    queue: JobQueue, tmp_path: Path
) -> None:
    (tmp_path / "model.pkl").touch()
    queue.submit(
        ["sh", "-c", "echo ran"], name="train", cwd=tmp_path, creates=["model.pkl"]
    )
    queue.submit(["true"], name="eval", after=["train"])
    queue.submit(["touch", "new.txt"], name="make", cwd=tmp_path, creates=["new.txt"])
    queue.start_workers()
    finished(queue, "train", "eval", "make")

    assert queue.job("train").state == "skipped"
    assert queue.read_output("train") == b""
    assert queue.job("eval").state == "succeeded"
    assert queue.job("make").state == "succeeded"


# --- GPU and resource slots ------------------------------------------------------

GPU_JOB = (
    "import os, time, json;"
    "start = time.time(); time.sleep(0.6);"
    "print(json.dumps([os.environ['CUDA_VISIBLE_DEVICES'],"
    " os.environ['DVC_TASK_GPUS'], start, time.time()]))"
)


def gpu_spans(queue: JobQueue, names: list[str]) -> list[tuple[str, float, float]]:
    spans = []
    for name in names:
        visible, ours, start, end = json.loads(queue.read_output(name))
        assert visible == ours
        assert visible in ("0", "1")
        spans.append((visible, start, end))
    return spans


def assert_never_shared(spans: list[tuple[str, float, float]]) -> None:
    for i, (gpu, start, end) in enumerate(spans):
        for other_gpu, other_start, other_end in spans[i + 1 :]:
            if gpu == other_gpu:
                assert end <= other_start or other_end <= start
    most = max(sum(1 for _, s, e in spans if s <= t < e) for _, t, _ in spans)
    assert most <= 2


@pytest.mark.usefixtures("two_gpus")
def test_gpu_jobs_each_get_one_gpu_of_their_own(queue: JobQueue) -> None:
    names = [f"g{i}" for i in range(6)]
    for name in names:
        queue.submit([PY, "-c", GPU_JOB], name=name, gpus=1)
    queue.submit(["true"], name="cpu")
    queue.start_workers(concurrency=6, offer=Offer(["0", "1"], {}))
    finished(queue, *names, "cpu")

    assert all(queue.job(name).gpus in (("0",), ("1",)) for name in names)
    spans = gpu_spans(queue, names)
    assert_never_shared(spans)
    # The CPU job did not wait behind the GPU jobs for a GPU to be free.
    assert seconds(queue.job("cpu").started_at) < min(end for _, _, end in spans)


@pytest.mark.usefixtures("two_gpus")
def test_two_workers_never_share_a_gpu(queue: JobQueue) -> None:
    names = [f"g{i}" for i in range(6)]
    for name in names:
        queue.submit([PY, "-c", GPU_JOB], name=name, gpus=1)
    queue.start_workers(count=2, concurrency=3)  # each: every GPU nvidia-smi lists
    finished(queue, *names)

    assert_never_shared(gpu_spans(queue, names))


@pytest.mark.usefixtures("two_gpus")
@pytest.mark.parametrize("patience", [0.0, 600.0])
def test_a_job_waiting_for_slots_is_overtaken_only_until_its_patience_ends(
    queue: JobQueue, patience: float, tmp_path: Path
) -> None:
    # "first" holds one GPU until the gate opens, so "big" (two GPUs) waits.
    gate = tmp_path / "gate"
    held = ["sh", "-c", f"while [ ! -e {gate} ]; do sleep 0.01; done"]
    sleeper = [PY, "-c", "import time; time.sleep(0.8)"]
    queue.submit(held, name="first", gpus=1)
    queue.start_workers(concurrency=3, offer=Offer(["0", "1"], {}, patience))
    wait_for(lambda: queue.job("first").state == "running", "the first GPU job")
    queue.submit(["true"], name="big", gpus=2)
    wait_for(lambda: queue.job("big").state == "waiting", "the 2-GPU job to wait")
    smalls = [f"small{i}" for i in range(3)]
    for name in smalls:
        queue.submit(sleeper, name=name, gpus=1)
    if patience:
        wait_for(
            lambda: any(queue.job(n).state == "running" for n in smalls),
            "a small job on the free GPU",
        )
    else:
        wait_for(
            lambda: all(queue.job(n).state == "waiting" for n in smalls),
            "the small jobs to wait behind the big one",
        )
    gate.touch()
    finished(queue, "first", "big", *smalls)

    big = seconds(queue.job("big").started_at)
    first_small = min(seconds(queue.job(name).started_at) for name in smalls)
    if patience:
        assert first_small < big  # a free GPU was used meanwhile
    else:
        assert big < first_small  # none went before the job that waited


@pytest.mark.usefixtures("two_gpus")
def test_more_gpus_than_the_machine_has_are_refused(cli: Cli) -> None:
    done = cli("run", "--gpus", "3", "--", "true", check=1)
    assert "needs 3 GPU(s) but no live worker offers that many" in done.stderr
    assert "this machine has 2" in done.stderr
    assert cli("status", "--json").stdout.strip() == "[]"


def test_resources_limit_how_many_jobs_run_at_once(
    queue: JobQueue, tmp_path: Path
) -> None:
    job = (
        "import time, json; s = time.time(); time.sleep(0.4);"
        "print(json.dumps([s, time.time()]))"
    )
    names = [f"m{i}" for i in range(4)]
    for name in names:
        queue.submit([PY, "-c", job], name=name, resources={"mem": 32})
    queue.start_workers(concurrency=4, offer=Offer([], {"mem": 64}))
    finished(queue, *names)

    spans = [json.loads(queue.read_output(name)) for name in names]
    most = max(sum(1 for s, e in spans if s <= t < e) for t, _ in spans)
    assert most <= 2
    assert all(queue.job(name).state == "succeeded" for name in names)


def test_bad_job_options_are_refused_and_queue_nothing(queue: JobQueue) -> None:
    for options in (
        {"retries": -1},
        {"timeout": 0},
        {"retry_backoff": 0.5},
        {"after": "a"},
        {"resources": {"mem": -1}},
        {"resources": {"../x": 1}},
        {"priority": 1.5},
    ):
        with pytest.raises(ValueError):  # noqa: PT011 - each names its option
            queue.submit(["true"], **options)  # type: ignore[arg-type]
    with pytest.raises(JobError, match="no job named 'missing'"):
        queue.submit(["true"], after=["missing"])
    assert queue.jobs() == []


def test_status_shows_a_failed_dependency_before_any_worker_records_it(
    queue: JobQueue,
) -> None:
    # A worker that recorded a failure and died before it promoted the jobs
    # waiting for it: its record is written as that worker wrote it.
    queue.submit(["false"], name="dep", held=True)
    queue.submit(["true"], name="waiter", after=["dep"])
    queue.submit(["true"], name="then", after=["waiter"])
    record = json.loads((queue.backend.jobs_dir / "dep.json").read_text())
    record.update(phase="failed", returncode=1)
    (queue.backend.jobs_dir / "dep.json").write_text(json.dumps(record))

    assert queue.job("waiter").state == "dependency failed"
    assert [job.state for job in queue.jobs()] == ["failed"] + ["dependency failed"] * 2
    assert "'dep'" in (queue.job("waiter").error or "")


def test_run_wait_says_why_a_job_never_ran(cli: Cli, tmp_path: Path) -> None:
    cli("run", "--name", "f", "--", "false")
    done = cli("run", "--wait", "--after", "f", "--", "echo", "never", check=1)
    assert "dependency failed: job 'f' it waits for is failed" in done.stderr
    assert done.stdout == ""

    done = cli("run", "--wait", "--creates", str(tmp_path), "--", "echo", "never")
    assert "skipped" in done.stderr  # and exit 0: skipped counts as success
    assert done.stdout == ""
