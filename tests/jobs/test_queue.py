"""The job API (JobQueue) as a Python program uses it, with real workers."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

from dvc_task.jobs import (
    JobError,
    JobNotFinishedError,
    JobQueue,
    UnknownJobError,
)

from conftest import wait_for


def test_a_job_has_a_record_and_state_as_soon_as_it_is_queued(
    queue: JobQueue,
) -> None:
    job = queue.submit(["true"], name="first")

    assert job.state == "queued"
    assert queue.job("first").state == "queued"
    assert (queue.backend.jobs_dir / "first.json").stat().st_mode & 0o777 == 0o600
    assert (queue.folder / "jobs").stat().st_mode & 0o777 == 0o700
    assert [j.name for j in queue.jobs()] == ["first"]


def test_default_names_are_numbers_in_submission_order(queue: JobQueue) -> None:
    queue.submit(["true"], name="2")
    names = [queue.submit(["true"]).name for _ in range(3)]

    assert names[0] not in ("2",)
    assert len(set(names)) == 3
    assert [j.name for j in queue.jobs()] == ["2", *names]


def test_jobs_run_with_the_given_cwd_and_environment(
    queue: JobQueue, tmp_path: Path
) -> None:
    here = tmp_path / "here"
    here.mkdir()
    queue.submit(
        ["sh", "-c", 'echo "$ONLY_THIS"; pwd; echo "${HOME-none}"'],
        name="env",
        cwd=here,
        env={"ONLY_THIS": "yes", "PATH": os.environ["PATH"]},
    )
    queue.start_workers()

    job = queue.wait("env", timeout=120)

    assert job.state == "succeeded"
    assert queue.read_output("env").decode().split() == ["yes", str(here), "none"]
    assert job.cwd == str(here)


def test_bad_submissions_are_refused_and_queue_nothing(
    queue: JobQueue, tmp_path: Path
) -> None:
    with pytest.raises(ValueError, match="empty command"):
        queue.submit([])
    with pytest.raises(ValueError, match="invalid job name"):
        queue.submit(["true"], name="a" * 201)
    with pytest.raises(JobError, match="not a folder"):
        queue.submit(["true"], cwd=tmp_path / "missing")

    assert queue.jobs() == []
    assert not list(queue.backend.tasks.folders.inbox.glob("*.msg"))


def test_a_taken_name_is_refused_unless_replacing_a_finished_job(
    queue: JobQueue,
) -> None:
    queue.submit(["echo", "one"], name="x")
    with pytest.raises(JobError, match="queued"):
        queue.submit(["echo", "two"], name="x", replace=True)
    queue.start_workers()
    queue.wait("x", timeout=120)
    with pytest.raises(JobError, match="replace"):
        queue.submit(["echo", "two"], name="x")

    queue.submit(["echo", "two"], name="x", replace=True)

    assert queue.wait("x", timeout=120).state == "succeeded"
    assert queue.read_output("x") == b"two\n"


def test_follow_output_yields_bytes_until_the_job_ends(queue: JobQueue) -> None:
    queue.submit(["sh", "-c", "printf 'a\\rb'; sleep 0.5; printf '\\377end'"], name="f")
    queue.start_workers()

    assert b"".join(queue.follow_output("f")) == b"a\rb\xffend"
    assert queue.job("f").state == "succeeded"


def test_unknown_jobs_raise_key_errors(queue: JobQueue) -> None:
    for call in (queue.job, queue.kill, queue.remove, queue.follow_output):
        with pytest.raises(UnknownJobError):
            call("nope")
    with pytest.raises(KeyError):
        queue.job("nope")


def test_remove_refuses_an_unfinished_job_without_force(queue: JobQueue) -> None:
    queue.submit(["true"], name="q")

    with pytest.raises(JobNotFinishedError, match="queued"):
        queue.remove("q")
    queue.remove("q", force=True)

    assert queue.jobs() == []


def test_cleanup_shrinks_a_folder_of_finished_jobs_to_nothing(
    queue: JobQueue, full: bool
) -> None:
    count = 10_000 if full else 500
    for _ in range(count):
        queue.submit(["true"])
    queue.start_workers(concurrency=2)
    queue.wait(str(count), timeout=1800)
    queue.stop_workers()
    wait_for(lambda: not queue.workers(), "the worker to stop")

    removed = queue.cleanup()

    assert len(removed) == count
    assert {job.state for job in removed} == {"succeeded"}
    assert queue.jobs() == []
    # What is left is the queue's own: locks, counters, caches, exchange tables.
    left = [
        path
        for path in queue.folder.rglob("*")
        if path.is_file()
        and not any(part.startswith(".") for part in path.parts)
        and not path.name.startswith("worker-")
        and path.parent.name != "control"
    ]
    assert left == []


def test_a_second_program_sees_the_same_jobs(queue: JobQueue, tmp_path: Path) -> None:
    queue.submit(["true"], name="shared")
    script = (
        "import json, sys\n"
        "from dvc_task.jobs import JobQueue\n"
        "print(json.dumps([j.asdict() for j in JobQueue(sys.argv[1]).jobs()]))\n"
    )

    done = subprocess.run(
        [sys.executable, "-c", script, str(queue.folder)],
        capture_output=True,
        text=True,
        check=True,
    )

    rows = json.loads(done.stdout)
    assert [(row["name"], row["state"]) for row in rows] == [("shared", "queued")]


@pytest.mark.parametrize(
    "content",
    [
        b"",
        b"\xff\xfe",
        b"[]",
        b'{"name": "c"}',
        b'{"name": "c", "seq": "1", "command": [], "cwd": "/", "env": {},'
        b' "submitted_at": "now", "task_id": "t"}',
        b'{"name": "c", "seq": 1, "command": [1], "cwd": "/", "env": {},'
        b' "submitted_at": "2026-01-01T00:00:00", "task_id": "t"}',
        b'{"name": "c", "seq": 1, "command": ["true"], "cwd": "/", "env": {},'
        b' "submitted_at": "not a time", "task_id": "t", "progress": "started"}',
        b'{"name": "c", "seq": 1, "command": ["true"], "cwd": "/", "env": {},'
        b' "submitted_at": "2026-01-01T00:00:00", "task_id": "t",'
        b' "progress": "started", "worker_pid": "x"}',
        *(
            b'{"name": "c", "seq": 1, "command": ["true"], "cwd": "/", "env": {},'
            b' "submitted_at": "2026-01-01T00:00:00", "task_id": "t",'
            b' "phase": "queued", ' + bad + b"}"
            for bad in (
                b'"priority": true',  # a bool is not a number here
                b'"timed_out": 1',  # nor a number a flag
                b'"env": {"A": 1}',
                b'"resources": {"gpu": true}',
                b'"attempts": [1]',
                b'"after": [null]',
                b'"timeout": "1"',
            )
        ),
    ],
)
def test_a_corrupt_record_is_listed_as_unreadable_and_removable(
    queue: JobQueue, content: bytes
) -> None:
    queue.submit(["true"], name="fine")
    (queue.backend.jobs_dir / "c.json").write_bytes(content)

    states = {job.name: job.state for job in queue.jobs()}

    assert states == {"fine": "queued", "c": "unreadable"}
    queue.remove("c")
    assert [job.name for job in queue.jobs()] == ["fine"]
