"""What pueue and task-spooler users reach for: wait, signals, pause, later."""

from __future__ import annotations

import sys
import time
from datetime import datetime, timedelta, timezone

import psutil

from conftest import Cli, wait_for

PY = sys.executable


def test_wait_waits_for_the_named_jobs_and_sums_them_up(cli: Cli) -> None:
    cli("run", "--no-start", "--name", "ok", "--", "true")
    cli("run", "--no-start", "--name", "bad", "--", "false")
    cli("run", "--no-start", "--name", "later", "--after", "bad", "--", "true")
    cli("start", "--timeout", "60")

    done = cli("wait", "ok", "bad", "later", check=1)
    assert done.stdout == (
        "3 jobs ended: 1 succeeded, 1 failed (bad), 1 dependency failed (later)\n"
    )
    assert cli("wait", "ok").stdout == "1 job ended: 1 succeeded\n"
    assert "no job named 'nope'" in cli("wait", "nope", check=1).stderr
    assert "name the jobs" in cli("wait", check=2).stderr


def test_wait_all_gives_up_at_its_timeout_and_says_what_holds_it(cli: Cli) -> None:
    cli("run", "--no-start", "--name", "stuck", "--held", "--", "true")
    cli("run", "--no-start", "--name", "done", "--", "true")
    cli("worker", "--timeout", "0")

    done = cli("wait", "--all", "--timeout", "0.5", check=124)
    assert "job stuck is held" in done.stderr
    assert "gave up after 0.5 s: 1 of 1 jobs have not ended" in done.stderr


SIGINT_JOB = (
    "import signal, sys, time\n"
    "def stop(*_):\n"
    "    print('got SIGINT', flush=True)\n"
    "    sys.exit(3)\n"
    "signal.signal(signal.SIGINT, stop)\n"
    "print('ready', flush=True)\n"
    "time.sleep(60)\n"
)


def test_kill_signal_sends_the_signal_named(cli: Cli) -> None:
    cli("run", "--name", "int", "--", PY, "-c", SIGINT_JOB)
    wait_for(lambda: "ready" in cli("logs", "int").stdout, "the job to be ready")

    assert cli("kill", "--signal", "int", "int").stdout == "sent SIGINT to job int\n"
    cli.wait_state("int", "killed")
    assert cli("logs", "int").stdout == "ready\ngot SIGINT\n"
    assert cli.states()["int"]["returncode"] == 3

    bad = cli("kill", "--signal", "NOPE", "int", check=2)
    assert "'NOPE' is not a signal" in bad.stderr


def _stopped(pid: int) -> bool:
    return psutil.Process(pid).status() == psutil.STATUS_STOPPED


def test_a_paused_job_is_stopped_and_its_time_limit_with_it(cli: Cli) -> None:
    # 1.5 s of sleep within a 3 s limit, paused for longer than the limit.
    cli(
        "run",
        "--name",
        "p",
        "--timeout",
        "3",
        "--",
        PY,
        "-c",
        "import time; time.sleep(1.5)",
    )
    cli.wait_state("p", "running")
    pid = cli.states()["p"]["pid"]

    assert cli("pause", "p").stdout == "paused job p\n"
    assert cli.state("p") == "paused"
    assert _stopped(pid)
    assert "not running (it is paused)" in cli("pause", "p", check=1).stderr
    time.sleep(4)  # past the time limit, paused: it must not be stopped
    assert cli.state("p") == "paused"

    assert cli("resume", "p").stdout == "resumed job p\n"
    cli.wait_state("p", "succeeded")
    assert "not paused" in cli("resume", "p", check=1).stderr


def test_a_paused_job_can_be_killed(cli: Cli) -> None:
    cli("run", "--name", "k", "--", "sleep", "60")
    cli.wait_state("k", "running")
    cli("pause", "k")

    cli("kill", "k")  # SIGTERM reaches it: it is let go on to get it

    cli.wait_state("k", "killed", timeout=30)


def test_a_job_queued_for_later_starts_no_sooner(cli: Cli) -> None:
    began = datetime.now(timezone.utc)
    cli("run", "--name", "later", "--in", "2s", "--", "true")
    row = cli.states()["later"]
    assert row["state"] == "queued"
    assert "queued until" in cli("status").stdout

    cli.wait_state("later", "succeeded")
    started = datetime.fromisoformat(cli.states()["later"]["started"])
    assert started >= began + timedelta(seconds=2)
    assert datetime.fromisoformat(row["not_before"]) <= started


def test_at_takes_a_local_time_and_refuses_what_is_not_one(cli: Cli) -> None:
    soon = (datetime.now() + timedelta(seconds=2)).isoformat(timespec="seconds")
    cli("run", "--no-start", "--name", "at", "--at", soon, "--", "true")
    not_before = datetime.fromisoformat(cli.states()["at"]["not_before"])
    assert abs(not_before - datetime.fromisoformat(soon).astimezone()) < timedelta(
        seconds=1
    )

    bad = cli("run", "--no-start", "--at", "teatime", "--", "true", check=2)
    assert "'teatime' is not a time such as 14:05" in bad.stderr
    both = cli("run", "--no-start", "--at", soon, "--in", "1m", "--", "true", check=2)
    assert "not both" in both.stderr


def test_cleanup_successful_keeps_the_failed_jobs(cli: Cli) -> None:
    cli("run", "--no-start", "--name", "ok", "--", "true")
    cli("run", "--no-start", "--name", "bad", "--", "false")
    cli("worker", "--timeout", "0")

    assert cli("cleanup", "--successful").stdout == "removed ok (succeeded)\n"
    assert list(cli.states()) == ["bad"]


def test_a_worker_holding_a_later_job_leaves_once_it_is_killed(cli: Cli) -> None:
    cli("run", "--name", "later", "--in", "1h", "--", "true")
    wait_for(cli.workers, "the worker that holds it")

    cli("kill", "later")

    # Its message is dropped: the worker is idle, and leaves (10 s idle).
    wait_for(lambda: not cli.workers(), "the worker to leave", timeout=60)
    assert cli.state("later") == "killed"
