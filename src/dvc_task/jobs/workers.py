"""Workers of a job folder: start them detached, list the live ones, stop them.

A detached worker is a managed process of its own, in ``<folder>/workers/<name>/``
(its log is ``<name>.out`` there). A worker of any kind holds the OS lock of
``app/broker/worker-<node>.lock`` while it lives (see :class:`TemporaryWorker`),
so a worker started by hand in a terminal is seen too.
"""

from __future__ import annotations

import logging
import os
import signal
import time
from typing import TYPE_CHECKING, Any

from dvc_task.files import FileLock
from dvc_task.folders import make_private_folder
from dvc_task.jobs import control, lifecycle
from dvc_task.jobs.backend import JOB_TASK
from dvc_task.jobs.defaults import IDLE_TIMEOUT_S, WORKER_NAME
from dvc_task.jobs.listing import folders
from dvc_task.jobs.liveworkers import alive_workers, node_name, short_name
from dvc_task.jobs.record import (
    InvalidJobRecordError,
    JobError,
    UnknownJobError,
)
from dvc_task.jobs.scheduler import BEAT_CHECK_S, Beat
from dvc_task.jobs.slots import OFFER_KEY, Offer, detect_gpus
from dvc_task.jobs.view import WorkerInfo
from dvc_task.proc import ManagedProcess, ProcessManager
from dvc_task.proc.watchdog import WATCHDOG
from dvc_task.utils import module_command
from dvc_task.worker.locks import held_locks

if TYPE_CHECKING:
    from dvc_task.jobs.backend import Backend

logger = logging.getLogger(__name__)

#: The app setting with a worker's number of jobs at once.
CONCURRENCY_KEY = "dvc_task_concurrency"
#: How long a worker's folder without a record counts as one being started.
STARTING_S = 10.0
#: The idle time-out of a worker that checks the schedules: it stays.
BEAT_IDLE_S = 10 * 365 * 86400.0


def start_workers(
    queue: Backend,
    count: int = 1,
    timeout: float = IDLE_TIMEOUT_S,
    concurrency: int = 1,
    offer: Offer | None = None,
    *,
    beat: bool = False,
) -> list[str]:
    """Start ``count`` detached workers; their names.

    Each exits once the queue has been empty for ``timeout`` seconds (with
    ``beat``: runs, and checks the schedules, until stopped), and runs jobs
    on the GPUs and resources of ``offer`` (default: every GPU).

    Raises:
        DvcTaskError: a worker could not be started.
    """
    queue.app  # noqa: B018 - creates the queue's folders first
    make_private_folder(queue.workers_dir)
    # Names are chosen and their folders made under a lock: two `start`s
    # at once never pick the same name (the second runner would refuse it).
    with FileLock(queue.workers_dir / ".lock"):
        taken = _names_in_use(queue)
        started: list[str] = []
        number = 1
        while len(started) < count:
            name = WORKER_NAME if number == 1 else f"{WORKER_NAME}-{number}"
            number += 1
            if name in taken:
                continue
            ManagedProcess.spawn(
                module_command(
                    "dvc_task",
                    "--dir",
                    str(queue.folder),
                    "worker",
                    "--name",
                    name,
                    "--timeout",
                    repr(float(timeout)),
                    "--concurrency",
                    str(concurrency),
                    *offer_options(offer),
                    *(["--beat"] if beat else []),
                ),
                wdir=queue.workers_dir / name,
                name=name,
                cwd=queue.folder,
                env=queue.worker_env(),
            )
            started.append(name)
    return started


def _names_in_use(queue: Backend) -> set[str]:
    """Names a new detached worker may not have now.

    Those of live workers, of workers whose runner is still finishing, and of
    workers being started (a folder without a record yet, made moments ago).
    """
    taken = {short_name(node) for node in alive_workers(queue)}
    manager = ProcessManager(queue.workers_dir)
    for name in folders(queue.workers_dir):
        info = manager.get(name)
        if info is None:
            try:
                age = time.time() - (queue.workers_dir / name).stat().st_mtime
            except FileNotFoundError:
                continue
            if age < STARTING_S:
                taken.add(name)
        elif info.runner_alive():
            taken.add(name)
    return taken


def stop_workers(queue: Backend, kill: bool = False) -> list[WorkerInfo]:
    """Ask every live worker to stop once its running jobs end; those asked.

    With ``kill``, their running jobs are killed (SIGKILL) first.
    """
    workers = queue.workers()
    for worker in workers:
        if kill:
            for name in worker.running:
                try:
                    control.kill(queue, name, force=True)
                except JobError:
                    continue  # it has just ended
        queue.ask_to_stop(worker)
    return workers


def ask_to_stop(worker: WorkerInfo) -> None:
    """SIGTERM to a worker of this host: it stops after its running jobs."""
    if worker.pid is not None:
        try:
            os.kill(worker.pid, signal.SIGTERM)
        except ProcessLookupError:
            pass  # it has just stopped


def offer_options(offer: Offer | None) -> list[str]:
    """The ``worker`` command line options of ``offer``."""
    if offer is None:
        return []
    return [
        "--gpus",
        ",".join(offer.gpus) or "none",
        *(f"--resources={k}={v}" for k, v in sorted(offer.resources.items())),
        f"--slot-patience={offer.patience!r}",
    ]


def work(
    queue: Backend,
    name: str = WORKER_NAME,
    timeout: float = IDLE_TIMEOUT_S,
    concurrency: int = 1,
    loglevel: str = "WARNING",
    *,
    offer: Offer | None = None,
    beat: Beat | None = None,
) -> bool:
    """Run worker ``name`` in this process until the queue stays empty.

    Jobs run on the GPUs and resources of ``offer`` (default: every GPU the
    machine has). Returns False at once if a worker of that name already
    runs. A job queued just as the worker was leaving is not left behind:
    the worker looks at the queue again after it has let go of its name.
    """
    from celery.signals import worker_ready, worker_shutting_down  # noqa: PLC0415

    if node_name(name) in held_locks(queue.locks_dir):
        return False
    asked_to_stop: list[bool] = []

    def on_shutdown(**_: Any) -> None:
        asked_to_stop.append(True)

    def on_ready(sender: Any = None, **_: Any) -> None:
        sender.timer.call_repeatedly(
            BEAT_CHECK_S, lambda: _drop_unwanted_waits(queue, sender)
        )
        if beat is not None:
            beat.check()
            sender.timer.call_repeatedly(BEAT_CHECK_S, beat.check)

    worker_shutting_down.connect(on_shutdown, weak=False)
    worker_ready.connect(on_ready, weak=False)
    if beat is not None:
        timeout = BEAT_IDLE_S  # a scheduler stays until it is stopped
    queue.app.conf[OFFER_KEY] = offer or Offer(detect_gpus(), {})
    queue.app.conf[CONCURRENCY_KEY] = concurrency
    # Slots held by a worker that died are free again: try their jobs.
    lifecycle.promote(queue)
    try:
        with queue.worker_session(node_name(name)):
            _drain(
                queue,
                name,
                timeout=timeout,
                concurrency=concurrency,
                loglevel=loglevel,
                asked_to_stop=asked_to_stop,
            )
    finally:
        worker_shutting_down.disconnect(on_shutdown)
        worker_ready.disconnect(on_ready)
        if beat is not None:
            beat.close()
        WATCHDOG.close()
    return True


def _drop_unwanted_waits(queue: Backend, consumer: Any) -> None:
    """Drop held messages (a retry's delay, ``run --at``) of jobs since killed.

    Otherwise the worker would stay until the time came, for nothing.
    """
    from dvc_task.worker.temporary import drop_scheduled  # noqa: PLC0415

    def wanted(request: Any) -> bool:
        if request.name != JOB_TASK:
            return True
        try:
            record = queue.load(str(request.kwargs.get("name")))
        except (UnknownJobError, InvalidJobRecordError, ValueError):
            return False
        return record.task_id == request.id and not record.finished

    try:
        for task_id in drop_scheduled(consumer, wanted):
            logger.info("message %s dropped: its job will not run", task_id)
    except Exception:
        logger.exception("looking at held messages; trying again")


def _drain(
    queue: Backend,
    name: str,
    *,
    timeout: float,
    concurrency: int,
    loglevel: str,
    asked_to_stop: list[bool],
) -> None:
    from dvc_task.worker.temporary import TemporaryWorker  # noqa: PLC0415

    while True:
        TemporaryWorker(
            queue.app,
            timeout=timeout,
            pool="threads",
            concurrency=concurrency,
            prefetch_multiplier=1,
            without_heartbeat=True,
            without_mingle=True,
            without_gossip=True,
            loglevel=loglevel,
        ).start(name)
        if asked_to_stop or not queue.has_queued():
            return
