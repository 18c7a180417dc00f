"""ProcessManager: true liveness, whole-job kills, live follow, safe names and files."""

from __future__ import annotations

import json
import os
import queue
import signal
import subprocess
import sys
import threading
import time
from collections.abc import Iterator
from pathlib import Path

import psutil
import pytest

from dvc_task.proc import ManagedProcess, ProcessInfo, ProcessManager
from dvc_task.proc.exceptions import (
    InvalidProcessInfoError,
    ProcessNotTerminatedError,
)
from dvc_task.proc.info import LOST_RETURNCODE, process_create_time, process_start_id

from conftest import HELPERS, Processes, lines, wait_finished, wait_for

sys.path.insert(0, str(HELPERS))
from taskapp import make_app

STEPS = HELPERS / "steps.py"


@pytest.fixture
def manager(tmp_path: Path) -> Iterator[ProcessManager]:
    manager = ProcessManager(tmp_path / "procs")
    yield manager
    for name, info in list(manager.processes()):
        if info.returncode is None:
            manager.remove(name, force=True)


def spawn(manager: ProcessManager, name: str, args: list[str]) -> ProcessInfo:
    ManagedProcess.spawn(args, wdir=os.path.join(manager.wdir, name), name=name)
    return wait_for(lambda: manager.get(name), f"process {name} to start")


def running(pid: int) -> bool:
    try:
        return psutil.Process(pid).status() != psutil.STATUS_ZOMBIE
    except psutil.NoSuchProcess:
        return False


def gone(pids: list[int]) -> bool:
    return not any(running(pid) for pid in pids)


def test_killed_runner_leaves_a_finished_failed_record(manager: ProcessManager) -> None:
    info = spawn(manager, "job", ["sleep", "60"])
    assert info.runner_pid is not None

    os.kill(info.runner_pid, signal.SIGKILL)
    wait_for(lambda: gone([info.runner_pid]), "the runner to die")
    assert manager["job"].returncode is None  # the command itself still runs
    os.kill(info.pid, signal.SIGKILL)

    finished = wait_finished(manager, "job", "the dead job to be reported finished")
    assert finished.returncode == LOST_RETURNCODE
    assert (
        json.loads(Path(manager.wdir, "job", "job.json").read_text())["returncode"]
        == LOST_RETURNCODE
    )
    with pytest.raises(ProcessLookupError):
        manager.kill("job")
    manager.remove("job")
    assert "job" not in list(manager)


def test_reused_pid_is_not_mistaken_for_the_job(
    manager: ProcessManager, processes: Processes
) -> None:
    runner = spawn(manager, "done", ["true"]).runner_pid
    assert runner is not None
    wait_for(lambda: manager["done"].returncode == 0, "the job to finish")
    wait_for(lambda: gone([runner]), "the runner to exit")
    stranger = processes.start("sleep", "60")
    info = manager["done"]
    info.pid = stranger.pid
    info.create_time = psutil.Process(stranger.pid).create_time() - 1000
    info.returncode = None
    manager["done"] = info

    assert manager["done"].returncode == LOST_RETURNCODE
    with pytest.raises(ProcessLookupError):
        manager.kill("done")
    assert stranger.poll() is None
    assert dict(manager.processes())["done"].returncode == LOST_RETURNCODE


def job_pids(info: ProcessInfo) -> list[int]:
    try:
        children = psutil.Process(info.pid).children(recursive=True)
    except psutil.NoSuchProcess:
        return []
    return [info.pid, *(child.pid for child in children)]


PIPELINE = [
    "sh",
    "-c",
    # A pipeline, a forked script, and a child that left the process group.
    "sleep 101 | sleep 102 & "
    f"{sys.executable} -c 'import os, time; os.fork(); time.sleep(103)' & "
    f"{sys.executable} -c 'import os, time; os.setsid(); time.sleep(104)' & "
    "wait",
]


def wait_job_started(info: ProcessInfo) -> list[int]:
    return wait_for(
        lambda: len(job_pids(info)) >= 6 and job_pids(info), "the whole job to start"
    )


def test_group_kill_ends_every_process_of_the_job(manager: ProcessManager) -> None:
    info = spawn(manager, "job", PIPELINE)
    pids = wait_job_started(info)

    manager.kill("job", group=True)

    wait_for(lambda: gone(pids), "every process of the job to end")
    done = wait_finished(manager, "job", "the runner to record the return code")
    assert done.returncode == -signal.SIGKILL
    assert gone([info.runner_pid or 0]) or wait_for(
        lambda: gone([info.runner_pid or 0]), "the runner to exit"
    )


def test_remove_force_ends_the_job_and_deletes_it(manager: ProcessManager) -> None:
    info = spawn(manager, "job", PIPELINE)
    pids = wait_job_started(info)
    with pytest.raises(ProcessNotTerminatedError, match="force=True"):
        manager.remove("job")

    manager.remove("job", force=True)

    assert gone(pids)
    assert not Path(manager.wdir, "job").exists()
    wait_for(lambda: gone([info.runner_pid or 0]), "the runner to exit")


def test_terminate_and_interrupt_reach_the_command(manager: ProcessManager) -> None:
    spawn(manager, "term", ["sleep", "60"])
    spawn(manager, "int", ["sleep", "60"])

    manager.terminate("term")
    manager.interrupt("int")

    assert wait_for(lambda: manager["term"].returncode, "term") == -signal.SIGTERM
    assert wait_for(lambda: manager["int"].returncode, "int") == -signal.SIGINT


def test_interrupt_reaches_a_job_spawned_by_a_caller_that_ignores_it(
    manager: ProcessManager,
) -> None:
    # A shell starts background commands with SIGINT and SIGQUIT ignored;
    # the job of a worker spawned from such a script must still stop on
    # `interrupt` (DVC's `queue kill`).
    subprocess.run(
        [
            sys.executable,
            "-c",
            "import signal, sys; from dvc_task.proc import ManagedProcess;"
            "signal.signal(signal.SIGINT, signal.SIG_IGN);"
            "signal.signal(signal.SIGQUIT, signal.SIG_IGN);"
            "ManagedProcess.spawn(['sleep', '60'], wdir=sys.argv[1], name='int')",
            os.path.join(manager.wdir, "int"),
        ],
        check=True,
    )
    wait_for(lambda: manager.get("int"), "the job to start")

    manager.interrupt("int")

    assert wait_for(lambda: manager["int"].returncode, "int") == -signal.SIGINT


def test_cleanup_removes_finished_processes_only(manager: ProcessManager) -> None:
    spawn(manager, "running", ["sleep", "60"])
    spawn(manager, "done", ["true"])
    wait_for(lambda: manager["done"].returncode == 0, "the short job")

    manager.cleanup()

    assert list(manager) == ["running"]
    manager.cleanup(force=True)
    assert list(manager) == []


class Follower:
    """Runs follow() in a thread so the test can feed the job step by step."""

    def __init__(self, manager: ProcessManager, name: str) -> None:
        self.lines: queue.Queue[str | None] = queue.Queue()
        self.thread = threading.Thread(target=self._run, args=(manager, name))
        self.thread.start()

    def _run(self, manager: ProcessManager, name: str) -> None:
        for line in manager.follow(name, sleep_interval=30):
            self.lines.put(line)
        self.lines.put(None)

    def next(self) -> str | None:
        return self.lines.get(timeout=60)


def test_follow_yields_whole_lines_as_they_are_written(
    manager: ProcessManager, tmp_path: Path
) -> None:
    chunks = ["one\\n", "tw", "o\\nthr", "ee\\r\\nfour\\n", "tail"]
    spawn(manager, "slow", [sys.executable, str(STEPS), str(tmp_path), *chunks])
    follower = Follower(manager, "slow")

    (tmp_path / "go0").touch()
    assert follower.next() == "one\n"
    (tmp_path / "go1").touch()
    (tmp_path / "go2").touch()
    assert follower.next() == "two\n"
    (tmp_path / "go3").touch()
    assert follower.next() == "three\n"
    assert follower.next() == "four\n"
    (tmp_path / "go4").touch()
    assert follower.next() == "tail"
    assert follower.next() is None
    follower.thread.join()


def test_follow_of_a_finished_process_reads_everything(manager: ProcessManager) -> None:
    spawn(manager, "done", ["sh", "-c", "printf 'a\\nb\\nc'"])
    wait_for(lambda: manager["done"].returncode == 0, "the job to finish")

    assert list(manager.follow("done")) == ["a\n", "b\n", "c"]


def test_follow_ends_when_the_runner_died(manager: ProcessManager) -> None:
    info = spawn(manager, "job", ["sh", "-c", "echo started; sleep 60"])
    wait_for(lambda: lines(Path(info.stdout or "")) == ["started"], "output")
    assert info.runner_pid is not None  # never signal pid 0: the test's own group
    os.kill(info.runner_pid, signal.SIGKILL)
    os.kill(info.pid, signal.SIGKILL)

    assert list(manager.follow("job", sleep_interval=0.1)) == ["started\n"]


BAD_NAMES = ["", ".", "..", "a/b", "../x", "x..y", "a\\b", "nul\0byte", "/abs"]


@pytest.mark.parametrize("name", BAD_NAMES)
def test_names_that_escape_the_folder_are_refused(
    manager: ProcessManager, tmp_path: Path, name: str
) -> None:
    calls = [
        lambda: manager[name],
        lambda: manager.get(name),
        lambda: manager.run_signature(["true"], name=name),
        lambda: manager.kill(name),
        lambda: manager.remove(name),
        lambda: manager.follow(name).__next__(),
        lambda: ManagedProcess(["true"], wdir=tmp_path / "w", name=name),
        lambda: ManagedProcess.spawn(["true"], wdir=tmp_path / "w", name=name),
    ]
    for call in calls:
        with pytest.raises(ValueError, match="invalid process name"):
            call()
    assert sorted(os.listdir(tmp_path)) == []


BAD_RECORDS = {
    "empty": b"",
    "truncated": b'{"pid": 12, "stdout": "x',
    "notjson": b"\xff\xfe garbage",
    "list": b"[1, 2]",
    "badpid": b'{"pid": "12"}',
    "pidzero": b'{"pid": 0, "returncode": null}',
}


def test_bad_records_are_skipped_and_left_alone(
    manager: ProcessManager, caplog: pytest.LogCaptureFixture
) -> None:
    spawn(manager, "good", ["true"])
    wait_for(lambda: manager["good"].returncode == 0, "the good job")
    for name, data in BAD_RECORDS.items():
        folder = Path(manager.wdir, name)
        folder.mkdir()
        (folder / f"{name}.json").write_bytes(data)
    old = time.time() - 3600
    os.utime(Path(manager.wdir, "good"), None)
    norecord = Path(manager.wdir, "norecord")
    norecord.mkdir()
    os.utime(norecord, (old, old))

    with caplog.at_level("WARNING"):
        assert [name for name, _ in manager.processes()] == ["good"]
        assert list(manager) == ["good"]

    for name, data in BAD_RECORDS.items():
        path = Path(manager.wdir, name, f"{name}.json")
        assert path.read_bytes() == data
        with pytest.raises(InvalidProcessInfoError, match=str(path)):
            manager[name]
        assert manager.get(name) is None
        assert any(str(path) in r.getMessage() for r in caplog.records), name
    assert any("norecord" in r.getMessage() for r in caplog.records)
    with pytest.raises(KeyError):
        manager["norecord"]


def test_records_of_040_and_of_later_versions_are_read(
    manager: ProcessManager,
) -> None:
    spawn(manager, "job", ["true"])
    wait_for(lambda: manager["job"].returncode == 0, "the job")
    folder = Path(manager.wdir, "job")
    (folder / "job.meta.json").unlink()
    record = {
        "pid": 4242,
        "stdin": None,
        "stdout": "x.out",
        "stderr": None,
        "returncode": 0,
    }
    (folder / "job.json").write_text(json.dumps(record))
    assert manager["job"] == ProcessInfo(4242, None, "x.out", None, 0)

    (folder / "job.json").write_text(json.dumps({**record, "future": [1, 2]}))
    assert manager["job"].stdout == "x.out"
    (folder / "job.json").write_text(json.dumps({"pid": 4242, "returncode": 1}))
    assert manager["job"].returncode == 1


def test_run_signature_runs_in_a_worker(
    wdir: Path, processes: Processes, tmp_path: Path
) -> None:
    app = make_app(str(wdir))
    manager = ProcessManager(tmp_path / "procs")
    result = manager.run_signature(["sh", "-c", "echo hi; exit 4"], name="j1").delay()

    processes.worker(wdir).wait(timeout=120)

    assert manager["j1"].returncode == 4
    assert list(manager.follow("j1")) == ["hi\n"]
    returned = result.get(timeout=30)
    assert ProcessInfo.from_dict(returned).returncode == 4
    assert app.conf.broker_url.startswith("dvcfs")


def cached_names(manager: ProcessManager) -> set[str]:
    path = Path(manager.wdir, "..index", "index.json")
    return set(json.loads(path.read_text())["rows"]) if path.exists() else set()


def test_listing_cache_never_hides_a_change(manager: ProcessManager) -> None:
    spawn(manager, "job", ["true"])
    wait_for(lambda: manager["job"].returncode == 0, "the job")
    wait_for(
        lambda: dict(manager.processes()) and "job" in cached_names(manager),
        "the record to be cached",
    )
    record = Path(manager.wdir, "job", "job.json")
    original = record.read_bytes()

    record.write_bytes(original[:10])  # in place: same inode
    assert list(manager.processes()) == []
    record.write_bytes(original.replace(b'"returncode": 0', b'"returncode": 7'))
    assert dict(manager.processes())["job"].returncode == 7

    Path(manager.wdir, "..index", "index.json").write_bytes(b"\x00garbage")
    assert dict(manager.processes())["job"].returncode == 7
    assert list(manager) == ["job"]


def test_run_signature_runs_the_command_in_cwd(
    manager: ProcessManager, tmp_path: Path
) -> None:
    here = tmp_path / "here"
    here.mkdir()
    app = make_app(str(tmp_path / "q"))
    app.loader.import_default_modules()  # registers dvc_task.proc.tasks.run
    signature = manager.run_signature(["pwd"], name="where", cwd=here)

    assert signature.kwargs["cwd"] == str(here)
    info = signature()  # as DVC runs it: synchronously, inside its own task

    assert info["returncode"] == 0
    assert Path(info["stdout"]).read_text() == f"{here}\n"


def test_spawned_process_runs_in_cwd_and_is_known_at_once(
    manager: ProcessManager, tmp_path: Path
) -> None:
    here = tmp_path / "spawned-here"
    here.mkdir()
    ManagedProcess.spawn(
        ["pwd"], wdir=os.path.join(manager.wdir, "sp"), name="sp", cwd=here
    )

    # Known by name as soon as spawn() returns: follow() works at once.
    assert "".join(manager.follow("sp")) == f"{here}\n"


def test_kill_as_the_command_ends_leaves_the_return_code_to_its_runner(
    tmp_path: Path, processes: Processes
) -> None:
    # The command has just ended and its runner, alive, is about to record
    # the real return code: a kill that finds the command gone must not
    # record it lost over what the runner writes.
    runner = processes.start("sleep", "60")
    ended = processes.start("true")
    ended.wait()
    folder = tmp_path / "job"
    folder.mkdir(mode=0o700)
    ProcessInfo(
        pid=ended.pid,
        runner_pid=runner.pid,
        runner_create_time=process_create_time(runner.pid),
        runner_start_id=process_start_id(runner.pid),
    ).dump(folder / "job.json")
    manager = ProcessManager(tmp_path)

    with pytest.raises(ProcessLookupError):
        manager.kill("job")

    assert manager["job"].returncode is None


def test_040_record_whose_pid_was_reused_is_not_signalled(
    tmp_path: Path, processes: Processes
) -> None:
    folder = tmp_path / "job"
    folder.mkdir(mode=0o700)
    record = folder / "job.json"
    stranger = processes.start("sleep", "60")
    # What dvc-task 0.40 wrote (no start times), an hour before the pid
    # was handed to another program.
    record.write_text(
        json.dumps(
            {
                "pid": stranger.pid,
                "stdin": None,
                "stdout": None,
                "stderr": None,
                "returncode": None,
            }
        )
    )
    an_hour_ago = time.time() - 3600
    os.utime(record, (an_hour_ago, an_hour_ago))
    manager = ProcessManager(tmp_path)

    with pytest.raises(ProcessLookupError):
        manager.kill("job")

    assert stranger.poll() is None
    assert manager["job"].returncode == LOST_RETURNCODE
