"""The Celery task that runs a queued job, and the one log line per job.

The message carries only the job's name and folder; what to run, where and
with which environment is in the job record. The task is acked late: a
worker killed before it marked the job started leaves the message to be
delivered again, and a delivery of a job already started (its worker died
mid-run) never runs it a second time.
"""

from __future__ import annotations

import logging
import os
import signal
import time
from typing import Any

import psutil
from celery import Celery, Task, shared_task
from celery.exceptions import Reject

from dvc_task.files import open_regular
from dvc_task.jobs import slots
from dvc_task.jobs.backend import JOB_TASK, AttemptLink
from dvc_task.jobs.folder import QUEUE_KEY, FolderBackend

# Imported with the task, not at a worker's first job: a first job's thread
# must not be slowed by the import while another thread takes a job.
from dvc_task.jobs.lifecycle import queueing, running
from dvc_task.jobs.record import (
    FAILED_TO_START,
    NOT_EXECUTABLE_EXIT,
    NOT_FOUND_EXIT,
    InvalidJobRecordError,
    JobRecord,
    UnknownJobError,
)
from dvc_task.proc import ManagedProcess
from dvc_task.proc.exceptions import ProcessNotTerminatedError, TimeoutExpired
from dvc_task.proc.tree import descendants, signal_job, wait_ended
from dvc_task.proc.watchdog import WATCHDOG
from dvc_task.utils import makedirs

logger = logging.getLogger(__name__)

#: Seconds between SIGTERM and SIGKILL to a job past its time limit.
TIMEOUT_GRACE_S = 5.0
#: The variable that names a job's GPUs (as ``CUDA_VISIBLE_DEVICES`` does).
GPUS_ENV = "DVC_TASK_GPUS"


def worker_offer(app: Celery) -> slots.Offer:
    """The GPUs and resources this worker offers (all GPUs if not set)."""
    offer = app.conf.get(slots.OFFER_KEY)
    if not isinstance(offer, slots.Offer):
        offer = slots.Offer(slots.detect_gpus(), {})
        app.conf[slots.OFFER_KEY] = offer
    return offer


def backend_for(app: Celery, folder: str) -> FolderBackend:
    """The jobs' backend that ``app`` was made for, else the folder ``folder``."""
    backend = app.conf.get(QUEUE_KEY)
    return backend if isinstance(backend, FolderBackend) else FolderBackend(folder)


@shared_task(bind=True, name=JOB_TASK, acks_late=True, ignore_result=True)
def run(self: Task, name: str, folder: str) -> None:
    """Run job ``name`` of the jobs in ``folder``; its record says how.

    A worker of a queue on a broker server uses its own queue (its local
    folder) whatever ``folder`` the sender had. If that server stays away
    too long, the message goes back to the queue (once the server is back)
    instead of being lost with the job.
    """
    queue = backend_for(self.app, folder)
    try:
        _run_job(self, queue, name)
    except Exception as exc:
        if not queue.is_outage(exc):
            raise
        logger.warning("job %s: the server is away (%s): queued again", name, exc)
        raise Reject(exc, requeue=True) from exc


def _run_job(task: Task, queue: FolderBackend, name: str) -> None:
    """Take the job, run its attempt, record how it ended, promote its waiters."""
    worker = str(task.request.hostname or "")
    queue.before_start(name)
    taken = running.take(
        queue,
        name,
        str(task.request.id),
        worker=worker,
        offer=worker_offer(task.app),
        slot_folder=queue.app_dir / "slots" / worker,
    )
    if taken.record is None or taken.held is None:
        if taken.ended:  # it ended without running: its waiters move on
            queueing.promote(queue, slots_freed=False)
        return
    had_slots = bool(taken.held.locks)
    try:
        _run_attempt(queue, taken.record, taken.held)
    except Exception as exc:
        if not queue.is_outage(exc):
            # Never left "running" with nobody to record its end.
            logger.exception("job %s: its worker failed while it ran", name)
            running.end_abandoned(queue, name, f"its worker failed: {exc}")
        raise
    finally:
        taken.held.release()
    queueing.promote(queue, slots_freed=had_slots)


def _run_attempt(queue: FolderBackend, record: JobRecord, held: slots.Slots) -> None:
    name = record.name
    begun = time.monotonic()
    env = dict(record.env)
    if record.gpus:
        env["CUDA_VISIBLE_DEVICES"] = env[GPUS_ENV] = ",".join(held.gpus)
    proc = ManagedProcess(
        record.command, env=env, cwd=record.cwd, wdir=queue.procs_dir / name, name=name
    )
    with queue.attempt_link(name) as link:
        try:
            _check_cwd(record.cwd)
            if record.max_attempts > 1 or record.attempts:
                _write_header(queue, record)
            WATCHDOG.start()  # ready before the command: it is guarded at once
            proc.run()
        except (OSError, ProcessNotTerminatedError) as exc:
            _record_failed_start(queue, name, proc, exc, link)
            return
        with WATCHDOG.guarding(proc.pid, proc.info.start_id):
            link.started()
            returncode, timed_out = _wait_attempt(queue, record, proc)
        link.close()  # its last output is out before the job is seen ended
    ended = running.end_running(queue, name, returncode, timed_out)
    if ended is not None:
        _log_end(name, ended.phase, returncode, time.monotonic() - begun)


def _wait_attempt(
    queue: FolderBackend, record: JobRecord, proc: ManagedProcess
) -> tuple[int, bool]:
    """Wait for a started attempt's command: its return code, and if it timed out."""
    kill_signal = queue.store.kill_requested(record.name)
    if kill_signal is not None:
        # Killed while it was starting: stop it now that it exists.
        try:
            queue.manager.send_signal(record.name, kill_signal, group=True)
        except ProcessLookupError:
            pass  # it has ended already
    if record.timeout is None:
        returncode = proc.wait()
        assert returncode is not None
        return returncode, False
    begun = time.monotonic()
    while True:
        # The time limit does not count the time the job was paused.
        left = (
            record.timeout + _paused_s(queue, record.name) - (time.monotonic() - begun)
        )
        if left <= 0:
            returncode = _stop_timed_out(proc)
            assert returncode is not None
            return returncode, True
        try:
            returncode = proc.wait(timeout=left)
        except TimeoutExpired:
            continue
        assert returncode is not None
        return returncode, False


def _paused_s(queue: FolderBackend, name: str) -> float:
    """Seconds job ``name`` has been paused in this attempt, so far."""
    try:
        return queue.load(name).paused_for()
    except (UnknownJobError, InvalidJobRecordError):
        return 0.0


def _write_header(queue: FolderBackend, record: JobRecord) -> None:
    if record.max_attempts > 1:
        line = f"--- dvc-task: attempt {record.attempt}/{record.max_attempts} ---"
    else:  # run again with 'retry'
        line = f"--- dvc-task: run {len(record.attempts) + 1} ---"
    _append_line(queue, record.name, line)


def _append_line(queue: FolderBackend, name: str, line: str) -> None:
    """Add a line of ours to job ``name``'s output (made if missing)."""
    makedirs(queue.procs_dir / name, exist_ok=True, mode=0o700)
    fd = open_regular(queue.output_path(name), os.O_WRONLY | os.O_CREAT | os.O_APPEND)
    try:
        os.write(fd, f"{line}\n".encode(errors="backslashreplace"))
    finally:
        os.close(fd)


def _stop_timed_out(proc: ManagedProcess) -> int | None:
    """Stop a command past its time limit, with everything it started."""
    pid = proc.info.pid
    tree = []
    for child in descendants(pid):
        try:
            tree.append(psutil.Process(child))
        except psutil.Error:
            continue
    for sig in (signal.SIGTERM, signal.SIGKILL):
        try:
            signal_job(pid, sig, group=True)
        except ProcessLookupError:
            pass
        for other in tree:
            try:
                other.send_signal(sig)
            except psutil.Error:
                continue
        deadline = time.monotonic() + TIMEOUT_GRACE_S
        try:
            proc.wait(timeout=TIMEOUT_GRACE_S)
        except TimeoutExpired:
            continue
        tree = wait_ended(tree, max(0.0, deadline - time.monotonic()))
        if not tree:
            break
    return proc.wait()


def _check_cwd(cwd: str) -> None:
    if not os.path.isdir(cwd):
        raise NotADirectoryError(f"working directory '{cwd}' is not a folder")


def _record_failed_start(
    queue: FolderBackend,
    name: str,
    proc: ManagedProcess,
    exc: Exception,
    link: AttemptLink,
) -> None:
    """Say why in the job's output, send that out, then record the failure."""
    returncode = (
        NOT_FOUND_EXIT
        if isinstance(exc, (FileNotFoundError, NotADirectoryError))
        else NOT_EXECUTABLE_EXIT
    )
    message = f"dvc-task: cannot run {proc.args[0]!r}: {exc}"
    _append_line(queue, name, message)
    link.close()
    running.end_not_started(queue, name, FAILED_TO_START, returncode, message)
    _log_end(name, FAILED_TO_START, returncode, None)


def _log_end(name: str, state: str, returncode: int | None, took: float | None) -> None:
    details: list[Any] = []
    if returncode not in (None, 0):
        assert returncode is not None
        details.append(
            f"signal {signal.Signals(-returncode).name}"
            if returncode < 0 and -returncode in signal.valid_signals()
            else f"exit {returncode}"
        )
    if took is not None:
        details.append(f"{took:.1f}s")
    suffix = f" ({', '.join(details)})" if details else ""
    logger.info("job %s %s%s", name, state, suffix)
