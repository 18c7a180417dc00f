"""Links and FIFOs planted where we open files: never followed, never blocking.

Each test plants a symlink to a victim file outside our folders, or a FIFO,
at a path we open, runs the operations that open it, and checks that the
victim's content, mode and existence are unchanged and nothing hangs.
"""

from __future__ import annotations

import os
import shutil
import stat
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest

from dvc_task.app.broker import BrokerFolders
from dvc_task.app.folderqueue import FolderQueue
from dvc_task.files import FileLock, NotARegularFileError, lock_is_held
from dvc_task.folders import make_private_folder
from dvc_task.proc import ManagedProcess, ProcessManager
from dvc_task.proc.exceptions import InvalidProcessInfoError

from conftest import Cli, wait_finished

VICTIM_TEXT = "precious\n"


@pytest.fixture
def victim(tmp_path: Path) -> Path:
    path = tmp_path / "outside" / "victim.txt"
    path.parent.mkdir()
    path.write_text(VICTIM_TEXT)
    path.chmod(0o600)
    return path


def assert_untouched(victim: Path) -> None:
    assert victim.read_text() == VICTIM_TEXT
    assert stat.S_IMODE(victim.stat().st_mode) == 0o600


@pytest.fixture
def folders(tmp_path: Path) -> BrokerFolders:
    found = BrokerFolders.from_options({"data_folder_in": str(tmp_path / "b" / "in")})
    for path in found.all():
        make_private_folder(path)
    return found


def test_message_that_is_a_link_is_quarantined_not_read(
    folders: BrokerFolders, victim: Path
) -> None:
    link = folders.inbox / "1_link.celery.msg"
    link.symlink_to(victim)
    queue = FolderQueue(folders)

    assert queue.claim(link.name) is None

    assert [p.name for p in folders.quarantine.iterdir()] == [link.name]
    assert (folders.quarantine / link.name).is_symlink()
    assert_untouched(victim)


def test_message_that_is_a_fifo_is_quarantined_without_blocking(
    folders: BrokerFolders,
) -> None:
    fifo = folders.inbox / "1_fifo.celery.msg"
    os.mkfifo(fifo, 0o600)
    # In a child with a deadline: a blocking open would hang the test.
    code = (
        "import sys\n"
        "from dvc_task.app.broker import BrokerFolders\n"
        "from dvc_task.app.folderqueue import FolderQueue\n"
        "f = BrokerFolders.from_options({'data_folder_in': sys.argv[1]})\n"
        "q = FolderQueue(f)\n"
        "for _ in range(3):\n"
        "    assert q.claim(sys.argv[2]) is None\n"
    )
    subprocess.run(
        [sys.executable, "-c", code, str(folders.inbox), fifo.name],
        check=True,
        timeout=60,
    )

    assert [p.name for p in folders.quarantine.iterdir()] == [fifo.name]
    assert not list(folders.inbox.iterdir())


def test_lock_file_that_is_a_link_is_refused(tmp_path: Path, victim: Path) -> None:
    link = tmp_path / "w.lock"
    link.symlink_to(victim)

    with pytest.raises(NotARegularFileError):
        FileLock(link).acquire()
    assert lock_is_held(link) is False
    assert_untouched(victim)


def test_output_file_that_is_a_link_or_fifo_is_refused(
    tmp_path: Path, victim: Path
) -> None:
    for name, plant in (
        ("linked", lambda p: p.symlink_to(victim)),
        ("fifo", lambda p: os.mkfifo(p, 0o600)),
    ):
        wdir = tmp_path / name
        wdir.mkdir(mode=0o700)
        plant(wdir / f"{name}.out")
        proc = ManagedProcess(["echo", "written"], wdir=wdir, name=name)

        with pytest.raises(NotARegularFileError):
            proc.run()

        assert not (wdir / f"{name}.json").exists()  # nothing started
    assert_untouched(victim)


def test_process_folder_that_is_a_link_is_no_process(
    tmp_path: Path, victim: Path
) -> None:
    procs = tmp_path / "procs"
    real = procs / "real"
    with ManagedProcess(["true"], wdir=real, name="real"):
        pass
    elsewhere = victim.parent / "job"
    elsewhere.mkdir(mode=0o700)
    (elsewhere / "job.json").write_text((real / "real.json").read_text())
    (procs / "job").symlink_to(elsewhere)
    manager = ProcessManager(procs)
    record = (elsewhere / "job.json").read_text()

    assert manager.get("job") is None
    with pytest.raises(KeyError):
        manager["job"]
    with pytest.raises(ProcessLookupError):
        manager.kill("job")
    assert [name for name, _ in manager.processes()] == ["real"]
    manager.remove("job")

    assert (elsewhere / "job.json").read_text() == record
    assert_untouched(victim)


def test_record_that_is_a_link_is_reported_not_followed(
    tmp_path: Path, victim: Path, caplog: pytest.LogCaptureFixture
) -> None:
    procs = tmp_path / "procs"
    with ManagedProcess(["true"], wdir=procs / "job", name="job"):
        pass
    record = procs / "job" / "job.json"
    record.unlink()
    record.symlink_to(victim)
    manager = ProcessManager(procs)

    with pytest.raises(InvalidProcessInfoError, match="not a regular file"):
        manager["job"]
    assert list(manager.processes()) == []
    assert "not a regular file" in caplog.text
    assert_untouched(victim)


def test_runner_stopped_with_sigterm_stops_its_command_and_records_it(
    tmp_path: Path,
) -> None:
    ManagedProcess.spawn(["sleep", "60"], wdir=tmp_path / "job", name="job")
    manager = ProcessManager(tmp_path)
    info = manager["job"]
    assert info.runner_pid is not None  # never signal pid 0: our own group

    os.kill(info.runner_pid, 15)

    finished = wait_finished(manager, "job", "the runner to record the end")
    assert finished.returncode == -15
    assert not finished.command_alive()


def test_links_and_fifos_at_every_job_path_never_reach_a_file_outside(
    cli: Cli, victim: Path, figures: dict[str, Any]
) -> None:
    # Finished jobs, then every file of theirs replaced by a link to the
    # victim or by a FIFO, then every command that reads, lists or deletes.
    names = [f"j{i}" for i in range(4)]
    for name in names:
        cli("run", "--wait", "--name", name, "--", "echo", name)
    planted = 0
    targets = [
        (cli.folder / "jobs" / f"{names[0]}.json", "link"),
        (cli.folder / "procs" / names[1] / f"{names[1]}.out", "link"),
        (cli.folder / "procs" / names[2] / f"{names[2]}.json", "fifo"),
        (cli.folder / "procs" / names[3] / f"{names[3]}.out", "fifo"),
    ]
    for path, kind in targets:
        path.unlink()
        if kind == "link":
            path.symlink_to(victim)
        else:
            os.mkfifo(path, 0o600)
        planted += 1

    operations = [
        ("status",),
        ("status", "--json"),
        *(("logs", name) for name in names),
        *(("logs", "--tail", "1", name) for name in names),
        ("cleanup",),
        *(("rm", "--force", name) for name in names),
        ("status",),
    ]
    for args in operations:
        done = cli(*args, check=None, timeout=60)  # a hang fails here
        assert done.returncode in (0, 1, 2), (args, done.stderr)
        assert_untouched(victim)

    figures["planted_links_and_fifos"] = {
        "planted": planted,
        "operations": len(operations),
        "victim_changed": 0,
        "hangs": 0,
    }


def plant(path: Path, kind: str, victim: Path) -> None:
    """Put a link to ``victim`` (or its folder), or a FIFO, at ``path``."""
    if path.is_dir() and not path.is_symlink():
        raise AssertionError(f"{path} is a folder")
    path.unlink(missing_ok=True)
    if kind == "link":
        path.symlink_to(victim)
    elif kind == "folder link":
        path.symlink_to(victim.parent, target_is_directory=True)
    else:
        os.mkfifo(path, 0o600)


def outside_state(victim: Path) -> list[tuple[str, int, str]]:
    return sorted(
        (p.name, stat.S_IMODE(p.stat().st_mode), p.read_text())
        for p in victim.parent.iterdir()
    )


def test_links_and_fifos_at_queue_and_lock_paths_never_reach_a_file_outside(
    cli: Cli, victim: Path, figures: dict[str, Any]
) -> None:
    # Round 1: messages, process and worker files, a process folder that is a
    # link; a worker then runs a new job through them. Round 2: every lock
    # file and the job counter are links; the commands fail cleanly.
    cli("run", "--wait", "--name", "done", "--", "echo", "done")
    broker = cli.folder / "app" / "broker"
    before = outside_state(victim)
    worker = cli.folder / "workers" / "dvc-task-worker" / "dvc-task-worker"
    rounds = [
        (
            [
                (broker / "in" / "1_link.celery.msg", "link"),
                (broker / "in" / "2_fifo.celery.msg", "fifo"),
                (broker / "processed" / "3_link.celery.msg", "link"),
                (cli.folder / "procs" / "done" / "done.pid", "link"),
                (cli.folder / "procs" / "done" / "done.meta.json", "link"),
                (cli.folder / "procs" / "ghost", "folder link"),
                (worker.with_suffix(".json"), "link"),
                (worker.with_suffix(".pid"), "fifo"),
            ],
            [
                ("status",),
                ("status", "--json"),
                ("workers",),
                ("run", "--wait", "--name", "fresh", "--", "echo", "fresh"),
                ("logs", "fresh"),
                ("logs", "done"),
                ("logs", "ghost"),
                ("kill", "ghost"),
                ("rm", "--force", "ghost"),
                ("rm", "--force", "done"),
                ("cleanup",),
                ("status",),
            ],
        ),
        (
            [
                (cli.folder / "jobs" / ".lock", "link"),
                (cli.folder / "jobs" / ".seq", "fifo"),
                *((path, "link") for path in broker.glob("reserved/*/.lock")),
                *((path, "link") for path in broker.glob("worker-*.lock")),
            ],
            [
                ("run", "--name", "late", "--", "echo", "late"),
                ("run", "--wait", "--name", "later", "--", "echo", "later"),
                ("status",),
                ("workers",),
                ("rm", "--force", "late"),
                ("cleanup",),
            ],
        ),
    ]
    planted = operations = 0
    for targets, commands in rounds:
        for path, kind in targets:
            plant(path, kind, victim)
        planted += len(targets)
        for args in commands:
            done = cli(*args, check=None, timeout=60)  # a hang fails here
            assert done.returncode in (0, 1, 2), (args, done.stderr)
            assert "Traceback" not in done.stderr, (args, done.stderr)
            assert_untouched(victim)
            assert outside_state(victim) == before
            operations += 1
            if args[0] == "run" and args[-1] == "fresh":  # through the planted files
                assert done.returncode == 0, done.stderr
                assert cli.state("fresh") == "succeeded"

    figures["planted_at_queue_and_lock_paths"] = {
        "planted": planted,
        "operations": operations,
        "victim_changed": 0,
        "hangs": 0,
    }


def test_removal_of_a_tree_does_not_follow_links(tmp_path: Path, victim: Path) -> None:
    # Links inside a process folder, to the victim and to its folder: removing
    # the process removes the links, never what they point to.
    assert shutil.rmtree.avoids_symlink_attacks  # the descriptor-based walk
    manager = ProcessManager(tmp_path / "procs")
    ManagedProcess.spawn(["true"], wdir=tmp_path / "procs" / "job", name="job")
    wait_finished(manager, "job", "the job to end")
    folder = tmp_path / "procs" / "job"
    (folder / "to-victim").symlink_to(victim)
    (folder / "to-outside").symlink_to(victim.parent, target_is_directory=True)
    (folder / "sub").mkdir()
    (folder / "sub" / "deeper").symlink_to(victim.parent, target_is_directory=True)
    before = outside_state(victim)

    manager.remove("job")

    assert not folder.exists()
    assert outside_state(victim) == before
    assert_untouched(victim)
