"""FolderQueue: the on-disk protocol by itself, without a Kombu connection."""

from __future__ import annotations

import json
import os
import stat
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest

from dvc_task.app.broker import BrokerFolders
from dvc_task.app.folderqueue import FolderQueue
from dvc_task.files import FileLock, lock_is_held
from dvc_task.folders import make_private_folder

from conftest import Processes


def payload(tag: str, queue: str = "celery") -> dict[str, Any]:
    return {
        "body": json.dumps([[tag], {}, {}]),
        "content-type": "application/json",
        "content-encoding": "utf-8",
        "headers": {},
        "properties": {
            "delivery_tag": tag,
            "delivery_info": {"exchange": "", "routing_key": queue},
            "body_encoding": "utf-8",
        },
    }


@pytest.fixture
def folders(tmp_path: Path) -> BrokerFolders:
    base = tmp_path / "broker"
    found = BrokerFolders(
        inbox=base / "in",
        processed=base / "processed",
        control=base / "control",
        reserved=base / "reserved",
        quarantine=base / "quarantine",
        tmp=base / "tmp",
    )
    for path in found.all():
        make_private_folder(path)
    return found


def delivery_info(path: Path) -> dict[str, Any]:
    info: dict[str, Any] = json.loads(path.read_bytes())["properties"]["delivery_info"]
    return info


def test_put_then_claims_come_in_publish_order_and_once(folders: BrokerFolders) -> None:
    producer = FolderQueue(folders)
    for i in range(5):
        producer.put("celery", payload(f"t{i}"))
    producer.put("other", payload("x", "other"))
    first, second = FolderQueue(folders), FolderQueue(folders)

    names = producer.waiting()["celery"]
    claims = [first.claim(names[0]), second.claim(names[0])]

    assert [c.tag for c in claims if c is not None] == ["t0"]
    assert first.size("celery") == 4
    assert first.size("other") == 1
    assert [first.claim(n).tag for n in list(names)[1:]] == ["t1", "t2", "t3", "t4"]  # type: ignore[union-attr]
    assert stat.S_IMODE(os.stat(claims[0].path).st_mode) == 0o600  # type: ignore[union-attr]


def test_ack_keeps_or_deletes_and_reject_is_told_apart(folders: BrokerFolders) -> None:
    queue = FolderQueue(folders)
    for tag in ("acked", "dropped", "rejected"):
        queue.put("celery", payload(tag))
    acked, dropped, rejected = (queue.claim(name) for name in queue.waiting()["celery"])
    assert acked
    assert dropped
    assert rejected

    queue.ack(acked.path)
    queue.ack(dropped.path, keep=False)
    queue.reject(rejected.path, requeue=False)

    processed = {p.name: p for p in folders.processed.iterdir()}
    assert set(processed) == {acked.path.name, rejected.path.name}
    assert "rejected" not in delivery_info(processed[acked.path.name])
    assert delivery_info(processed[rejected.path.name])["rejected"] is True
    assert queue.size("celery") == 0


def test_requeued_message_returns_under_its_name_marked_redelivered(
    folders: BrokerFolders,
) -> None:
    queue = FolderQueue(folders)
    queue.put("celery", payload("again"))
    (name,) = queue.waiting()["celery"]
    claim = queue.claim(name)
    assert claim is not None
    assert "redelivered" not in delivery_info(claim.path)

    queue.reject(claim.path, requeue=True)

    assert list(queue.waiting()["celery"]) == [name]
    again = queue.claim(name)
    assert again is not None
    assert again.payload["properties"]["delivery_info"]["redelivered"] is True


CLAIMER = """
import sys
from dvc_task.app.broker import BrokerFolders
from dvc_task.app.folderqueue import FolderQueue
base = sys.argv[1]
folders = BrokerFolders.from_options({"data_folder_in": base + "/in"})
queue = FolderQueue(folders)
for name in queue.waiting()["celery"]:
    assert queue.claim(name) is not None
print("claimed", flush=True)
sys.stdin.read()
"""


def test_claims_of_a_killed_consumer_are_recovered_not_before(
    folders: BrokerFolders, processes: Processes
) -> None:
    queue = FolderQueue(folders)
    for i in range(3):
        queue.put("celery", payload(f"t{i}"))
    consumer = processes.start(
        sys.executable,
        "-c",
        CLAIMER,
        folders.inbox.parent,
        stdin=subprocess.PIPE,
        stdout=subprocess.PIPE,
    )
    assert consumer.stdout is not None
    assert consumer.stdout.readline().strip() == b"claimed"

    assert queue.recover() == 0
    assert queue.size("celery") == 0
    assert len(queue.paths(queued=False)) == 3  # taken by a live consumer

    consumer.kill()
    consumer.wait()

    assert queue.recover() == 3
    assert [p.name for p in queue.paths(queued=True)] == list(queue.waiting()["celery"])
    assert all(delivery_info(p)["redelivered"] for p in queue.paths(queued=True))
    assert not list(folders.reserved.iterdir())


def test_delete_and_claim_race_has_one_winner(folders: BrokerFolders) -> None:
    queue = FolderQueue(folders)
    queue.put("celery", payload("contested"))
    (name,) = queue.waiting()["celery"]
    claim = queue.claim(name)
    assert claim is not None

    # The claim won: a delete of the queued file now finds nothing, so the
    # caller can say "not found" instead of "deleted" for a job that runs.
    assert queue.delete(folders.inbox / name) is False
    assert claim.path.exists()
    assert queue.purge("celery") == 0


def test_bad_files_are_quarantined_with_the_reason(
    folders: BrokerFolders, caplog: pytest.LogCaptureFixture
) -> None:
    (folders.inbox / "1_bad.celery.msg").write_text("{not json")
    queue = FolderQueue(folders)

    assert queue.claim("1_bad.celery.msg") is None

    assert [p.name for p in folders.quarantine.iterdir()] == ["1_bad.celery.msg"]
    assert "not JSON" in caplog.text
    assert not list(folders.inbox.iterdir())


def test_young_empty_file_is_left_where_it_is(folders: BrokerFolders) -> None:
    empty = folders.inbox / "1_empty.celery.msg"
    empty.touch()
    queue = FolderQueue(folders)

    assert queue.claim(empty.name) is None
    assert empty.exists()
    assert not list(folders.quarantine.iterdir())


def test_stale_sweep_removes_only_our_temporary_files(folders: BrokerFolders) -> None:
    old = 1_000_000_000
    ours = folders.tmp / "1_x.celery.msg.tmp"
    theirs = folders.tmp / "notes.txt"
    for path in (ours, theirs):
        path.write_text("x")
        os.utime(path, (old, old))
    link = folders.tmp / "2_y.celery.msg.tmp"
    link.symlink_to(theirs)

    FolderQueue(folders).recover()

    assert not ours.exists()
    assert theirs.exists()
    assert link.is_symlink()


def test_file_lock_is_exclusive_and_seen_by_a_probe(tmp_path: Path) -> None:
    path = tmp_path / "held.lock"
    assert lock_is_held(path) is None
    first, second = FileLock(path), FileLock(path)

    assert first.acquire()
    assert not second.acquire()
    assert lock_is_held(path) is True
    first.write("1234\n")
    assert path.read_text() == "1234\n"

    first.release()
    assert lock_is_held(path) is False
    with second:
        assert second.held
    assert not second.held


def test_file_lock_is_not_held_in_a_forked_child(tmp_path: Path) -> None:
    lock = FileLock(tmp_path / "held.lock")
    assert lock.acquire()
    read, write = os.pipe()
    pid = os.fork()
    if pid == 0:  # pragma: no cover - the child reports through the pipe
        os.write(write, b"1" if lock.held else b"0")
        os._exit(0)
    os.close(write)
    os.waitpid(pid, 0)
    assert os.read(read, 1) == b"0"
    os.close(read)
    assert lock.held
    lock.release()


def test_queue_names_that_escape_the_folder_are_refused(
    folders: BrokerFolders,
) -> None:
    queue = FolderQueue(folders)
    for bad in ("", "..", "a/b", "x\0"):
        with pytest.raises(ValueError, match="invalid queue name"):
            queue.put(bad, payload("t", bad))
    assert not list(folders.inbox.iterdir())
    assert not list(folders.tmp.iterdir())
