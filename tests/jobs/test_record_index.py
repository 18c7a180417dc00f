"""The index of job records that makes a listing of thousands quick: it is
only ever a copy, so what a listing shows is what the record files say.
"""

from __future__ import annotations

import json
from pathlib import Path

from dvc_task.jobs import HELD, QUEUED, UNREADABLE, JobQueue

from conftest import wait_for


def index_path(queue: JobQueue) -> Path:
    return queue.backend.jobs_dir / "..index" / "records.json"


def indexed(queue: JobQueue) -> set[str]:
    path = index_path(queue)
    return set(json.loads(path.read_text())["rows"]) if path.exists() else set()


def states(queue: JobQueue) -> dict[str, str]:
    return {job.name: job.state for job in queue.jobs()}


def test_a_listing_from_the_index_shows_every_change_of_a_record(
    queue: JobQueue,
) -> None:
    queue.submit_many([["true"], ["false"], ["echo", "three"]], ["a", "b", "c"])
    wait_for(
        lambda: states(queue) and indexed(queue) == {"a", "b", "c"},
        "the records to be indexed (a second after they were written)",
    )
    index = json.loads(index_path(queue).read_text())
    assert len(index["shared"]) == 1  # the three share one environment

    queue.hold("b")
    assert states(queue) == {"a": QUEUED, "b": HELD, "c": QUEUED}
    assert queue.jobs()[2].command == ["echo", "three"]

    record = queue.backend.jobs_dir / "c.json"
    record.write_bytes(record.read_bytes()[:20])  # in place: same inode
    assert states(queue)["c"] == UNREADABLE

    queue.kill("a")  # never started: killed at once, then removable
    queue.remove("a")
    assert states(queue) == {"b": HELD, "c": UNREADABLE}
    wait_for(lambda: states(queue) and indexed(queue) == {"b"}, "a's row dropped")


def test_a_corrupt_or_foreign_index_is_ignored_and_replaced(queue: JobQueue) -> None:
    queue.submit_many([["true"], ["true"]], ["a", "b"])
    wait_for(lambda: states(queue) and indexed(queue) == {"a", "b"}, "the index")
    expected = states(queue)
    path = index_path(queue)
    index = json.loads(path.read_text())

    for bad in (
        b"\x00garbage",
        json.dumps({**index, "version": "another layout"}).encode(),
        json.dumps({**index, "rows": {"a": [1, 2, 3]}}).encode(),
        json.dumps({**index, "shared": []}).encode(),  # rows point nowhere
        json.dumps([1, 2]).encode(),
    ):
        path.write_bytes(bad)
        assert states(queue) == expected
    wait_for(lambda: states(queue) and indexed(queue) == {"a", "b"}, "a new index")


def test_the_index_is_private_and_never_taken_for_a_job(queue: JobQueue) -> None:
    queue.submit(["true"], name="a")
    wait_for(lambda: states(queue) and indexed(queue) == {"a"}, "the index")

    assert index_path(queue).parent.stat().st_mode & 0o777 == 0o700
    assert index_path(queue).stat().st_mode & 0o777 == 0o600
    assert [job.name for job in queue.jobs()] == ["a"]
