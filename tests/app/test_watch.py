"""Waking an idle worker: inotify where available, stat polling everywhere."""

from __future__ import annotations

import os
import subprocess
import sys
import threading
import time
from pathlib import Path

import pytest

from dvc_task.watch import FolderWaiter

from conftest import HELPERS, Processes, lines, wait_for

sys.path.insert(0, str(HELPERS))
from taskapp import make_app


@pytest.mark.parametrize("use_inotify", [True, False])
def test_waiter_returns_when_a_file_is_added(tmp_path: Path, use_inotify: bool) -> None:
    # A folder changed in the last clock tick or so counts as changed.
    os.utime(tmp_path, (time.time() - 3600, time.time() - 3600))
    waiter = FolderWaiter(tmp_path, 0.005, use_inotify=use_inotify)
    try:
        if sys.platform.startswith("linux"):
            assert waiter.uses_inotify == use_inotify
        assert not waiter.wait(0.05)
        writer = threading.Timer(0.1, (tmp_path / "new.msg").touch)
        writer.start()
        assert waiter.wait(60)
        writer.join()
    finally:
        waiter.close()


@pytest.mark.parametrize("use_inotify", [True, False])
def test_poke_ends_a_wait_from_another_thread(
    tmp_path: Path, use_inotify: bool
) -> None:
    waiter = FolderWaiter(tmp_path, 0.005, use_inotify=use_inotify)
    try:
        poker = threading.Timer(0.1, waiter.poke)
        poker.start()
        assert waiter.wait(60)
        poker.join()
    finally:
        waiter.close()


def test_idle_worker_without_inotify_runs_new_jobs(
    wdir: Path, processes: Processes, tmp_path: Path
) -> None:
    app = make_app(str(wdir))
    done = tmp_path / "done"
    app.send_task("record", args=[str(done), "first"])
    worker = processes.worker(wdir, folder_watch="stat", timeout=60)
    wait_for(lambda: lines(done) == ["first"], "the first job")

    app.send_task("record", args=[str(done), "second"])

    wait_for(
        lambda: lines(done) == ["first", "second"], "a job queued to the idle worker"
    )
    assert worker.poll() is None


def test_waiter_works_with_descriptors_above_1024(tmp_path: Path) -> None:
    # A long-lived host program may already hold a thousand files open.
    program = """
import os, resource, sys, threading
from pathlib import Path
from dvc_task.watch import FolderWaiter
soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
resource.setrlimit(resource.RLIMIT_NOFILE, (min(hard, 4096), hard))
held = [os.open(os.devnull, os.O_RDONLY) for _ in range(1100)]
folder = Path(sys.argv[1])
waiter = FolderWaiter(folder, 0.005)
assert waiter.uses_inotify
writer = threading.Timer(0.1, (folder / "new.msg").touch)
writer.start()
assert waiter.wait(60)
print("woken")
"""
    done = subprocess.run(
        [sys.executable, "-c", program, str(tmp_path)],
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
    )
    assert done.returncode == 0, done.stderr
    assert done.stdout == "woken\n"


def test_waiter_watches_a_folder_again_after_it_is_made_anew(tmp_path: Path) -> None:
    folder = tmp_path / "in"
    folder.mkdir()
    waiter = FolderWaiter(folder, 0.005)
    try:
        folder.rmdir()
        assert waiter.wait(60)  # the folder went away
        folder.mkdir()
        wait_for(lambda: waiter.wait(0.05) and waiter.uses_inotify, "a new watch")
        assert not waiter.wait(0.05)

        writer = threading.Timer(0.1, (folder / "new.msg").touch)
        writer.start()
        started = time.monotonic()
        assert waiter.wait(30)
        writer.join()
        # Woken by the new watch, not by the end of the wait.
        assert time.monotonic() - started < 10
    finally:
        waiter.close()
