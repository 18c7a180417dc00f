"""Bad files, full disks, foreign folders: refused or set aside, never a crash."""

from __future__ import annotations

import base64
import json
import os
import random
import shutil
import stat
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path
from typing import Any, Callable

import pytest

from dvc_task.app import FSApp
from dvc_task.exceptions import UnsafeFolderError
from dvc_task.proc import ProcessManager

from conftest import HELPERS, Processes, lines

sys.path.insert(0, str(HELPERS))
from taskapp import make_app


def mutations(good: dict[str, Any], rng: random.Random) -> Iterator[bytes]:
    """Bad variants of a good message file, endlessly."""
    raw = json.dumps(good).encode()
    wrong = [None, 0, -1, 10**40, 1.5, True, "", "x" * 100_000, [], {}, [1], {"a": 1}]
    while True:
        kind = rng.randrange(6)
        if kind == 0:
            yield rng.randbytes(rng.randrange(0, 2000))
        elif kind == 1:
            yield raw[: rng.randrange(0, len(raw))]
        elif kind == 2:
            key = rng.choice(
                ["properties", "body", "headers", "content-type", "content-encoding"]
            )
            yield json.dumps({**good, key: rng.choice(wrong)}).encode()
        elif kind == 3:
            props = dict(good["properties"])
            props[rng.choice(["delivery_tag", "delivery_info", "body_encoding"])] = (
                rng.choice(wrong)
            )
            yield json.dumps({**good, "properties": props}).encode()
        elif kind == 4:
            body = base64.b64decode(good["body"])
            yield json.dumps(
                {
                    **good,
                    "body": base64.b64encode(
                        body[: rng.randrange(len(body))] + rng.randbytes(8)
                    ).decode()[:-1],
                }
            ).encode()
        else:
            yield json.dumps(rng.choice(wrong)).encode()


def test_fuzzed_message_files_are_quarantined_and_good_jobs_run(
    wdir: Path,
    processes: Processes,
    tmp_path: Path,
    full: bool,
    figures: dict[str, Any],
) -> None:
    rng = random.Random(11)
    count = 400 if full else 60
    app = make_app(str(wdir))
    done = tmp_path / "done"
    inbox = wdir / "broker" / "in"
    app.send_task("record", args=[str(done), "template"])
    (template,) = inbox.iterdir()
    good = json.loads(template.read_text())
    template.unlink()
    for i, data in zip(range(count), mutations(good, rng)):
        (inbox / f"{i}_{i}.celery.msg").write_bytes(data)
        app.send_task("record", args=[str(done), f"good{i}"])
    old = 1_000_000_000
    for path in inbox.iterdir():
        if path.stat().st_size == 0:
            os.utime(path, (old, old))  # an empty file older than the 0.40 grace

    log = tmp_path / "worker.log"
    assert processes.worker(wdir, log=log).wait(timeout=300) == 0

    ran = lines(done)
    assert sorted(x for x in ran if x.startswith("good")) == sorted(
        f"good{i}" for i in range(count)
    )
    quarantined = os.listdir(wdir / "broker" / "quarantine")
    executed_bad = {line for line in lines(done) if not line.startswith("good")}
    # Mutations that happen to stay valid run like any job (or are refused
    # by Celery); the rest are set aside, one log line each.
    text = log.read_text()
    for name in quarantined:
        assert text.count(f"{inbox / name}'") == 1, name
    assert "Traceback" not in text.replace("Received invalid task message", "")
    assert not list(inbox.iterdir())
    figures["fuzzed_messages"] = {
        "bad_inputs": count,
        "quarantined": len(quarantined),
        "ran_anyway": len(executed_bad),
        "refused_by_celery": count - len(quarantined) - len(executed_bad),
        "good_jobs_lost": 0,
        "worker_crashes": 0,
    }


def test_fuzzed_process_records_and_names_never_break_a_listing(
    tmp_path: Path, full: bool, figures: dict[str, Any]
) -> None:
    rng = random.Random(5)
    count = 300 if full else 40
    root = tmp_path / "procs"
    manager = ProcessManager(root)
    with_good = []
    for i in range(count):
        folder = root / f"p{i}"
        folder.mkdir(parents=True, mode=0o700)
        data = rng.choice(
            [
                rng.randbytes(rng.randrange(0, 300)),
                json.dumps({"pid": rng.choice([0, -5, 1, 2**70, "12", None])}).encode(),
                json.dumps(
                    {"pid": 4242, "returncode": rng.choice(["x", [], 1.5])}
                ).encode(),
                json.dumps(
                    {"pid": 4242, "returncode": 0, "extra": {"nested": [1]}}
                ).encode(),
            ]
        )
        (folder / f"p{i}.json").write_bytes(data)
        (folder / f"p{i}.pid").write_bytes(rng.randbytes(10))
        (folder / f"p{i}.meta.json").write_bytes(rng.randbytes(rng.randrange(50)))
        if b'"extra"' in data:
            with_good.append(f"p{i}")
    listed = [name for name, _ in manager.processes()]
    assert sorted(listed) == sorted(with_good)
    for name in ["..", "a/../b", "x\0y", "\\", "..evil"]:
        with pytest.raises(ValueError, match="invalid process name"):
            manager[name]
    figures["fuzzed_process_records"] = {
        "bad_inputs": count - len(with_good),
        "crashes": 0,
    }


def test_garbage_in_the_reserved_folder_does_not_stop_the_worker(
    wdir: Path, processes: Processes, tmp_path: Path
) -> None:
    app = make_app(str(wdir))
    done = tmp_path / "done"
    reserved = wdir / "broker" / "reserved"
    (reserved / "a-file").write_bytes(b"junk")
    (reserved / "no-lock").mkdir()
    (reserved / "lock-is-a-dir" / ".lock").mkdir(parents=True)
    app.send_task("record", args=[str(done), "ok"])
    (wdir / "broker" / "worker-celery@w1.lock").write_bytes(os.urandom(64))

    assert processes.worker(wdir).wait(timeout=120) == 0

    assert lines(done) == ["ok"]
    assert not (reserved / "no-lock").exists()


@pytest.fixture
def small_disk(tmp_path: Path) -> Iterator[Path]:
    mount = tmp_path / "small"
    mount.mkdir()
    try:
        subprocess.run(
            ["mount", "-t", "tmpfs", "-o", "size=600k,mode=0700", "tmpfs", str(mount)],
            check=True,
            capture_output=True,
        )
    except (OSError, subprocess.CalledProcessError) as exc:
        pytest.skip(
            f"cannot mount a small tmpfs here (needs root): {exc}; unchecked: "
            "publishing onto a full disk fails clearly and loses nothing"
        )
    try:
        yield mount
    finally:
        subprocess.run(["umount", "-l", str(mount)], check=False)


def test_publishing_onto_a_full_disk_fails_clearly_and_loses_nothing(
    small_disk: Path,
) -> None:
    app = FSApp("full", wdir=small_disk / "q", mkdir=True)
    sent = []
    error = None
    for i in range(1000):
        try:
            sent.append(app.send_task("any", args=["x" * 40_000, i]).id)
        except OSError as exc:
            error = exc
            break
    assert error is not None, "the small disk never filled up"
    assert "No space left" in str(error)
    assert "nothing was queued" in str(error)

    assert [m.headers["id"] for m in app.iter_queued()] == sent
    assert not os.listdir(small_disk / "q" / "broker" / "tmp")
    assert not os.listdir(small_disk / "q" / "broker" / "quarantine")


def test_everything_created_is_private(
    wdir: Path, processes: Processes, tmp_path: Path
) -> None:
    app = make_app(str(wdir))
    procs = tmp_path / "procs"
    manager = ProcessManager(procs)
    manager.run_signature(["echo", "hi"], name="job").delay()
    app.send_task("record", args=[str(tmp_path / "done"), "x"])
    assert processes.worker(wdir).wait(timeout=120) == 0

    for top in (wdir / "broker", wdir / "result", procs):
        for path in [top, *top.rglob("*")]:
            mode = stat.S_IMODE(path.lstat().st_mode)
            if path.is_dir():
                assert mode == 0o700, path
            elif top != wdir / "result":  # Celery's own result files
                assert mode == 0o600, path


@pytest.mark.parametrize("what", ["queue", "procs"])
def test_folder_of_another_user_is_refused(tmp_path: Path, what: str) -> None:
    folder = tmp_path / what
    folder.mkdir(mode=0o700)
    if what == "queue":
        FSApp("x", wdir=folder, mkdir=True)
        target = folder / "broker" / "in"
    else:
        target = folder
    try:
        os.chown(target, 65534, 65534)
    except PermissionError:
        pytest.skip(
            "changing a folder's owner needs root; unchecked: a queue or process "
            "folder of another user is refused"
        )

    def use() -> object:
        if what == "queue":
            return FSApp("x", wdir=folder, mkdir=True)
        return ProcessManager(folder)

    with pytest.raises(UnsafeFolderError, match="owned by uid 65534") as excinfo:
        use()
    assert "chown" in str(excinfo.value)


def test_world_writable_process_folder_is_refused(
    tmp_path: Path, umask: Callable[[int], int]
) -> None:
    umask(0o022)  # the user's umask never makes world-writable folders
    folder = tmp_path / "procs"
    folder.mkdir()
    folder.chmod(0o777)
    with pytest.raises(UnsafeFolderError, match="chmod 700"):
        ProcessManager(folder)
    shutil.rmtree(folder)
