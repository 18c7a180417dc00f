"""The dvcfs:// transport: atomic, crash-safe, private, compatible with 0.40."""

from __future__ import annotations

import base64
import json
import os
import signal
import stat
import statistics
import subprocess
import sys
import time
import uuid
from pathlib import Path

import pytest
from kombu import Connection

from dvc_task.app import FSApp
from dvc_task.watch import FolderWaiter

from conftest import HELPERS, Processes, lines, wait_for

sys.path.insert(0, str(HELPERS))
from taskapp import make_app


def broker_files(wdir: Path, folder: str) -> list[Path]:
    return sorted((wdir / "broker" / folder).rglob("*.msg"))


def test_published_message_is_whole_and_private(wdir: Path) -> None:
    app = make_app(str(wdir))

    app.send_task("record", args=["x", "1"])

    (msg,) = broker_files(wdir, "in")
    assert stat.S_IMODE(msg.stat().st_mode) == 0o600
    assert json.loads(msg.read_text())["headers"]["task"] == "record"
    assert not list((wdir / "broker" / "tmp").iterdir())
    for folder in (wdir / "broker").iterdir():
        if folder.is_dir():
            assert stat.S_IMODE(folder.stat().st_mode) == 0o700, folder
    assert stat.S_IMODE((wdir / "broker").stat().st_mode) == 0o700
    assert stat.S_IMODE((wdir / "result").stat().st_mode) == 0o700


def test_reader_never_sees_a_partial_message(wdir: Path, processes: Processes) -> None:
    make_app(str(wdir))
    producer = processes.start(
        sys.executable,
        "-c",
        "import sys; from taskapp import make_app; app = make_app(sys.argv[1]);"
        "[app.send_task('record', args=['x' * 200_000, str(i)]) for i in range(200)]",
        wdir,
    )
    inbox = wdir / "broker" / "in"
    seen: set[str] = set()
    while producer.poll() is None or len(seen) < 200:
        for name in os.listdir(inbox):
            if name in seen:
                continue
            data = (inbox / name).read_bytes()
            json.loads(data)  # a partial file would fail here
            seen.add(name)
        if producer.poll() not in (None, 0):
            pytest.fail("producer failed")
    assert len(seen) == 200


def test_messages_of_one_queue_come_out_in_publish_order(wdir: Path) -> None:
    app = make_app(str(wdir))
    for i in range(30):
        app.send_task("record", args=["x", str(i)], queue="a" if i % 2 else "b")

    with app.connection_for_read() as conn:
        channel = conn.channel()
        got = []
        while (message := channel.basic_get("a")) is not None:
            got.append(message.decode()[0][1])
            message.ack()
    assert got == [str(i) for i in range(1, 30, 2)]
    assert [m.decode()[0][1] for m in app.iter_queued("b")] == [
        str(i) for i in range(0, 30, 2)
    ]


@pytest.mark.parametrize("acks_late", [False, True])
def test_killed_worker_does_not_lose_prefetched_message(
    wdir: Path, processes: Processes, tmp_path: Path, acks_late: bool
) -> None:
    app = make_app(str(wdir))
    started, release, done = (
        tmp_path / "started",
        tmp_path / "release",
        tmp_path / "done",
    )
    app.send_task("block", args=[str(started), str(release), str(done), "a"])
    app.send_task("record", args=[str(done), "b"])
    worker = processes.worker(wdir, prefetch_multiplier=4, acks_late=acks_late)
    wait_for(lambda: lines(started) == ["a"], "job a to start")
    wait_for(lambda: not list(app.iter_queued()), "job b to be claimed by the worker")
    assert len(list(app.iter_processed())) == 2

    os.killpg(worker.pid, signal.SIGKILL)
    worker.wait()

    expect_queued = ["a", "b"] if acks_late else ["b"]
    assert [m.decode()[0][-1] for m in app.iter_queued()] == expect_queued
    release.touch()
    processes.worker(wdir, name="w2", acks_late=acks_late).wait(timeout=120)
    expected = ["a", "b"] if acks_late else ["b"]
    assert sorted(lines(done)) == expected
    assert not broker_files(wdir, "reserved")


@pytest.mark.parametrize(
    "mode", ["claim-and-wait", "claim-and-exit", "claim-and-exit-norestore"]
)
def test_claimed_message_returns_to_queue_when_consumer_dies_or_leaves(
    wdir: Path, processes: Processes, tmp_path: Path, mode: str
) -> None:
    app = make_app(str(wdir))
    done = tmp_path / "done"
    app.send_task("record", args=[str(done), "a"])
    consumer = processes.start(
        sys.executable, HELPERS / "consumer.py", wdir, mode, stdout=subprocess.PIPE
    )
    assert consumer.stdout is not None
    tag = consumer.stdout.readline().decode().strip()
    assert tag
    if mode == "claim-and-wait":
        assert not list(app.iter_queued())
        os.kill(consumer.pid, signal.SIGKILL)
    consumer.wait(timeout=60)

    assert [m.delivery_tag for m in app.iter_queued()] == [tag]
    processes.worker(wdir).wait(timeout=120)
    assert lines(done) == ["a"]
    assert not broker_files(wdir, "reserved")


def test_two_workers_run_each_message_once(
    wdir: Path, processes: Processes, tmp_path: Path
) -> None:
    app = make_app(str(wdir))
    done = tmp_path / "done"
    for i in range(300):
        # 5 ms each: long enough that the queue outlasts the second start.
        app.send_task("record_by", args=[str(done), str(i), 5])

    workers = [processes.worker(wdir, name=f"w{n}") for n in range(2)]
    for worker in workers:
        assert worker.wait(timeout=180) == 0

    ran = [line.split(" ") for line in done.read_text().splitlines()]
    assert sorted((item for item, _ in ran), key=int) == [str(i) for i in range(300)]
    assert {host for _, host in ran} == {"celery@w0", "celery@w1"}
    assert not list(app.iter_queued())
    assert len(list(app.iter_processed())) == 300


def test_competing_consumers_each_get_a_message_exactly_once(
    wdir: Path, processes: Processes, tmp_path: Path
) -> None:
    app = make_app(str(wdir))
    for i in range(400):
        app.send_task("record", args=["x", str(i)])
    tags = {m.delivery_tag for m in app.iter_queued()}
    go = tmp_path / "go"
    consumers = [
        processes.start(
            sys.executable,
            HELPERS / "consumer.py",
            wdir,
            "drain",
            go,
            stdout=subprocess.PIPE,
        )
        for _ in range(4)
    ]
    for consumer in consumers:
        assert consumer.stdout is not None
        assert consumer.stdout.readline() == b"ready\n"

    go.touch()
    outputs = [c.communicate(timeout=120)[0].decode().split() for c in consumers]

    taken = [tag for output in outputs for tag in output]
    assert sorted(taken) == sorted(tags)
    assert len(list(app.iter_processed())) == 400
    assert not broker_files(wdir, "reserved")


def write_040_message(inbox: Path, task: str, args: list[str]) -> str:
    """Write a message file the way dvc-task 0.40 (Kombu's stock transport) did."""
    task_id = str(uuid.uuid4())
    body = json.dumps(
        [args, {}, {"callbacks": None, "errbacks": None, "chain": None, "chord": None}]
    )
    payload = {
        "body": base64.b64encode(body.encode()).decode(),
        "content-encoding": "utf-8",
        "content-type": "application/json",
        "headers": {
            "lang": "py",
            "task": task,
            "id": task_id,
            "root_id": task_id,
            "parent_id": None,
            "group": None,
            "retries": 0,
            "timelimit": [None, None],
            "eta": None,
            "expires": None,
            "argsrepr": repr(args),
            "kwargsrepr": "{}",
            "origin": "gen1@old",
        },
        "properties": {
            "correlation_id": task_id,
            "reply_to": str(uuid.uuid4()),
            "delivery_mode": 2,
            "delivery_info": {"exchange": "", "routing_key": "celery"},
            "priority": 0,
            "body_encoding": "base64",
            "delivery_tag": str(uuid.uuid4()),
        },
    }
    name = f"{int(time.monotonic() * 1000)}_{uuid.uuid4()}.celery.msg"
    with open(inbox / name, "wb") as fobj:
        fobj.write(json.dumps(payload).encode())
    return task_id


def test_message_written_by_dvc_task_040_is_run(
    wdir: Path, processes: Processes, tmp_path: Path
) -> None:
    app = make_app(str(wdir))
    done = tmp_path / "done"
    task_id = write_040_message(wdir / "broker" / "in", "record", [str(done), "old"])

    assert [m.headers["id"] for m in app.iter_queued()] == [task_id]
    processes.worker(wdir).wait(timeout=120)
    assert lines(done) == ["old"]
    (processed,) = app.iter_processed()
    assert processed.headers["id"] == task_id


@pytest.mark.parametrize("priority", [None, 5])
def test_message_we_write_is_read_by_kombu_stock_transport(
    wdir: Path, priority: int | None
) -> None:
    # dvc-task 0.40 used the stock transport: a prioritised message (its
    # priority in the file name) is still one to it.
    app = make_app(str(wdir))
    result = app.send_task("record", args=["x", "new"], priority=priority)
    (path,) = broker_files(wdir, "in")
    assert ("_p5_" in path.name) == (priority == 5)

    options = dict(app.conf.broker_transport_options)
    with Connection("filesystem://", transport_options=options) as conn:
        message = conn.channel().basic_get("celery")
    assert message.headers["id"] == result.id
    assert message.decode()[0] == ["x", "new"]


def test_bad_message_files_are_quarantined_and_good_ones_still_run(
    wdir: Path, processes: Processes, tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    app = make_app(str(wdir))
    inbox = wdir / "broker" / "in"
    done = tmp_path / "done"
    app.send_task("record", args=[str(done), "good"])
    (good_file,) = broker_files(wdir, "in")
    good = json.loads(good_file.read_text())
    bad = {
        "1_garbage.celery.msg": b"\x00\xffnot json at all",
        "2_truncated.celery.msg": json.dumps(good).encode()[:100],
        "3_list.celery.msg": b"[1, 2, 3]",
        "4_noprops.celery.msg": json.dumps({**good, "properties": "x"}).encode(),
        "5_pickle.celery.msg": json.dumps(
            {**good, "content-type": "application/x-python-serialize"}
        ).encode(),
        "6_badbody.celery.msg": json.dumps({**good, "body": "%%%not base64"}).encode(),
        "7_empty.celery.msg": b"",
    }
    for name, data in bad.items():
        (inbox / name).write_bytes(data)
    old = time.time() - 3600
    os.utime(inbox / "7_empty.celery.msg", (old, old))

    with caplog.at_level("WARNING"):
        queued = [m.decode()[0][1] for m in app.iter_queued()]
    assert queued == ["good"]
    quarantined = wdir / "broker" / "quarantine"
    assert sorted(os.listdir(quarantined)) == sorted(bad)
    for name in bad:
        assert any(name in r.getMessage() for r in caplog.records), name

    for name, data in bad.items():
        (quarantined / name).unlink()
        (inbox / name).write_bytes(data)
        os.utime(inbox / name, (old, old))
    log = tmp_path / "worker.log"
    assert processes.worker(wdir, log=log).wait(timeout=120) == 0
    assert lines(done) == ["good"]
    assert sorted(os.listdir(quarantined)) == sorted(bad)
    text = log.read_text()
    for name in bad:
        assert f"Quarantined message file '{inbox / name}'" in text


def test_young_empty_file_is_left_for_its_040_writer(wdir: Path) -> None:
    app = make_app(str(wdir))
    inbox = wdir / "broker" / "in"
    (inbox / "1_writing.celery.msg").write_bytes(b"")

    assert list(app.iter_queued()) == []

    assert (inbox / "1_writing.celery.msg").exists()
    assert not os.listdir(wdir / "broker" / "quarantine")


def test_queue_names_that_escape_the_folder_are_refused(wdir: Path) -> None:
    app = make_app(str(wdir))
    with pytest.raises(Exception, match="invalid queue name"):
        app.send_task("record", args=["x", "y"], queue="../../evil")
    assert not list((wdir / "broker" / "in").iterdir())
    assert not (wdir / "evil.msg").exists()


def test_full_listing_does_not_crash_on_vanishing_files(wdir: Path) -> None:
    app = make_app(str(wdir))
    for i in range(20):
        app.send_task("record", args=["x", str(i)])
    listing = app.iter_queued()
    first = next(listing)
    for path in broker_files(wdir, "in")[5:]:
        path.unlink()
    rest = list(listing)
    assert first.decode()[0][1] == "0"
    assert [msg.decode()[0][1] for msg in rest] == ["1", "2", "3", "4"]


def test_publishing_without_the_queue_folders_says_how_to_create_them(
    tmp_path: Path,
) -> None:
    (tmp_path / "q" / "result").mkdir(parents=True)  # but no broker folders
    app = FSApp("x", wdir=tmp_path / "q")

    with pytest.raises(OSError, match=r"mkdir=True") as excinfo:
        app.send_task("record", args=["x", "1"])

    assert "nothing was queued" in str(excinfo.value)


def test_young_empty_file_does_not_make_an_idle_worker_churn(
    wdir: Path, processes: Processes, tmp_path: Path
) -> None:
    app = make_app(str(wdir))
    inbox = wdir / "broker" / "in"
    done = tmp_path / "done"
    write_040_message(inbox, "record", [str(done), "late"])
    (message,) = inbox.iterdir()
    content = message.read_bytes()
    message.write_bytes(b"")  # a 0.40 producer has created it, not written it
    worker = processes.worker(wdir, timeout=30)
    waiter = FolderWaiter(inbox, 0.005)
    try:
        wakes = 0
        deadline = time.monotonic() + 1.5
        while (left := deadline - time.monotonic()) > 0:
            wakes += waiter.wait(left)
    finally:
        waiter.close()

    # Claiming it and putting it back would move it hundreds of times.
    assert wakes <= 2
    message.write_bytes(content)
    wait_for(lambda: lines(done), "the message once written")
    assert worker.poll() is None
    assert not list(app.iter_queued())


def test_a_message_delivered_again_after_a_crash_says_so(
    wdir: Path, processes: Processes, tmp_path: Path
) -> None:
    app = make_app(str(wdir))
    started, release, done = (
        tmp_path / "started",
        tmp_path / "release",
        tmp_path / "done",
    )
    app.send_task("block", args=[str(started), str(release), str(tmp_path / "x"), "a"])
    app.send_task("redelivered", args=[str(done), "claimed"])
    worker = processes.worker(wdir, prefetch_multiplier=4)
    wait_for(lambda: lines(started) == ["a"], "job a to start")
    wait_for(lambda: not list(app.iter_queued()), "the second job to be claimed")
    os.killpg(worker.pid, signal.SIGKILL)
    worker.wait()
    app.send_task("redelivered", args=[str(done), "fresh"])
    release.touch()

    processes.worker(wdir, name="w2").wait(timeout=120)

    assert sorted(lines(done)) == ["claimed:True", "fresh:False"]


def started(path: Path, item: str) -> float | None:
    """When job ``item`` started, from the stamps file (None: not yet)."""
    for line in path.read_text().splitlines():
        name, _, when = line.partition(" ")
        if name == item:
            return float(when)
    return None


@pytest.mark.parametrize("folder_watch", ["auto", "stat"])
def test_idle_worker_starts_a_new_job_within_milliseconds(
    wdir: Path, processes: Processes, tmp_path: Path, folder_watch: str
) -> None:
    app = make_app(str(wdir))
    starts = tmp_path / "starts"
    processes.worker(wdir, timeout=60, folder_watch=folder_watch)
    app.send_task("stamp_start", args=[str(starts), "warm"])
    wait_for(lambda: lines(starts), "the worker to run a first job")

    delays = []
    for i in range(20):
        sent = time.time()
        app.send_task("stamp_start", args=[str(starts), str(i)])
        found = wait_for(
            lambda i=i: [
                line
                for line in starts.read_text().splitlines()
                if line.split()[0] == str(i)
            ],
            f"job {i} to start",
        )
        delays.append(float(found[0].split()[1]) - sent)

    # A few milliseconds on an idle machine; a worker that polls once a
    # second would take about half a second.
    assert statistics.median(delays) < 0.1, delays
