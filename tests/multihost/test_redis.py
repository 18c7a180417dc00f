"""Jobs on a real Redis server: many workers, many hosts, crashes and restarts."""

from __future__ import annotations

import contextlib
import json
import os
import signal
import subprocess
import sys
import time
from collections.abc import Callable, Iterator
from datetime import datetime, timedelta, timezone
from pathlib import Path
from typing import Any

import psutil
import pytest

from dvc_task.jobs import open_queue

from conftest import HELPERS, SCRIPT, Cli, wait_for

redis = pytest.importorskip("redis", reason="the redis extra is not installed")
sys.path.insert(0, str(HELPERS))

from redisserver import RedisServer, free_port, serving  # noqa: E402


@pytest.fixture
def redis_server(tmp_path: Path) -> Iterator[RedisServer]:
    with serving(tmp_path / "redis") as server:
        yield server


def kill_group(proc: subprocess.Popen[bytes]) -> None:
    with contextlib.suppress(ProcessLookupError):
        os.killpg(proc.pid, signal.SIGKILL)
    proc.wait()


class Host:
    """``dvc-task`` as run on one host: its own folder and host name."""

    def __init__(self, tmp_path: Path, name: str, url: str) -> None:
        self.name = name
        self.folder = tmp_path / name
        env = {
            **os.environ,
            "DVC_TASK_BROKER": url,
            "DVC_TASK_HOST": name,
            # A dead worker's messages go to another after 3 s, not 30.
            "DVC_TASK_VISIBILITY_TIMEOUT": "3",
        }
        self.cli = Cli(self.folder, tmp_path, env)
        self.env = self.cli.env

    def worker(
        self, procs: list[subprocess.Popen[bytes]], *options: str
    ) -> subprocess.Popen[bytes]:
        """A foreground worker of this host (its log in its folder)."""
        self.folder.mkdir(mode=0o700, exist_ok=True)
        log = open(self.folder.parent / f"{self.name}-worker.log", "ab")  # noqa: SIM115
        try:
            proc = subprocess.Popen(
                [str(SCRIPT), "worker", *options],
                env=self.env,
                cwd=self.folder.parent,
                stdout=log,
                stderr=subprocess.STDOUT,
                start_new_session=True,
            )
        finally:
            log.close()
        procs.append(proc)
        return proc


@pytest.fixture
def workers() -> Iterator[list[subprocess.Popen[bytes]]]:
    """Worker processes of a test, killed after it."""
    procs: list[subprocess.Popen[bytes]] = []
    try:
        yield procs
    finally:
        for proc in procs:
            kill_group(proc)


@pytest.fixture
def hosts(tmp_path: Path, redis_server: RedisServer) -> tuple[Host, Host, Host]:
    """Three "hosts" on one server: two to run workers, one to look on."""
    a, b, c = (Host(tmp_path, name, redis_server.url) for name in ("ha", "hb", "hc"))
    return a, b, c


def rows(host: Host) -> dict[str, dict[str, Any]]:
    """``status --json`` as seen from ``host``, by job name."""
    return host.cli.states()


def all_ended(host: Host, count: int) -> dict[str, dict[str, Any]] | None:
    found = rows(host)
    ended = [row for row in found.values() if row["exit_code"] is not None]
    return found if len(found) == count and len(ended) == count else None


# --- the tests -----------------------------------------------------------------


def test_two_hosts_drain_500_jobs_each_exactly_once(
    hosts: tuple[Host, Host, Host],
    workers: list[subprocess.Popen[bytes]],
    tmp_path: Path,
) -> None:
    a, b, c = hosts
    ran = tmp_path / "ran"
    queue = open_queue(c.folder, c.env["DVC_TASK_BROKER"])
    for number in range(500):
        queue.submit(
            ["sh", "-c", f'echo "$0 $DVC_TASK_HOST" >> {ran}', f"j{number}"],
            name=f"j{number}",
            env={**os.environ, "PATH": os.environ["PATH"]},
        )
    a.worker(workers, "--concurrency", "2", "--timeout", "60")
    b.worker(workers, "--concurrency", "2", "--timeout", "60")
    found = wait_for(
        lambda: all_ended(c, 500), "500 jobs to end", timeout=400, interval=1
    )
    lines = ran.read_text().splitlines()
    names = sorted(line.split()[0] for line in lines)
    assert names == sorted(f"j{n}" for n in range(500))  # each once, none lost
    assert {row["state"] for row in found.values()} == {"succeeded"}
    ran_on = {row["host"] for row in found.values()}
    assert ran_on == {"ha", "hb"}, ran_on
    # The record says which host ran each job.
    assert all(row["worker"] for row in found.values())


def test_logs_follow_streams_a_job_running_on_another_host(
    hosts: tuple[Host, Host, Host],
    workers: list[subprocess.Popen[bytes]],
    tmp_path: Path,
) -> None:
    a, b, c = hosts
    gate = tmp_path / "gate"
    script = f"echo first; while [ ! -e {gate} ]; do sleep 0.05; done; echo second"
    c.cli("run", "--no-start", "--name", "live", "--", "sh", "-c", script)
    b.worker(workers, "--timeout", "30")
    follower = subprocess.Popen(
        [str(SCRIPT), "logs", "-f", "live"],
        env=a.env,
        cwd=tmp_path,
        stdout=subprocess.PIPE,
        start_new_session=True,
    )
    try:
        assert follower.stdout is not None
        # The first line arrives while the job still runs on the other host.
        assert follower.stdout.readline() == b"first\n"
        assert c.cli.state("live") == "running"
        gate.touch()
        rest, _ = follower.communicate(timeout=60)
    finally:
        kill_group(follower)
    assert rest == b"second\n"
    assert follower.returncode == 0
    assert c.cli("logs", "live").stdout == "first\nsecond\n"
    assert rows(a)["live"]["host"] == "hb"


def test_kill_from_a_third_host_stops_the_job(
    hosts: tuple[Host, Host, Host],
    workers: list[subprocess.Popen[bytes]],
    tmp_path: Path,
) -> None:
    a, b, c = hosts
    pid_file = tmp_path / "pid"
    a.cli(
        "run",
        "--no-start",
        "--name",
        "long",
        "--",
        "sh",
        "-c",
        f"echo $$ > {pid_file}; exec sleep 600",
    )
    b.worker(workers, "--timeout", "30")
    pid = int(
        wait_for(lambda: pid_file.exists() and pid_file.read_text().strip(), "the job")
    )
    c.cli.wait_state("long", "running")
    begun = time.monotonic()
    c.cli("kill", "long")
    c.cli.wait_state("long", "killed", timeout=30)
    wait_for(
        lambda: (
            not psutil.pid_exists(pid)
            or psutil.Process(pid).status() == psutil.STATUS_ZOMBIE
        ),
        "the command to end",
    )
    assert time.monotonic() - begun < 20
    row = rows(a)["long"]
    assert row["returncode"] == -signal.SIGTERM
    assert row["host"] == "hb"
    table = c.cli("status").stdout.splitlines()
    assert table[0].startswith("queue: redis://")
    assert "HOST" in table[1].split()
    assert "hb" in next(line for line in table if line.startswith("long")).split()


def test_a_job_of_a_worker_killed_with_sigkill_runs_on_another(
    hosts: tuple[Host, Host, Host],
    workers: list[subprocess.Popen[bytes]],
    tmp_path: Path,
) -> None:
    a, b, c = hosts
    started = tmp_path / "started"
    script = f'echo "$DVC_TASK_HOST" >> {started}; sleep 3; echo done'
    c.cli("run", "--no-start", "--name", "handed", "--", "sh", "-c", script)
    first = a.worker(workers, "--timeout", "60")
    wait_for(started.exists, "the job to start on the first worker")
    os.kill(first.pid, signal.SIGKILL)  # the worker only: its command runs on
    first.wait()
    b.worker(workers, "--timeout", "60")
    c.cli.wait_state("handed", "succeeded", timeout=120)
    row = rows(c)["handed"]
    assert row["host"] == "hb"
    record = open_queue(c.folder, c.env["DVC_TASK_BROKER"]).backend.load("handed")
    assert [(t["state"], t["host"]) for t in record.attempts] == [("lost", "ha")]
    assert record.attempt == 1  # no retry used up: it had none
    assert c.cli("logs", "handed").stdout.endswith("done\n")


def drain_through(
    hosts: tuple[Host, Host, Host],
    workers: list[subprocess.Popen[bytes]],
    tmp_path: Path,
    url: str,
    *,
    count: int,
    seconds: float,
    started: int,
    interrupt: Callable[[], None],
) -> None:
    """Two workers drain ``count`` jobs; ``interrupt`` after ``started`` ran.

    Each job ran exactly once and succeeded, whatever the interruption did.
    """
    a, b, c = hosts
    ran = tmp_path / "ran"
    queue = open_queue(c.folder, url)
    names = [f"j{number}" for number in range(count)]
    for name in names:
        queue.submit(
            ["sh", "-c", f"sleep {seconds}; echo $0 >> {ran}", name], name=name
        )
    a.worker(workers, "--timeout", "120")
    b.worker(workers, "--timeout", "120")
    wait_for(
        lambda: ran.exists() and len(ran.read_text().split()) >= started,
        f"{started} jobs to run",
    )
    interrupt()
    found = wait_for(
        lambda: all_ended(c, count), f"{count} jobs to end", timeout=300, interval=1
    )
    assert {row["state"] for row in found.values()} == {"succeeded"}
    assert sorted(ran.read_text().split()) == sorted(names)


def test_nothing_is_lost_when_the_server_restarts_mid_drain(
    hosts: tuple[Host, Host, Host],
    workers: list[subprocess.Popen[bytes]],
    redis_server: RedisServer,
    tmp_path: Path,
) -> None:
    drain_through(
        hosts,
        workers,
        tmp_path,
        redis_server.url,
        count=60,
        seconds=0.1,
        started=10,
        interrupt=redis_server.restart,
    )


def test_dependencies_and_retries_keep_their_meaning(
    hosts: tuple[Host, Host, Host],
    workers: list[subprocess.Popen[bytes]],
    tmp_path: Path,
) -> None:
    a, b, c = hosts
    c.cli(
        "run",
        "--no-start",
        "--name",
        "flaky",
        "--retries",
        "1",
        "--",
        "sh",
        "-c",
        f"[ -e {tmp_path}/once ] || {{ touch {tmp_path}/once; exit 3; }}",
    )
    c.cli(
        "run", "--no-start", "--name", "after", "--after", "flaky", "--", "echo", "next"
    )
    c.cli("run", "--no-start", "--name", "doomed", "--", "false")
    c.cli(
        "run", "--no-start", "--name", "never", "--after", "doomed", "--", "echo", "no"
    )
    assert c.cli.state("after") == "waiting"
    a.worker(workers, "--timeout", "30")
    b.worker(workers, "--timeout", "30")
    c.cli.wait_state("after", "succeeded")
    c.cli.wait_state("never", "dependency failed")
    found = rows(c)
    assert (found["flaky"]["state"], found["flaky"]["attempt"]) == ("succeeded", 2)
    assert found["doomed"]["state"] == "failed"


def test_workers_of_every_host_are_listed_and_stopped(
    hosts: tuple[Host, Host, Host],
    workers: list[subprocess.Popen[bytes]],
) -> None:
    a, b, c = hosts
    first = a.worker(workers, "--timeout", "600")
    second = b.worker(workers, "--timeout", "600")
    listed = wait_for(
        lambda: len(c.cli.workers()) == 2 and c.cli.workers(), "2 workers"
    )
    assert sorted(w["host"] for w in listed) == ["ha", "hb"]
    said = c.cli("stop").stdout.splitlines()
    # Named as `workers` lists them: name@host.
    assert sorted(said) == [
        "stopping worker dvc-task-worker@ha",
        "stopping worker dvc-task-worker@hb",
    ]
    assert first.wait(timeout=30) == 0
    assert second.wait(timeout=30) == 0
    assert c.cli.workers() == []


def test_bad_and_unreachable_servers_are_clear_errors(tmp_path: Path) -> None:
    cli = Cli(tmp_path / "q", tmp_path, dict(os.environ))
    done = cli("--broker", "http://example.org", "status", check=1)
    assert "is not a Redis URL" in done.stderr
    assert "Traceback" not in done.stderr
    port = free_port()
    began = time.monotonic()
    done = cli(
        "--broker", f"redis://:secret@127.0.0.1:{port}/0", "run", "--", "true", check=1
    )
    assert time.monotonic() - began < 5  # said at once (it took 9 s)
    assert "Redis server" in done.stderr
    assert "Traceback" not in done.stderr
    assert "secret" not in done.stderr


def test_top_shows_and_kills_a_job_running_on_another_host(
    hosts: tuple[Host, Host, Host],
    workers: list[subprocess.Popen[bytes]],
    tmp_path: Path,
) -> None:
    pytest.importorskip("textual", reason="the monitor needs the 'tui' extra")
    import asyncio  # noqa: PLC0415

    from dvc_task.tui.app import TopApp  # noqa: PLC0415

    a, b, c = hosts
    gate = tmp_path / "gate"
    script = (
        f"echo first; while [ ! -e {gate} ]; do sleep 0.05; done; echo second; "
        "sleep 600"
    )
    a.cli("run", "--no-start", "--name", "far", "--", "sh", "-c", script)
    b.worker(workers, "--timeout", "30")
    c.cli.wait_state("far", "running")
    queue = open_queue(c.folder, c.env["DVC_TASK_BROKER"])

    async def main() -> None:
        app = TopApp(queue)
        async with app.run_test(size=(160, 50)) as pilot:

            async def until(predicate: Any, what: str) -> None:
                deadline = time.monotonic() + 60
                while not predicate():
                    assert time.monotonic() < deadline, f"gave up waiting for {what}"
                    await pilot.pause(0.02)

            await until(lambda: app.selected == "far", "the job to be selected")
            await until(lambda: app.buffer.lines == ["first"], "its first line")
            gate.touch()
            await until(lambda: "second" in app.buffer.lines, "its next line, live")
            await pilot.press("k")
            await until(lambda: len(app.screen_stack) == 2, "the question")
            await pilot.press("y")
            await until(
                lambda: any(j.name == "far" and j.state == "killed" for j in app.jobs),
                "the job to be killed",
            )

    asyncio.run(main())
    assert rows(c)["far"]["host"] == "hb"


def test_retry_rm_and_cleanup_from_any_host(
    hosts: tuple[Host, Host, Host],
    workers: list[subprocess.Popen[bytes]],
    tmp_path: Path,
) -> None:
    a, b, c = hosts
    flag = tmp_path / "flag"
    c.cli(
        "run", "--no-start", "--name", "f", "--", "sh", "-c", f"echo try; [ -e {flag} ]"
    )
    c.cli("run", "--no-start", "--name", "g", "--", "echo", "gone soon")
    b.worker(workers, "--timeout", "60")
    c.cli.wait_state("f", "failed")
    c.cli.wait_state("g", "succeeded")
    flag.touch()
    a.cli("retry", "f")
    c.cli.wait_state("f", "succeeded")
    assert a.cli("logs", "f").stdout == "try\n--- dvc-task: run 2 ---\ntry\n"
    a.cli("rm", "g")
    assert "g" not in rows(c)
    assert "no job named 'g'" in c.cli("logs", "g", check=1).stderr
    a.cli("cleanup")
    assert rows(b) == {}


def test_run_wait_starts_one_worker_and_exits_with_the_code(
    hosts: tuple[Host, Host, Host],
) -> None:
    a, _, c = hosts
    done = a.cli("run", "--wait", "--", "sh", "-c", "echo hello; exit 3", check=3)
    assert done.stdout == "hello\n"
    listed = c.cli.workers()
    assert [(w["name"], w["host"]) for w in listed] == [("dvc-task-worker", "ha")]
    a.cli("stop")
    wait_for(lambda: not c.cli.workers(), "the worker to stop")


def test_a_corrupt_record_on_the_server_is_listed_and_removable(
    hosts: tuple[Host, Host, Host],
    workers: list[subprocess.Popen[bytes]],
    redis_server: RedisServer,
) -> None:
    a, b, c = hosts
    assert "no queue in redis://127.0.0.1:" in c.cli("status").stdout
    client = redis.Redis.from_url(redis_server.url)
    try:
        client.hset("dvc-task:jobs", "broken", b"{not json")
    finally:
        client.close()
    a.cli("run", "--no-start", "--name", "fine", "--", "true")
    b.worker(workers, "--timeout", "30")
    c.cli.wait_state("fine", "succeeded")
    done = c.cli("status", "--json")
    assert json.loads(done.stdout)[-1]["state"] == "unreadable"
    assert "broken" in done.stderr  # reported, with what to do
    c.cli("rm", "broken")
    assert set(rows(c)) == {"fine"}


CELERY_PROGRAM = """
import json, sys
from dvc_task.app import RedisApp
from dvc_task.worker import TemporaryWorker

app = RedisApp("plain", url=sys.argv[1])

@app.task(name="double")
def double(x):
    return 2 * x

results = [double.delay(n) for n in range(5)]
TemporaryWorker(app, timeout=0.5, pool="threads", concurrency=2).start("w1")
print(json.dumps([r.get(timeout=10) for r in results]))
"""


def test_a_temporary_worker_drains_a_redis_app_then_exits(
    redis_server: RedisServer, tmp_path: Path
) -> None:
    done = subprocess.run(
        [sys.executable, "-c", CELERY_PROGRAM, redis_server.url],
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
        cwd=tmp_path,
    )
    assert done.returncode == 0, done.stderr
    assert json.loads(done.stdout.splitlines()[-1]) == [0, 2, 4, 6, 8]
    assert "Traceback" not in done.stderr


def test_the_command_of_a_killed_worker_ends_before_another_takes_the_job_over(
    hosts: tuple[Host, Host, Host],
    workers: list[subprocess.Popen[bytes]],
    tmp_path: Path,
) -> None:
    a, _, c = hosts
    pid_file = tmp_path / "pid"
    script = (
        f"if [ -e {tmp_path}/first ]; then echo second run; else "
        f"touch {tmp_path}/first; echo $$ > {pid_file}; exec sleep 600; fi"
    )
    c.cli("run", "--no-start", "--name", "again", "--", "sh", "-c", script)
    first = a.worker(workers, "--timeout", "60")
    pid = int(wait_for(lambda: pid_file.exists() and pid_file.read_text(), "a run"))
    os.kill(first.pid, signal.SIGKILL)
    first.wait()
    # The worker's command ends with it (its watchdog)...
    wait_for(
        lambda: not psutil.pid_exists(pid) or psutil.Process(pid).status() == "zombie",
        "the command of the killed worker to end",
        timeout=10,
    )
    # ... and a worker taking the job over runs it again, alone.
    a.worker(workers, "--timeout", "60")
    c.cli.wait_state("again", "succeeded", timeout=120)
    assert c.cli("logs", "again").stdout.endswith("second run\n")


LISTING_PROGRAM = """
import json, sys
from dvc_task.app import RedisApp

app = RedisApp("plain", url=sys.argv[1])
sent = [app.send_task("double", args=(n,)).id for n in range(3)]
listed = [m.headers["id"] for m in app.iter_queued()]
tags = [m.delivery_tag for m in app.iter_queued()]
app.reject(tags[1])
try:
    app.reject(tags[1])
    again = "deleted twice"
except ValueError as exc:
    again = str(exc)
left = [m.headers["id"] for m in app.iter_queued()]
print(json.dumps({"sent": sent, "listed": listed, "left": left, "again": again,
                  "processed": list(app.iter_processed())}))
"""


def test_a_redis_app_lists_and_rejects_waiting_messages(
    redis_server: RedisServer, tmp_path: Path
) -> None:
    done = subprocess.run(
        [sys.executable, "-c", LISTING_PROGRAM, redis_server.url],
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
        cwd=tmp_path,
    )
    assert done.returncode == 0, done.stderr
    report = json.loads(done.stdout.splitlines()[-1])
    sent = report["sent"]
    assert report["listed"] == sent  # oldest first
    assert report["left"] == [sent[0], sent[2]]
    assert "no waiting message" in report["again"]
    assert report["processed"] == []


def test_a_long_server_outage_mid_drain_loses_nothing(
    hosts: tuple[Host, Host, Host],
    workers: list[subprocess.Popen[bytes]],
    redis_server: RedisServer,
    tmp_path: Path,
) -> None:
    def outage() -> None:
        redis_server.stop()
        # The outage outlasts a command's patience (10 s), not a worker's.
        time.sleep(12)
        redis_server.start()

    drain_through(
        hosts,
        workers,
        tmp_path,
        redis_server.url,
        count=30,
        seconds=0.3,
        started=4,
        interrupt=outage,
    )


def test_a_job_whose_message_was_lost_is_queued_again(
    hosts: tuple[Host, Host, Host],
    workers: list[subprocess.Popen[bytes]],
    redis_server: RedisServer,
    tmp_path: Path,
) -> None:
    # Kombu's Redis transport can lose a message taken off the queue just as
    # the connection drops; here it is deleted by hand, with the same effect.
    a, _, c = hosts
    ran = tmp_path / "ran"
    queue = open_queue(c.folder, redis_server.url)
    queue.submit(["sh", "-c", f"echo once >> {ran}"], name="orphan")
    app = queue.backend.app
    (message,) = list(app.iter_queued())
    app.reject(message.delivery_tag)
    assert c.cli.state("orphan") == "queued"
    a.worker(workers, "--timeout", "120")
    c.cli.wait_state("orphan", "succeeded", timeout=120)
    assert ran.read_text() == "once\n"


SQUARES = """
from dvc_task.flow import Dependency, flow, task

@task
def square(number):
    return number * number

@flow
def squares(numbers):
    tasks = [square.make_task(number) for number in numbers]
    yield tasks
    yield Dependency()
    yield square.make_task(sum(each.result() for each in tasks), name="total")
"""


def test_a_flow_runs_its_tasks_on_another_hosts_worker(
    hosts: tuple[Host, Host, Host],
    workers: list[subprocess.Popen[bytes]],
    tmp_path: Path,
) -> None:
    a, _, c = hosts
    (tmp_path / "pipelines.py").write_text(SQUARES)
    a.worker(workers, "--timeout", "60")

    done = c.cli("flow", "run", "--wait", "pipelines:squares", "[2, 3]")

    assert done.stdout.splitlines()[-1] == "squares.total: succeeded"
    found = rows(c)
    assert {row["host"] for row in found.values()} == {"ha"}
    assert c.cli("logs", "squares.total").stdout == "dvc-task result: 169\n"


def fired_ticks(host: Host, schedule: str) -> list[datetime]:
    """The ticks that ``schedule`` fired a job for, as ``host`` lists them."""
    found = []
    for name in rows(host):
        base, sep, tick = name.partition("@")
        if sep and base == schedule and len(tick) == len("2026-12-04T02:00:00Z"):
            when = datetime.strptime(tick, "%Y-%m-%dT%H:%M:%SZ")
            found.append(when.replace(tzinfo=timezone.utc))
    return sorted(found)


def test_beat_workers_of_two_hosts_fire_each_tick_once_and_hand_over(
    hosts: tuple[Host, Host, Host],
    workers: list[subprocess.Popen[bytes]],
) -> None:
    a, b, c = hosts
    c.cli("schedule", "add", "t", "--every", "1s", "--overlap", "allow", "--", "true")
    first = a.worker(workers, "--beat")
    wait_for(lambda: len(fired_ticks(c, "t")) >= 3, "host a's fires")
    b.worker(workers, "--beat")
    wait_for(lambda: len(fired_ticks(c, "t")) >= 6, "fires with two schedulers")

    os.kill(first.pid, signal.SIGKILL)  # the scheduler: it started first
    first.wait()
    killed_at = datetime.now(timezone.utc)
    wait_for(
        lambda: [
            t for t in fired_ticks(c, "t") if t > killed_at + timedelta(seconds=2)
        ],
        "host b to fire the next ticks",
        timeout=30,
    )
    for proc in workers:
        if proc.poll() is None:
            proc.send_signal(signal.SIGTERM)
            proc.wait(timeout=60)

    ticks = fired_ticks(c, "t")
    assert ticks == sorted(set(ticks))
    gaps = {later - earlier for earlier, later in zip(ticks, ticks[1:])}
    assert gaps == {timedelta(seconds=1)}  # none missing across the hand-over


def test_a_listing_keeps_an_index_on_its_host_and_sees_every_change(
    tmp_path: Path, redis_server: RedisServer
) -> None:
    here = open_queue(tmp_path / "here", redis_server.url)
    elsewhere = open_queue(tmp_path / "elsewhere", redis_server.url)
    here.submit_many([["true"], ["true"], ["true"]], ["a", "b", "c"])
    index = tmp_path / "here" / "..index" / "redis-records.json"

    def states() -> dict[str, str]:
        return {job.name: job.state for job in here.jobs()}

    assert states() == dict.fromkeys("abc", "queued")
    assert set(json.loads(index.read_text())["rows"]) == {"a", "b", "c"}
    elsewhere.hold("b")
    elsewhere.kill("c")
    assert states() == {"a": "queued", "b": "held", "c": "killed"}
    index.write_bytes(b"\x00 not an index")
    assert states() == {"a": "queued", "b": "held", "c": "killed"}

    # A host that only looks creates nothing.
    assert open_queue(tmp_path / "looker", redis_server.url).jobs()
    assert not (tmp_path / "looker").exists()
