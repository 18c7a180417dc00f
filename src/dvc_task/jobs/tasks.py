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
from typing import Any, Union

import psutil
from celery import Celery, Task, shared_task
from celery.exceptions import Reject

from dvc_task.files import open_regular, unlink_quietly
from dvc_task.jobs import schedule, slots
from dvc_task.jobs.queue import (
    JOB_TASK,
    RUNS_ELSEWHERE,
    AttemptLink,
    JobQueue,
    queue_of,
)
from dvc_task.jobs.record import (
    FAILED_TO_START,
    FINAL_STATES,
    KILLED,
    LOST,
    NOT_EXECUTABLE_EXIT,
    NOT_FOUND_EXIT,
    NOT_STARTED,
    SKIPPED,
    STARTED,
    WAITING_FOR_SLOTS,
    InvalidJobRecordError,
    JobRecord,
    UnknownJobError,
)
from dvc_task.jobs.view import derive, final_state
from dvc_task.proc import ManagedProcess
from dvc_task.proc.exceptions import ProcessNotTerminatedError, TimeoutExpired
from dvc_task.proc.info import process_create_time, process_start_id, utc_now
from dvc_task.proc.tree import descendants, signal_job, wait_ended, wait_gone
from dvc_task.utils import makedirs

logger = logging.getLogger(__name__)

#: How long a worker waits for a dead worker's leftover command to go.
_STOP_WAIT_S = 10.0
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


@shared_task(bind=True, name=JOB_TASK, acks_late=True, ignore_result=True)
def run(self: Task, name: str, folder: str) -> None:
    """Run job ``name`` of the jobs in ``folder``; its record says how.

    A worker of a queue on a broker server uses its own queue (its local
    folder) whatever ``folder`` the sender had. If that server stays away
    too long, the message goes back to the queue (once the server is back)
    instead of being lost with the job.
    """
    queue = queue_of(self.app, folder)
    try:
        _run_job(self, queue, name)
    except Exception as exc:
        if not queue.is_outage(exc):
            raise
        logger.warning("job %s: the server is away (%s): queued again", name, exc)
        raise Reject(exc, requeue=True) from exc


def _run_job(task: Task, queue: JobQueue, name: str) -> None:
    offer = worker_offer(task.app)
    queue.before_start(name)
    started = _mark_started(
        queue, name, str(task.request.id), str(task.request.hostname or ""), offer
    )
    if not isinstance(started, tuple):
        if started:  # it ended without running: its waiters move on
            schedule.promote(queue, slots_freed=False)
        return
    record, held = started
    had_slots = bool(held.locks)
    try:
        _run_attempt(queue, record, held)
    finally:
        held.release()
    schedule.promote(queue, slots_freed=had_slots)


def _run_attempt(queue: JobQueue, record: JobRecord, held: slots.Slots) -> None:
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
            proc.run()
        except (OSError, ProcessNotTerminatedError) as exc:
            _record_failed_start(queue, name, proc, exc, link)
            return
        link.started()
        with queue.locked():
            kill_signal = queue.kill_requested(name)
        if kill_signal is not None:
            # Killed while it was starting: stop it now that it exists.
            try:
                queue.manager.send_signal(name, kill_signal, group=True)
            except ProcessLookupError:
                pass  # it has ended already
        timed_out = False
        try:
            returncode = proc.wait(timeout=record.timeout)
        except TimeoutExpired:
            timed_out = True
            returncode = _stop_timed_out(proc)
        assert returncode is not None
        link.close()  # its last output is out before the job is seen ended
    with queue.locked():
        try:
            record = queue.load(name)
        except (UnknownJobError, InvalidJobRecordError) as exc:
            logger.warning("job %s: its record is gone: %s", name, exc)
            return
        record.timed_out = timed_out
        state = final_state(returncode, record.kill_signal, timed_out)
        schedule.end_attempt(queue, record, state, returncode=returncode)
    _log_end(name, state, returncode, time.monotonic() - begun)


def _write_header(queue: JobQueue, record: JobRecord) -> None:
    if record.max_attempts > 1:
        line = f"--- dvc-task: attempt {record.attempt}/{record.max_attempts} ---"
    else:  # run again with 'retry'
        line = f"--- dvc-task: run {len(record.attempts) + 1} ---"
    _append_line(queue, record.name, line)


def _append_line(queue: JobQueue, name: str, line: str) -> None:
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


Started = Union[tuple[JobRecord, slots.Slots], bool]


def _mark_started(
    queue: JobQueue, name: str, task_id: str, worker: str, offer: slots.Offer
) -> Started:
    """Mark the job started by this worker, with the slots it holds.

    Otherwise whether the job ended without running (the jobs that wait
    for it may go on). A message that is not the job's current one (queued
    again since: a retry, a release) is dropped.
    """
    with queue.locked():
        try:
            record = queue.load(name)
        except (UnknownJobError, InvalidJobRecordError) as exc:
            logger.warning("job %s: not run: %s", name, exc)
            return False
        reason = _reason_not_to_run(record, task_id)
        if reason is not None:
            logger.info("job %s: not run: %s", name, reason)
            return False
        if record.progress != NOT_STARTED:
            ended = _redelivered(queue, record)
            if ended is not None:
                return ended
        if _ends_before_start(queue, record):
            return True
        held = None
        if not (record.gpus or record.resources) or not (
            schedule.overtakes_a_patient_job(queue, record, offer.patience)
        ):
            held = slots.take(record, offer, queue.app_dir / "slots" / worker)
        if held is None:
            schedule.park(queue, record, WAITING_FOR_SLOTS)
            logger.info("job %s waits for its slots", name)
            return False
        if record.attempt > 1 or record.attempts:
            # The last attempt's process record would stand for this one.
            unlink_quietly(queue.procs_dir / name / f"{name}.json")
        record.progress = STARTED
        record.worker = worker
        record.host = queue.host
        record.worker_pid = os.getpid()
        record.worker_create_time = process_create_time(os.getpid())
        record.worker_start_id = process_start_id(os.getpid())
        record.started_at = utc_now()
        record.assigned_gpus = held.gpus
        if record.waiting_since is not None:
            # It no longer holds younger slot jobs back (see promote).
            record.waiting_since = None
            schedule.unmark(queue, name)
        queue.save(record)
    return record, held


def _reason_not_to_run(record: JobRecord, task_id: str) -> str | None:
    if record.task_id != task_id:
        return "the message is an old one (it was queued again since)"
    if record.progress in FINAL_STATES:
        return f"it is {record.progress}"
    if record.parked:
        return "it was held meanwhile"  # release queues it again
    return None


def _ends_before_start(queue: JobQueue, record: JobRecord) -> bool:
    """Record a job killed while starting, or one to skip; whether it ended."""
    kill_signal = queue.kill_requested(record.name)
    if kill_signal is not None:
        record.kill_signal = kill_signal
        record.finish(KILLED, error="killed while starting: it never ran")
    elif record.creates and all(
        os.path.exists(os.path.join(record.cwd, path)) for path in record.creates
    ):
        record.finish(SKIPPED, error="everything it creates exists")
    else:
        return False
    queue.save(record)
    _log_end(record.name, record.progress, None, None)
    return True


def _redelivered(queue: JobQueue, record: JobRecord) -> bool | None:
    """Handle a message of a started job: whether it ended, None to run it."""
    verdict = queue.redelivered(record)
    if verdict == RUNS_ELSEWHERE:
        logger.info("job %s: not run: it runs on %s", record.name, record.worker)
        return False
    if verdict == LOST:
        return _record_redelivered(queue, record)
    logger.warning("job %s: its worker died: taking it over", record.name)
    _stop_leftover(queue, record.name)
    schedule.hand_over(record)
    return None


def _stop_leftover(queue: JobQueue, name: str) -> None:
    """Stop a command that a dead worker of this host left running."""
    info = queue.manager.get(name)
    if info is not None and info.returncode is None and info.command_alive():
        logger.warning("job %s: stopping the command its dead worker left", name)
        try:
            wait_gone(signal_job(info.pid, signal.SIGKILL, group=True), _STOP_WAIT_S)
        except ProcessLookupError:
            pass


def _record_redelivered(queue: JobQueue, record: JobRecord) -> bool:
    # Its worker died after it started the job: that attempt is over, and a
    # command it left running, which nobody waits for, is stopped. A retry
    # follows if attempts are left. Whether the job has ended.
    _stop_leftover(queue, record.name)
    job = derive(record, {}, queue.manager.get(record.name), None)
    if job.finished and job.state != LOST:
        final = schedule.end_attempt(
            queue,
            record,
            job.state,
            returncode=job.returncode,
            finished_at=job.finished_at,
        )
    else:
        final = schedule.end_attempt(
            queue,
            record,
            LOST,
            returncode=job.returncode,
            error="its worker died while it ran",
            finished_at=job.finished_at,
        )
    _log_end(record.name, record.progress, record.returncode, None)
    return final


def _check_cwd(cwd: str) -> None:
    if not os.path.isdir(cwd):
        raise NotADirectoryError(f"working directory '{cwd}' is not a folder")


def _record_failed_start(
    queue: JobQueue, name: str, proc: ManagedProcess, exc: Exception, link: AttemptLink
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
    with queue.locked():
        record = queue.load(name)
        schedule.end_attempt(
            queue, record, FAILED_TO_START, returncode=returncode, error=message
        )
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
