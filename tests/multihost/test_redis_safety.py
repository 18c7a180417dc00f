"""Jobs on Redis when the lock, the heartbeat or the server misbehaves."""

from __future__ import annotations

import logging
import os
import signal
import subprocess
import sys
import textwrap
import threading
from collections.abc import Iterator
from pathlib import Path

import pytest

from conftest import HELPERS, SCRIPT, wait_for

redis = pytest.importorskip("redis", reason="the redis extra is not installed")
sys.path.insert(0, str(HELPERS))

from redisserver import RedisServer, serving  # noqa: E402

from dvc_task.jobs.redisqueue import RedisJobQueue  # noqa: E402
from dvc_task.jobs.redisstore import JobsLockLostError  # noqa: E402

LOCK_KEY = "dvc-task:lock"


@pytest.fixture
def redis_server(tmp_path: Path) -> Iterator[RedisServer]:
    with serving(tmp_path / "redis") as server:
        yield server


def test_a_holder_that_lost_the_jobs_lock_cannot_overwrite_the_new_holder(
    redis_server: RedisServer, tmp_path: Path
) -> None:
    first = RedisJobQueue(tmp_path / "ha", redis_server.url)
    second = RedisJobQueue(tmp_path / "hb", redis_server.url)
    admin = redis.Redis.from_url(redis_server.url)
    first.submit(["true"], name="j", held=True)
    taken, leave = threading.Event(), threading.Event()

    def new_holder() -> None:
        with second.backend.locked():
            theirs = second.backend.load("j")
            theirs.priority = 2
            second.backend.save(theirs)
            taken.set()
            leave.wait(timeout=120)

    other = threading.Thread(target=new_holder, daemon=True)

    def write_after_losing_the_lock() -> None:
        with first.backend.locked():
            mine = first.backend.load("j")
            # The server lost the key (a restart, or its expiry while this
            # holder was paused): another process takes the lock.
            assert admin.delete(LOCK_KEY) == 1
            other.start()
            assert taken.wait(timeout=60), "the other holder never got the lock"
            mine.priority = 1
            first.backend.save(mine)

    try:
        with pytest.raises(JobsLockLostError, match="expired while this process"):
            write_after_losing_the_lock()
    finally:
        leave.set()
        other.join(timeout=60)
    assert second.backend.load("j").priority == 2


HOLDER = textwrap.dedent(
    """
    import sys
    from dvc_task.jobs import redisstore
    redisstore.LOCK_TTL_S = 1.0  # expires 1 s after the last renewal
    from dvc_task.jobs.redisqueue import RedisJobQueue

    queue = RedisJobQueue(sys.argv[1], sys.argv[2])
    try:
        with queue.backend.locked():
            record = queue.backend.load("j")
            print("locked", flush=True)
            sys.stdin.readline()  # paused meanwhile, past the lock's time
            record.priority = 1
            queue.backend.save(record)
            print("saved", flush=True)
    except Exception as exc:
        print("error:", type(exc).__name__, flush=True)
        sys.exit(3)
    """
)


def test_a_paused_lock_holder_is_told_it_lost_the_jobs_lock(
    redis_server: RedisServer, tmp_path: Path
) -> None:
    other = RedisJobQueue(tmp_path / "hb", redis_server.url)
    admin = redis.Redis.from_url(redis_server.url)
    other.submit(["true"], name="j", held=True)
    holder = subprocess.Popen(
        [sys.executable, "-c", HOLDER, str(tmp_path / "ha"), redis_server.url],
        stdin=subprocess.PIPE,
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        start_new_session=True,
    )
    try:
        assert holder.stdout is not None
        assert holder.stdin is not None
        assert holder.stdout.readline() == b"locked\n"
        os.kill(holder.pid, signal.SIGSTOP)  # paused: no renewal
        wait_for(lambda: not admin.exists(LOCK_KEY), "the lock to expire", timeout=30)
        with other.backend.locked():
            record = other.backend.load("j")
            record.priority = 2
            other.backend.save(record)
            os.kill(holder.pid, signal.SIGCONT)  # it wakes inside its section
            holder.stdin.write(b"go\n")
            holder.stdin.flush()
            said = holder.stdout.read().decode()
            holder.wait(timeout=60)
    finally:
        if holder.poll() is None:
            os.killpg(holder.pid, signal.SIGKILL)
            holder.wait()
        for pipe in (holder.stdin, holder.stdout):
            if pipe is not None:
                pipe.close()
    # Its renewer logged it when it noticed; its write was refused.
    assert said.endswith("error: JobsLockLostError\n")
    assert "saved\n" not in said.splitlines(keepends=True)
    assert other.backend.load("j").priority == 2


def test_the_last_output_a_worker_cannot_send_is_said_not_dropped(
    redis_server: RedisServer, tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    queue = RedisJobQueue(tmp_path / "host", redis_server.url)
    admin = redis.Redis.from_url(redis_server.url)
    out = queue.backend.output_path("job")
    out.parent.mkdir(parents=True, mode=0o700)
    out.write_bytes(b"")
    with caplog.at_level(logging.WARNING), queue.backend.attempt_link("job"):
        with out.open("ab") as fobj:
            fobj.write(b"first line\n")
        wait_for(
            lambda: queue.read_output("job") == b"first line\n",
            "the first output on the server",
        )
        # The server refuses writes (out of memory) as the job ends.
        admin.config_set("maxmemory-policy", "noeviction")
        admin.config_set("maxmemory", 1)
        with out.open("ab") as fobj:
            fobj.write(b"last line\n")
    admin.config_set("maxmemory", 0)
    assert queue.read_output("job") == b"first line\n"
    (warning,) = [r.getMessage() for r in caplog.records if "job job" in r.getMessage()]
    assert "from byte 11" in warning
    assert str(out) in warning


def test_a_long_job_keeps_its_message_while_others_come_and_go(
    redis_server: RedisServer, tmp_path: Path
) -> None:
    # A visibility timeout of 2 s, a job of 8 s and 40 short ones through
    # the same worker, with another worker waiting to take over anything
    # whose message comes back: the long job runs once, and both workers
    # stay alive and listed the whole time.
    env = {
        **os.environ,
        "DVC_TASK_BROKER": redis_server.url,
        "DVC_TASK_VISIBILITY_TIMEOUT": "2",
    }
    procs = []
    try:
        for host in ("ha", "hb"):
            folder = tmp_path / host
            procs.append(
                subprocess.Popen(
                    [
                        str(SCRIPT),
                        "--dir",
                        str(folder),
                        "worker",
                        "-j",
                        "4",
                        "--timeout",
                        "60",
                    ],
                    env={**env, "DVC_TASK_HOST": host},
                    stdout=subprocess.DEVNULL,
                    stderr=subprocess.DEVNULL,
                    start_new_session=True,
                )
            )
        queue = RedisJobQueue(tmp_path / "hc", redis_server.url)
        wait_for(lambda: len(queue.workers()) == 2, "both workers to register")
        queue.submit(
            [sys.executable, "-c", "import time; print('once'); time.sleep(8)"],
            name="long",
        )
        for number in range(40):
            queue.submit(["true"], name=f"short-{number}")
        long_job = queue.wait("long", timeout=120)
        for number in range(40):
            assert queue.wait(f"short-{number}", timeout=120).state == "succeeded"
        assert long_job.state == "succeeded"
        assert queue.backend.load("long").attempts == []  # never taken over
        assert queue.read_output("long") == b"once\n"
        assert len(queue.workers()) == 2
    finally:
        for proc in procs:
            os.killpg(proc.pid, signal.SIGKILL)
            proc.wait()
