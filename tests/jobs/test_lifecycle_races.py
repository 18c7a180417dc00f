"""Races between commands and workers, made certain with stopped processes.

A job queued as the last worker leaves still gets a worker.

A detached worker that stays idle exits: it lets go of its name lock, looks
at the queue one last time, and exits; its runner then records its end. A
``run`` after that last look but before the record is written queues a job
and, trusting the process record, starts no worker: the job waits forever.

The window is made wide (and the test deterministic) by stopping the
worker's runner (SIGSTOP) until the worker itself has exited: exactly the
moment a slow runner, or a loaded machine, leaves open.
"""

from __future__ import annotations

import os
import signal
import subprocess
from pathlib import Path

import psutil

from dvc_task.files import lock_is_held
from dvc_task.jobs import JobQueue
from dvc_task.proc import ProcessManager

from conftest import SCRIPT, Cli, JobsLock, wait_for


def gone(pid: int) -> bool:
    try:
        return psutil.Process(pid).status() == psutil.STATUS_ZOMBIE
    except psutil.NoSuchProcess:
        return True


def test_run_just_after_the_last_worker_left_still_gets_its_job_run(
    cli: Cli,
) -> None:
    queue = JobQueue(cli.folder)
    (name,) = queue.start_workers(timeout=0.5)
    lock = cli.folder / "app" / "broker" / f"worker-celery@{name}.lock"
    wait_for(lambda: lock_is_held(lock), "the worker to run")
    info = ProcessManager(queue.backend.workers_dir).get(name)
    assert info is not None
    assert info.runner_pid is not None
    assert info.pid is not None
    os.kill(info.runner_pid, signal.SIGSTOP)
    try:
        # Idle for 0.5 s, the worker lets go of its lock, looks at the queue
        # (empty) a last time and exits; its runner has yet to record that.
        wait_for(lambda: gone(info.pid), "the idle worker to exit", timeout=60)
        cli("run", "--name", "j", "--", "true")
    finally:
        os.kill(info.runner_pid, signal.SIGCONT)

    # The queue has a job: some worker must run it.
    assert queue.wait("j", timeout=20).state == "succeeded"


# ``cleanup`` and ``rm`` keep a job queued again meanwhile.
#
# They choose the finished jobs without the jobs lock, then delete them under
# it without looking again. A ``retry`` (or ``run --replace``) in between has
# queued the job again: it is deleted, queued, with its message left behind.
#
# The interleaving is made certain with real processes: the test holds the
# jobs lock, so ``cleanup``/``rm`` choose and then block on the lock; it is
# stopped (SIGSTOP) there, the lock is let go, ``retry``/``run --replace``
# runs through, and ``cleanup``/``rm`` goes on (SIGCONT).


def blocked_on_a_lock(pid: int) -> bool:
    """Whether process ``pid`` waits for a file lock (``/proc/locks``)."""
    for line in Path("/proc/locks").read_text().splitlines():
        fields = line.split()
        if "->" in fields and str(pid) in fields:
            return True
    return False


def no_worker(cli: Cli, queue: JobQueue) -> None:
    """Stop the worker that ran the first jobs: nothing runs a job queued now."""
    cli("stop")
    wait_for(lambda: not queue.workers(), "the worker to stop")


def stopped_after_choosing(cli: Cli, *args: str) -> subprocess.Popen[str]:
    """``dvc-task ARGS`` stopped just before it takes the jobs lock."""
    lock = JobsLock(cli.folder)
    try:
        proc = subprocess.Popen(
            [str(SCRIPT), *args],
            env=cli.env,
            cwd=cli.cwd,
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            text=True,
            start_new_session=True,
        )
        wait_for(lambda: blocked_on_a_lock(proc.pid), f"{args[0]} to wait for the lock")
        os.kill(proc.pid, signal.SIGSTOP)
        # Stopped while still waiting: its flock call is undone (and is
        # made again once it goes on), so it holds nothing meanwhile.
        wait_for(
            lambda: psutil.Process(proc.pid).status() == psutil.STATUS_STOPPED,
            f"{args[0]} to stop",
        )
    finally:
        lock.release()
    return proc


def go_on(proc: subprocess.Popen[str]) -> int:
    """Let the stopped command go on; its exit status once it has ended."""
    os.kill(proc.pid, signal.SIGCONT)
    proc.communicate(timeout=60)
    return proc.returncode


def test_cleanup_keeps_a_job_that_retry_queued_again_meanwhile(cli: Cli) -> None:
    queue = JobQueue(cli.folder)
    cli("run", "--wait", "--name", "j", "--", "false", check=1)
    no_worker(cli, queue)
    cleanup = stopped_after_choosing(cli, "cleanup")
    try:
        cli("retry", "--no-start", "j")
        assert queue.job("j").state == "queued"
    finally:
        assert go_on(cleanup) == 0

    # "j" was queued again before cleanup took the lock: it is not finished,
    # so it stays, and it runs.
    assert queue.backend.has_record("j"), "cleanup deleted a job queued again by retry"
    queue.start_workers()
    assert queue.wait("j", timeout=20).state == "failed"
    assert queue.job("j").attempt == 1


def test_rm_keeps_a_job_that_run_replace_queued_again_meanwhile(
    cli: Cli, tmp_path: Path
) -> None:
    queue = JobQueue(cli.folder)
    cli("run", "--wait", "--name", "j", "--", "true")
    no_worker(cli, queue)
    marker = tmp_path / "new-j-ran"
    rm = stopped_after_choosing(cli, "rm", "j")
    try:
        cli("run", "--no-start", "--replace", "--name", "j", "--", "touch", str(marker))
        assert queue.job("j").state == "queued"
    finally:
        go_on(rm)

    # rm chose the finished "j"; the new "j" is another job, queued: rm may
    # refuse, or remove nothing, but the new job stays.
    assert queue.backend.has_record("j"), (
        "rm deleted the new job queued by run --replace"
    )
    queue.start_workers()
    assert queue.wait("j", timeout=20).state == "succeeded"
    assert marker.exists()
