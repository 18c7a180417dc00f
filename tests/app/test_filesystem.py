"""FSApp: listing, rejecting, purging and cleaning messages without a worker."""

from __future__ import annotations

import os
import pickle
import stat
import sys
from datetime import datetime, timedelta, timezone
from pathlib import Path
from typing import Callable

import pytest

from dvc_task.app import FSApp
from dvc_task.app.filesystem import _get_fs_config
from dvc_task.exceptions import DvcTaskError, UnsafeFolderError
from dvc_task.proc import ProcessManager

from conftest import HELPERS, Processes, lines, wait_for

sys.path.insert(0, str(HELPERS))
from taskapp import make_app


def items(messages: object) -> list[str]:
    return [m.decode()[0][-1] for m in messages]  # type: ignore[attr-defined]


def test_fs_config_names_the_040_folders(tmp_path: Path) -> None:
    config = _get_fs_config(str(tmp_path), mkdir=True)

    options = config["broker_transport_options"]
    assert options["data_folder_in"] == str(tmp_path / "broker" / "in")
    assert options["data_folder_out"] == options["data_folder_in"]
    assert options["processed_folder"] == str(tmp_path / "broker" / "processed")
    assert options["control_folder"] == str(tmp_path / "broker" / "control")
    assert config["result_backend"] == f"file://{tmp_path / 'result'}"
    assert config["accept_content"] == ["json"]
    for name in ("in", "processed", "control", "reserved", "quarantine", "tmp"):
        mode = (tmp_path / "broker" / name).stat().st_mode
        assert stat.S_IMODE(mode) == 0o700


def test_app_defaults_to_current_folder_and_survives_pickling(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.chdir(tmp_path)
    app = FSApp("x", mkdir=True)
    assert app.wdir == str(tmp_path)

    clone = pickle.loads(pickle.dumps(app))

    assert isinstance(clone, FSApp)
    assert clone.wdir == app.wdir
    assert clone.conf.broker_transport_options == app.conf.broker_transport_options


def test_reject_deletes_a_queued_message(wdir: Path) -> None:
    app = make_app(str(wdir))
    for i in range(3):
        app.send_task("record", args=["x", str(i)])
    tag = [m.delivery_tag for m in app.iter_queued()][1]

    app.reject(tag)

    assert items(app.iter_queued()) == ["0", "2"]
    with pytest.raises(ValueError, match="not found"):
        app.reject(tag)


def test_reject_works_without_a_prior_listing(wdir: Path) -> None:
    app = make_app(str(wdir))
    app.send_task("record", args=["x", "0"])
    tag = next(make_app(str(wdir)).iter_queued()).delivery_tag

    app.reject(tag)

    assert list(app.iter_queued()) == []


def test_purge_deletes_a_processed_message(
    wdir: Path, processes: Processes, tmp_path: Path
) -> None:
    app = make_app(str(wdir))
    for i in range(2):
        app.send_task("record", args=[str(tmp_path / "done"), str(i)])
    processes.worker(wdir).wait(timeout=120)
    first, second = app.iter_processed()

    app.purge(first.delivery_tag)

    assert [m.delivery_tag for m in app.iter_processed()] == [second.delivery_tag]
    with pytest.raises(ValueError, match="not found"):
        app.purge(first.delivery_tag)
    with pytest.raises(ValueError, match="not found"):
        app.reject(second.delivery_tag)


def test_listings_never_lose_a_message_while_a_worker_settles_them(
    wdir: Path, processes: Processes, tmp_path: Path
) -> None:
    # DVC lists processed messages to find finished experiments: one being
    # acked (moved from its worker's claim to processed/) at that moment
    # must still be listed, and a queued one being taken must be in one of
    # the two listings.
    app = make_app(str(wdir), acks_late=True)
    count = 200
    for i in range(count):
        app.send_task("record", args=[str(tmp_path / "done"), str(i)])
    worker = processes.worker(wdir, acks_late=True)

    seen_taken = 0
    while seen_taken < count:
        queued = {m.delivery_tag for m in app.iter_queued()}
        taken = {m.delivery_tag for m in app.iter_processed()}
        assert len(taken) >= seen_taken, "a taken message dropped out of the listing"
        seen_taken = len(taken)
        assert len(queued) + len(taken) >= count, "a message is in neither listing"
        assert worker.poll() in (None, 0)
    assert worker.wait(timeout=120) == 0


def test_iter_queued_filters_by_queue(wdir: Path) -> None:
    app = make_app(str(wdir))
    app.send_task("record", args=["x", "a"], queue="other")
    app.send_task("record", args=["x", "b"])

    assert items(app.iter_queued()) == ["b"]
    assert items(app.iter_queued("other")) == ["a"]


def test_clean_removes_expired_messages_of_other_queues_only(wdir: Path) -> None:
    app = make_app(str(wdir))
    past = datetime.now(timezone.utc) - timedelta(seconds=1)
    app.send_task("record", args=["x", "kept"], expires=past)
    app.send_task("record", args=["x", "expired"], queue="other", expires=past)
    app.send_task("record", args=["x", "fresh"], queue="other", expires=3600)
    app.send_task("record", args=["x", "never"], queue="other")

    app.clean()

    assert items(app.iter_queued()) == ["kept"]
    assert items(app.iter_queued("other")) == ["fresh", "never"]


def test_clean_removes_stale_broadcast_replies(wdir: Path) -> None:
    app = make_app(str(wdir))
    app.send_task("record", args=["x", "kept"])
    with app.producer_or_acquire() as producer:
        # As if a client had died while waiting for replies: its reply queue
        # stays bound, and a late reply lands there for nobody.
        app.control.mailbox.reply_queue(producer.channel).declare()
        producer.publish(
            {"late": {"ok": "pong"}},
            exchange="reply.celery.pidbox",
            routing_key=app.control.mailbox.oid,
            serializer="json",
        )
    inbox = wdir / "broker" / "in"
    assert any(".reply.celery.pidbox.msg" in name for name in os.listdir(inbox))

    app.clean()

    assert [n.partition(".")[2] for n in os.listdir(inbox)] == ["celery.msg"]
    assert items(app.iter_queued()) == ["kept"]


def test_group_writable_queue_folder_is_refused(
    tmp_path: Path, umask: Callable[[int], int]
) -> None:
    umask(0o022)  # a group-writable folder is not what this user makes
    FSApp("x", wdir=tmp_path, mkdir=True)
    inbox = tmp_path / "broker" / "in"
    inbox.chmod(0o770)

    with pytest.raises(UnsafeFolderError, match="chmod 700") as excinfo:
        FSApp("x", wdir=tmp_path, mkdir=True)
    assert isinstance(excinfo.value, DvcTaskError)
    assert str(inbox) in str(excinfo.value)


def test_folders_are_private_whatever_the_umask(
    tmp_path: Path, umask: Callable[[int], int]
) -> None:
    umask(0o002)
    FSApp("x", wdir=tmp_path / "new" / "queue", mkdir=True)

    created = [tmp_path / "new", *(tmp_path / "new").rglob("*")]
    assert created
    for path in created:
        assert stat.S_IMODE(path.stat().st_mode) == 0o700, path


def test_folders_that_the_users_umask_made_group_writable_are_made_private(
    tmp_path: Path,
    umask: Callable[[int], int],
    caplog: pytest.LogCaptureFixture,
) -> None:
    # With umask 002 (per-user groups), 0.40 and DVC create 0775 folders:
    # they are the user's own, so they are made private, not refused.
    umask(0o002)
    queue = tmp_path / "queue"
    for name in ("in", "processed", "control"):
        os.makedirs(queue / "broker" / name)
    procs = tmp_path / "procs"
    os.makedirs(procs)

    app = FSApp("x", wdir=queue, mkdir=True)
    ProcessManager(procs)

    assert stat.S_IMODE(queue.joinpath("broker", "in").stat().st_mode) == 0o700
    assert stat.S_IMODE(procs.stat().st_mode) == 0o700
    assert not list(app.iter_queued())
    assert f"Made '{procs}' private" in caplog.text


def test_clean_copes_with_two_files_of_one_message(wdir: Path) -> None:
    app = make_app(str(wdir))
    past = datetime.now(timezone.utc) - timedelta(seconds=1)
    app.send_task("record", args=["x", "old"], queue="other", expires=past)
    inbox = wdir / "broker" / "in"
    (original,) = inbox.iterdir()
    (inbox / f"1_copy.{original.name.partition('.')[2]}").write_bytes(
        original.read_bytes()
    )

    app.clean()

    assert list(inbox.iterdir()) == []


def test_clean_sweeps_only_our_old_temporary_files(wdir: Path, tmp_path: Path) -> None:
    app = make_app(str(wdir))
    tmp = app.broker_folders.tmp
    outside = tmp_path / "outside"
    outside.mkdir()
    (outside / "precious").write_text("keep")
    torn = tmp / "1_abc.celery.msg.tmp"
    torn.write_text("{")
    (tmp / "notes.txt").write_text("not ours")
    (tmp / "folder.msg.tmp").mkdir()
    (tmp / "folder.msg.tmp" / "inside").write_text("keep")
    (tmp / "link.msg.tmp").symlink_to(outside / "precious")
    (tmp / "dirlink").symlink_to(outside)
    old = datetime.now().timestamp() - 3600
    for path in tmp.iterdir():
        os.utime(path, (old, old), follow_symlinks=False)

    app.clean()

    assert sorted(p.name for p in tmp.iterdir()) == [
        "dirlink",
        "folder.msg.tmp",
        "link.msg.tmp",
        "notes.txt",
    ]
    assert (outside / "precious").read_text() == "keep"
    assert (tmp / "folder.msg.tmp" / "inside").read_text() == "keep"


def test_listing_taken_then_waiting_never_misses_a_message_that_moved(
    wdir: Path, processes: Processes, tmp_path: Path
) -> None:
    # DVC lists the taken messages, then the waiting ones; a worker that
    # takes a message between the two listings must not make it vanish.
    app = make_app(str(wdir))
    started, release, done = tmp_path / "s", tmp_path / "r", tmp_path / "d"
    app.send_task("block", args=[str(started), str(release), str(done), "moved"])
    assert list(app.iter_processed()) == []
    processes.worker(wdir, acks_late=True)  # as DVC: taken until it is done
    try:
        wait_for(lambda: lines(started) == ["moved"], "the worker to take it")

        assert items(app.iter_queued()) == ["moved"]
        # A listing of waiting messages on its own has only those that wait.
        assert items(make_app(str(wdir)).iter_queued()) == []
        # A message a worker runs cannot be rejected as waiting.
        (msg,) = make_app(str(wdir)).iter_processed()
        with pytest.raises(ValueError, match="not found"):
            app.reject(msg.delivery_tag)
    finally:
        release.touch()
    wait_for(lambda: lines(done) == ["moved"], "the job to finish")


def test_existing_queue_folder_others_may_write_is_refused_without_mkdir(
    tmp_path: Path, umask: Callable[[int], int]
) -> None:
    umask(0o022)
    FSApp("x", wdir=tmp_path, mkdir=True)
    (tmp_path / "broker" / "in").chmod(0o777)

    with pytest.raises(UnsafeFolderError, match="everyone may write"):
        FSApp("x", wdir=tmp_path)


def test_world_writable_folder_is_refused_even_with_umask_000(
    tmp_path: Path, umask: Callable[[int], int]
) -> None:
    umask(0o000)
    procs = tmp_path / "procs"
    procs.mkdir()
    procs.chmod(0o777)

    with pytest.raises(UnsafeFolderError, match="everyone may write"):
        ProcessManager(procs)
    assert stat.S_IMODE(procs.stat().st_mode) == 0o777


@pytest.mark.skipif(
    os.getuid() != 0,
    reason="needs root to give a folder another group: the refusal of a folder "
    "that a shared group may write is not checked here",
)
def test_folder_writable_by_a_shared_group_is_refused(
    tmp_path: Path, umask: Callable[[int], int]
) -> None:
    # With umask 002 a group-writable folder is made private only when the
    # group is the user's own; members of a shared one may have put files in.
    umask(0o002)
    procs = tmp_path / "procs"
    procs.mkdir()
    procs.chmod(0o775)
    os.chown(procs, -1, 12345)  # a group that is not the user's own

    with pytest.raises(UnsafeFolderError, match="a group you share"):
        ProcessManager(procs)
    assert stat.S_IMODE(procs.stat().st_mode) == 0o775
