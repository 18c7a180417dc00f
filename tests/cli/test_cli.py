"""The dvc-task command line, run as a user would: the console script."""

from __future__ import annotations

import json
import os
import pty
import signal
import subprocess
import sys
import time
from pathlib import Path

import psutil
import pytest

from dvc_task.jobs import JobQueue

from conftest import SCRIPT, Cli, JobsLock, Processes, wait_for


def test_run_wait_streams_output_and_exits_with_the_jobs_code(cli: Cli) -> None:
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

    assert done.stdout == "hello\noops\n"
    assert "hello" in done.stderr
    row = cli.states()["hello"]
    assert row["state"] == "failed"
    assert row["returncode"] == 3
    assert row["duration"] is not None


def test_run_prints_the_name_and_the_job_is_listed_at_once(cli: Cli) -> None:
    name = cli("run", "--no-start", "--", "echo", "later").stdout.strip()

    assert cli.state(name) == "queued"
    assert name in cli("status").stdout


def test_jobs_run_in_the_callers_directory_and_environment(
    cli: Cli, tmp_path: Path
) -> None:
    sub = tmp_path / "x" / "sub"
    sub.mkdir(parents=True)
    show = ["--", "sh", "-c", "echo $FOO; pwd"]

    first = cli("run", "--wait", *show, cwd=sub, env={"FOO": "first"})
    # The worker that ran the first job is still alive for the second.
    assert cli.workers()
    second = cli("run", "--wait", *show, cwd=tmp_path / "x", env={"FOO": "second"})

    assert first.stdout.split() == ["first", str(sub)]
    assert second.stdout.split() == ["second", str(tmp_path / "x")]


def test_cwd_and_env_options_override_the_callers(cli: Cli, tmp_path: Path) -> None:
    other = tmp_path / "other"
    other.mkdir()

    done = cli(
        "run",
        "--wait",
        "--cwd",
        str(other),
        "--env",
        "FOO=a=b",
        "--env",
        "BAR=",
        "--",
        "sh",
        "-c",
        'echo "$FOO|$BAR|${BAZ-unset}"; pwd',
        env={"FOO": "caller", "BAZ": "kept"},
    )

    assert done.stdout.splitlines() == ["a=b||kept", str(other)]
    bad = cli("run", "--env", "NOEQUALS", "--", "true", check=2)
    assert "KEY=VALUE" in bad.stderr


def test_a_command_that_does_not_exist_fails_to_start_and_can_be_removed(
    cli: Cli,
) -> None:
    done = cli("run", "--wait", "--name", "j", "--", "/nonexistent/cmd", check=127)

    assert "/nonexistent/cmd" in done.stdout
    row = cli.states()["j"]
    assert row["state"] == "failed to start"
    assert row["returncode"] == 127
    assert "No such file" in cli("logs", "j").stdout
    status = cli("status")
    assert "Traceback" not in status.stderr
    assert "WARNING" not in status.stderr
    cli("rm", "j")
    assert "j" not in cli.states()
    assert not (cli.folder / "procs" / "j").exists()


@pytest.mark.parametrize(
    ("name", "why"),
    [
        ("x" * 300, "at most 200 bytes"),
        ("é" * 101, "at most 200 bytes"),
        ("a\nb", "control characters"),
        ("../x", "'..'"),
        ("a/b", "'/'"),
    ],
)
def test_a_bad_name_is_refused_before_anything_is_queued(
    cli: Cli, name: str, why: str
) -> None:
    done = cli("run", "--name", name, "--", "true", check=1)

    assert why in done.stderr
    assert len(done.stderr.strip().splitlines()) == 1
    assert not cli.folder.exists()


def test_a_name_of_200_bytes_runs(cli: Cli) -> None:
    name = "n" * 200
    cli("run", "--wait", "--name", name, "--", "true")
    assert cli.state(name) == "succeeded"


def test_a_name_in_use_is_refused_and_replace_runs_it_afresh(cli: Cli) -> None:
    cli("run", "--name", "dup", "--", "sh", "-c", "echo first; sleep 30")
    cli.wait_state("dup", "running")

    busy = cli("run", "--name", "dup", "--", "echo", "second", check=1)
    assert "running" in busy.stderr
    cli("kill", "dup")
    cli.wait_state("dup", "killed")
    finished = cli("run", "--name", "dup", "--", "echo", "second", check=1)
    assert "--replace" in finished.stderr

    cli("run", "--wait", "--replace", "--name", "dup", "--", "echo", "second")

    assert cli("logs", "dup").stdout == "second\n"
    assert cli.state("dup") == "succeeded"


def test_two_queued_jobs_of_one_name_cannot_exist(cli: Cli) -> None:
    cli("run", "--no-start", "--name", "q", "--", "true")
    done = cli("run", "--no-start", "--name", "q", "--", "true", check=1)
    assert "queued" in done.stderr
    assert list(cli.states()) == ["q"]


def test_options_of_run_come_before_the_command(cli: Cli) -> None:
    typo = cli("run", "--wiat", "--", "echo", check=2)
    assert "--wiat" in typo.stderr
    assert not cli.folder.exists()

    done = cli("run", "--wait", "--name", "a", "echo", "--name", "b")

    assert done.stdout == "--name b\n"
    assert list(cli.states()) == ["a"]


def test_kill_of_a_queued_job_means_it_never_runs(cli: Cli, tmp_path: Path) -> None:
    marker = tmp_path / "ran"
    cli("run", "--no-start", "--name", "q1", "--", "touch", str(marker))

    assert "will not run" in cli("kill", "q1").stdout
    assert cli.state("q1") == "killed"
    cli("worker", "--timeout", "0.5")

    assert not marker.exists()
    assert cli.state("q1") == "killed"
    cli("rm", "q1")
    assert cli.states() == {}


def _worker_pid(cli: Cli) -> int:
    workers = wait_for(cli.workers, "a worker")
    pid: int = workers[0]["pid"]
    return pid


def test_kill_of_a_starting_job_means_it_never_runs(
    cli: Cli, tmp_path: Path, processes: Processes
) -> None:
    marker = tmp_path / "ran"
    cli("run", "--no-start", "--name", "s", "--", "touch", str(marker))
    lock = JobsLock(cli.folder)
    try:
        cli("start")
        cli.wait_state("s", "starting")
        # The worker has claimed the job and waits to mark it started.
        kill = processes.start(SCRIPT, "kill", "s", env=cli.env, stdout=subprocess.PIPE)
        wait_for(
            (cli.folder / "jobs" / "s.kill").exists, "the kill request", timeout=60
        )
    finally:
        lock.release()

    out, _ = kill.communicate(timeout=120)
    assert b"will not run" in out
    wait_for(lambda: not cli.workers(), "the worker to exit", timeout=120)
    assert cli.state("s") == "killed"
    assert not marker.exists()


def test_worker_killed_between_claim_and_start_leaves_the_job_queued(
    cli: Cli, tmp_path: Path
) -> None:
    marker = tmp_path / "ran"
    cli("run", "--no-start", "--name", "c", "--", "sh", "-c", f"echo once >> {marker}")
    lock = JobsLock(cli.folder)
    try:
        cli("start")
        cli.wait_state("c", "starting")
        os.kill(_worker_pid(cli), signal.SIGKILL)
        wait_for(lambda: not cli.workers(), "the killed worker to be gone")
    finally:
        lock.release()

    assert cli.state("c") == "queued"
    cli("worker", "--timeout", "0.5")
    assert cli.state("c") == "succeeded"
    assert marker.read_text() == "once\n"


def test_a_job_whose_worker_died_mid_run_is_lost_and_not_run_again(
    cli: Cli, tmp_path: Path
) -> None:
    marker = tmp_path / "ran"
    cli("run", "--name", "m", "--", "sh", "-c", f"echo run >> {marker}; exec sleep 60")
    cli.wait_state("m", "running")
    pid = cli.states()["m"]["pid"]
    os.kill(_worker_pid(cli), signal.SIGKILL)

    cli.wait_state("m", "lost")
    # Its command (with what it started) ends with its worker, at once.
    wait_for(lambda: _group_gone(pid), "the command to end", timeout=10)
    # The next worker gets the message back and does not run the job again.
    cli("worker", "--timeout", "0.5")

    assert cli.state("m") == "lost"
    assert marker.read_text() == "run\n"
    assert _group_gone(pid)


STUBBORN_TREE = """
import os, signal, subprocess, sys, time
child = subprocess.Popen(
    [sys.executable, "-c",
     "import signal, time; signal.signal(signal.SIGTERM, signal.SIG_IGN); "
     "print('ready', flush=True); time.sleep(600)"],
    start_new_session=True, stdout=subprocess.PIPE,
)
child.stdout.readline()
with open(sys.argv[1], "w") as out:
    out.write(f"{os.getpid()} {child.pid}")
time.sleep(600)
"""


def test_a_killed_workers_commands_end_with_it_children_included(
    cli: Cli, tmp_path: Path
) -> None:
    pids = tmp_path / "pids"
    cli("run", "--name", "tree", "--", sys.executable, "-c", STUBBORN_TREE, str(pids))
    found = wait_for(lambda: pids.exists() and pids.read_text(), "the job's processes")
    procs = [psutil.Process(int(pid)) for pid in found.split()]

    os.kill(_worker_pid(cli), signal.SIGKILL)

    # The one that ignores SIGTERM, in a session of its own, too.
    _, alive = psutil.wait_procs(procs, timeout=15)
    assert not [p for p in alive if p.status() != psutil.STATUS_ZOMBIE]
    assert cli.state("tree") == "lost"


def test_run_wait_waits_behind_a_long_job(cli: Cli, full: bool) -> None:
    # The old limit was 120 s; the full suite waits behind a 3-minute job.
    seconds = 180 if full else 4
    cli("run", "--name", "long", "--", "sleep", str(seconds))
    cli.wait_state("long", "running")

    done = cli("run", "--wait", "--name", "next", "--", "echo", "after", timeout=600)

    assert done.stdout == "after\n"
    assert cli.state("long") == "succeeded"


def test_run_wait_without_a_worker_and_no_start_says_what_to_do(cli: Cli) -> None:
    done = cli("run", "--wait", "--no-start", "--", "true", check=1)
    assert "dvc-task start" in done.stderr
    assert cli.state("1") == "queued"


def test_ctrl_c_detaches_run_wait_and_the_job_goes_on(
    cli: Cli, processes: Processes, tmp_path: Path
) -> None:
    proc = processes.start(
        SCRIPT,
        "run",
        "--wait",
        "--name",
        "bg",
        "--",
        "sh",
        "-c",
        # Held until the test says: a slow worker start cannot let it end
        # before the Ctrl-C.
        "echo started; while [ ! -e gate ]; do sleep 0.02; done; echo finished",
        env=cli.env,
        cwd=tmp_path,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        # As from a terminal, also when the tests run in a background job
        # (whose commands inherit SIGINT ignored).
        preexec_fn=lambda: signal.signal(signal.SIGINT, signal.SIG_DFL),
    )
    assert proc.stdout is not None
    assert proc.stdout.readline() == b"started\n"
    proc.send_signal(signal.SIGINT)

    assert proc.wait(timeout=60) == 130
    assert proc.stderr is not None
    assert b"dvc-task logs -f bg" in proc.stderr.read()
    assert cli.state("bg") == "running"  # it goes on without us
    (tmp_path / "gate").touch()
    cli.wait_state("bg", "succeeded")
    assert cli("logs", "bg").stdout == "started\nfinished\n"


def test_status_into_a_pipe_closed_early_ends_quietly(cli: Cli) -> None:
    queue = JobQueue(cli.folder)
    for number in range(300):  # a listing longer than a pipe holds
        queue.submit(["echo", "x" * 300], name=f"long-{number}")
    proc = subprocess.Popen(
        [str(SCRIPT), "status"],
        env=cli.env,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
    )
    assert proc.stdout is not None
    assert proc.stderr is not None
    assert proc.stdout.readline().startswith(b"queue: ")
    assert proc.stdout.readline().split()[0] == b"NAME"
    proc.stdout.close()  # as `dvc-task status | head -1` does
    assert proc.wait(timeout=60) == 0
    assert proc.stderr.read() == b""
    proc.stderr.close()


def test_logs_pass_bytes_through_unchanged(cli: Cli, tmp_path: Path) -> None:
    script = tmp_path / "bar.py"
    script.write_bytes(
        b"import sys\n"
        b"out = sys.stdout.buffer\n"
        b"out.write(b'10%\\r50%\\r100%\\n\\xff\\xfe not utf-8\\r\\n')\n"
        b"out.write(b'no newline at the end')\n"
    )
    expected = b"10%\r50%\r100%\n\xff\xfe not utf-8\r\nno newline at the end"
    cli("run", "--name", "bar", "--", sys.executable, str(script))
    cli.wait_state("bar", "succeeded")

    for args in (["logs", "bar"], ["logs", "-f", "bar"]):
        done = subprocess.run(
            [str(SCRIPT), *args], capture_output=True, env=cli.env, check=True
        )
        assert done.stdout == expected
    tail = subprocess.run(
        [str(SCRIPT), "logs", "--tail", "1", "bar"],
        capture_output=True,
        env=cli.env,
        check=True,
    )
    assert tail.stdout == b"no newline at the end"


def test_logs_tail_gives_the_last_lines(cli: Cli) -> None:
    cli("run", "--wait", "--name", "t", "--", "seq", "1", "10")

    assert cli("logs", "--tail", "3", "t").stdout == "8\n9\n10\n"
    assert cli("logs", "-n", "0", "t").stdout == ""
    assert cli("logs", "--tail", "99", "t").stdout.split() == [
        str(i) for i in range(1, 11)
    ]
    assert cli("logs", "-f", "--tail", "2", "t").stdout == "9\n10\n"


def test_logs_into_a_closed_pipe_ends_quietly(cli: Cli) -> None:
    cli("run", "--name", "y", "--", "sh", "-c", "seq 1 200000; sleep 30")
    cli.wait_state("y", "running")

    for follow in ([], ["-f"]):
        done = subprocess.run(
            f"{SCRIPT} logs {' '.join(follow)} y | head -1",
            shell=True,
            capture_output=True,
            text=True,
            env=cli.env,
            timeout=120,
            check=False,
        )
        assert done.stdout == "1\n"
        assert done.stderr == ""
        assert done.returncode == 0


def test_logs_follow_of_a_queued_job_waits_for_it(
    cli: Cli, processes: Processes, tmp_path: Path
) -> None:
    cli("run", "--no-start", "--name", "w", "--", "echo", "ran")
    follow = processes.start(
        SCRIPT,
        "logs",
        "-f",
        "w",
        env=cli.env,
        cwd=tmp_path,
        stdout=subprocess.PIPE,
    )
    cli("worker", "--timeout", "0.5")

    out, _ = follow.communicate(timeout=120)
    assert out == b"ran\n"
    assert follow.returncode == 0


def test_logs_follow_keeps_up_with_50_mb_of_short_lines(
    cli: Cli, tmp_path: Path
) -> None:
    cli("run", "--name", "big", "--", "sh", "-c", "yes | head -c 50000000")
    cli.wait_state("big", "running", "succeeded")

    started = time.monotonic()
    follow = subprocess.run(
        [str(SCRIPT), "logs", "-f", "big"],
        stdout=subprocess.PIPE,
        env=cli.env,
        check=True,
        timeout=300,
    )
    follow_s = time.monotonic() - started
    out = cli.folder / "procs" / "big" / "big.out"
    started = time.monotonic()
    cat = subprocess.run(["cat", str(out)], stdout=subprocess.PIPE, check=True)
    cat_s = time.monotonic() - started

    assert follow.stdout == cat.stdout
    assert len(follow.stdout) == 50_000_000
    # 0.40's line-by-line follow took over a minute; startup is allowed for.
    assert follow_s < 2 * cat_s + 3, (follow_s, cat_s)


def test_rm_of_a_running_job_needs_force_which_kills_it(cli: Cli) -> None:
    cli("run", "--name", "long", "--", "sh", "-c", "sleep 60 & sleep 60")
    cli.wait_state("long", "running")
    pid = cli.states()["long"]["pid"]

    refused = cli("rm", "long", check=1)
    assert "rm --force long" in refused.stderr

    cli("rm", "--force", "long")

    assert "long" not in cli.states()
    assert _group_gone(pid)


def test_kill_stops_a_running_job_and_its_children(cli: Cli) -> None:
    cli("run", "--name", "k", "--", "sh", "-c", "sleep 60 & sleep 60")
    cli.wait_state("k", "running")
    pid = cli.states()["k"]["pid"]

    assert "SIGTERM" in cli("kill", "k").stdout

    cli.wait_state("k", "killed")
    wait_for(lambda: _group_gone(pid), "the job's children to be gone")
    finished = cli("kill", "k", check=1)
    assert "finished" in finished.stderr


def _group_gone(pgid: int) -> bool:
    """Whether no process of group ``pgid`` runs (zombies are not reaped here)."""
    for proc in psutil.process_iter(["status"]):
        try:
            if os.getpgid(proc.pid) == pgid and proc.status() != psutil.STATUS_ZOMBIE:
                return False
        except (ProcessLookupError, psutil.Error):
            continue
    return True


def test_a_job_with_an_unreadable_record_is_listed_readable_and_removable(
    cli: Cli,
) -> None:
    cli("run", "--wait", "--name", "bad", "--", "echo", "kept")
    (cli.folder / "jobs" / "bad.json").write_text("{not json")

    status = cli("status", "--json")
    assert json.loads(status.stdout)[0]["state"] == "unreadable"
    assert "bad.json" in status.stderr
    assert cli("logs", "bad").stdout == "kept\n"

    cli("rm", "bad")
    assert cli.states() == {}
    assert not (cli.folder / "procs" / "bad").exists()


def test_cleanup_removes_finished_jobs_messages_and_results(cli: Cli) -> None:
    for i in range(3):
        cli("run", "--wait", "--name", f"done{i}", "--", "true")
    cli("run", "--name", "busy", "--", "sleep", "60")
    cli.wait_state("busy", "running")

    done = cli("cleanup")

    assert sorted(done.stdout.split("\n")[:-1]) == [
        f"removed done{i} (succeeded)" for i in range(3)
    ]
    assert list(cli.states()) == ["busy"]
    broker = cli.folder / "app" / "broker"
    assert not list((broker / "processed").iterdir())
    assert not list((cli.folder / "app" / "result").iterdir())
    assert [p.name for p in (cli.folder / "procs").iterdir()] == ["busy"]


def test_cleanup_older_than_keeps_recent_jobs(cli: Cli) -> None:
    cli("run", "--wait", "--name", "recent", "--", "true")

    assert cli("cleanup", "--older-than", "1h").stdout == "nothing to remove\n"
    assert list(cli.states()) == ["recent"]
    bad = cli("cleanup", "--older-than", "soon", check=2)
    assert "duration" in bad.stderr


def test_status_lists_jobs_in_submission_order_with_times(cli: Cli) -> None:
    for name in ("zz", "aa", "mm"):
        cli("run", "--no-start", "--name", name, "--", "printf", "\x1b[31mred")

    table = cli("status").stdout

    assert table.splitlines()[0] == f"queue: {cli.folder}"
    rows = [line.split()[0] for line in table.splitlines()[2:5]]
    assert rows == ["zz", "aa", "mm"]
    assert "ago" in table or "just now" in table
    assert "\x1b" not in table
    assert "\\x1b[31mred" in table
    assert list(cli.states()) == ["zz", "aa", "mm"]


def test_status_filters_by_state(cli: Cli) -> None:
    cli("run", "--wait", "--name", "ok", "--", "true")
    cli("run", "--wait", "--name", "ko", "--", "false", check=1)
    cli("run", "--no-start", "--name", "later", "--", "true")

    def names(*args: str) -> list[str]:
        rows = json.loads(cli("status", "--json", *args).stdout)
        return [row["name"] for row in rows]

    assert names("--state", "failed") == ["ko"]
    assert names("--state", "queued", "--state", "succeeded") == ["ok", "later"]
    assert "not a state" in cli("status", "--state", "nope", check=2).stderr


def test_status_colours_states_on_a_terminal_only(cli: Cli, tmp_path: Path) -> None:
    cli("run", "--wait", "--name", "ok", "--", "true")

    def on_terminal(extra_env: dict[str, str]) -> bytes:
        primary, secondary = pty.openpty()
        try:
            subprocess.run(
                [str(SCRIPT), "status"],
                stdout=secondary,
                env={**cli.env, **extra_env},
                check=True,
                timeout=60,
            )
            return os.read(primary, 65536)
        finally:
            os.close(primary)
            os.close(secondary)

    assert b"\x1b[" in on_terminal({})
    assert b"\x1b[" not in on_terminal({"NO_COLOR": "1"})
    assert "\x1b[" not in cli("status").stdout


@pytest.mark.parametrize("command", ["status", "top", "workers", "stop", "cleanup"])
def test_a_folder_without_a_queue_is_said_so_and_nothing_is_created(
    cli: Cli, command: str
) -> None:
    done = cli(command)
    assert (
        "no queue" in done.stdout
        or "no worker" in done.stdout
        or ("nothing to remove" in done.stdout)
    )
    if command == "status":
        assert cli("status", "--json").stdout.strip() == "[]"
    assert not cli.folder.exists()


def test_worker_prints_one_line_per_job(cli: Cli) -> None:
    cli("run", "--no-start", "--name", "good", "--", "true")
    cli("run", "--no-start", "--name", "bad", "--", "sh", "-c", "exit 4")

    done = cli("worker", "--timeout", "0.5")

    lines = done.stderr.splitlines()
    assert len(lines) == 2, done.stderr
    assert "job good succeeded" in lines[0]
    assert "job bad failed (exit 4" in lines[1]
    assert "celery@" not in done.stderr  # no banner
    assert "'returncode'" not in done.stderr  # no result dicts
    quiet = cli("run", "--no-start", "--", "true").stdout.strip()
    assert f"job {quiet}" not in cli("worker", "--quiet", "--timeout", "0.5").stderr


@pytest.mark.parametrize(
    "args", [["--concurrency", "0"], ["--timeout", "-1"], ["--timeout", "x"]]
)
def test_worker_options_are_checked_before_anything_starts(
    cli: Cli, args: list[str]
) -> None:
    done = cli("worker", *args, check=2)
    assert "Invalid value" in done.stderr
    assert not cli.folder.exists()


def test_start_and_stop_detached_workers(cli: Cli) -> None:
    cli("run", "--no-start", "--name", "long", "--", "sleep", "60")

    started = cli("start", "--workers", "2", "--timeout", "60").stdout
    assert started.count("started worker") == 2
    wait_for(lambda: len(cli.workers()) == 2, "two workers")
    assert [w["concurrency"] for w in cli.workers()] == [1, 1]
    cli.wait_state("long", "running")
    busy = [w for w in cli.workers() if w["running"]]
    assert [w["running"] for w in busy] == [["long"]]
    assert "IDLE SINCE" in cli("status").stdout

    assert cli("stop", "--kill").stdout.count("stopping worker") == 2

    wait_for(lambda: not cli.workers(), "the workers to stop")
    assert cli.state("long") == "killed"


def test_j_means_jobs_at_once_and_workers_beyond_the_cpus_need_force(
    cli: Cli,
) -> None:
    cpus = os.cpu_count() or 1
    done = cli("start", "--workers", str(cpus + 1), check=2)
    assert f"more than this machine's {cpus} CPUs: give --force" in done.stderr
    assert not cli.folder.exists()

    assert cli("start", "-j", "3", "--timeout", "60").stdout.count("started") == 1
    wait_for(cli.workers, "the worker")
    assert [w["concurrency"] for w in cli.workers()] == [3]


def test_stop_lets_running_jobs_finish(cli: Cli) -> None:
    cli("run", "--name", "j", "--", "sh", "-c", "sleep 2; echo done")
    cli.wait_state("j", "running")

    cli("stop")

    wait_for(lambda: not cli.workers(), "the worker to stop")
    assert cli.state("j") == "succeeded"
    assert cli("logs", "j").stdout == "done\n"


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (["kill", "nope"], "no job named 'nope'"),
        (["logs", "nope"], "no job named 'nope'"),
        (["rm", "nope"], "no job named 'nope'"),
        (["logs", "-f", "nope"], "no job named 'nope'"),
    ],
)
def test_errors_are_one_line_without_traceback(
    cli: Cli, args: list[str], message: str
) -> None:
    cli("run", "--no-start", "--name", "other", "--", "true")
    done = cli(*args, check=1)
    assert message in done.stderr
    assert "Traceback" not in done.stderr
    assert len(done.stderr.strip().splitlines()) == 1


def test_a_file_as_the_folder_is_a_clear_error(cli: Cli, tmp_path: Path) -> None:
    (tmp_path / "file").write_text("x")
    done = cli("--dir", str(tmp_path / "file"), "status", check=2)
    assert "Traceback" not in done.stderr
    assert "file" in done.stderr


@pytest.mark.parametrize(
    "command",
    ["run", "status", "logs", "kill", "rm", "cleanup", "worker", "start", "stop"],
)
def test_every_command_has_help_with_an_example(cli: Cli, command: str) -> None:
    assert "Example" in cli(command, "--help").stdout


def test_worker_ignores_modules_in_the_current_directory(
    cli: Cli, tmp_path: Path
) -> None:
    for module in ("copy", "json", "logging"):
        (tmp_path / f"{module}.py").write_text("raise SystemExit('shadowed')\n")

    done = cli("run", "--wait", "--name", "job", "--", "echo", "ran")

    assert done.stdout == "ran\n"
    assert cli.state("job") == "succeeded"


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
