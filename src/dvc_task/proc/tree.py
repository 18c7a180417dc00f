"""Signalling a whole job: a process, its process group and its descendants."""

from __future__ import annotations

import logging
import os

import psutil

logger = logging.getLogger(__name__)


def descendants(pid: int) -> list[int]:
    """Pids of every descendant of ``pid`` (empty if it is gone)."""
    try:
        return [child.pid for child in psutil.Process(pid).children(recursive=True)]
    except psutil.Error:
        return []


def _leads_group(pid: int) -> bool:
    try:
        return os.getpgid(pid) == pid
    except ProcessLookupError:
        return False


def signal_job(pid: int, sig: int, group: bool) -> list[int]:
    """Send ``sig`` to ``pid``, with ``group`` to its whole job; the pids hit.

    The group is only signalled when ``pid`` leads it, so that a command
    sharing its runner's group (as dvc-task 0.40 ran them) never takes the
    runner down with it; descendants that left the group are signalled one
    by one.

    Raises:
        ProcessLookupError: ``pid`` is gone.
    """
    job = [pid, *descendants(pid)] if group else [pid]
    if group and _leads_group(pid):
        os.killpg(pid, sig)
    else:
        os.kill(pid, sig)
    for other in job[1:]:
        try:
            os.kill(other, sig)
        except ProcessLookupError:
            continue
    return job


def wait_gone(pids: list[int], timeout: float) -> None:
    """Wait up to ``timeout`` seconds for ``pids`` to end; log any that lives on."""
    procs = []
    for pid in pids:
        try:
            procs.append(psutil.Process(pid))
        except psutil.NoSuchProcess:
            continue
    _, alive = psutil.wait_procs(procs, timeout=timeout)
    for proc in alive:
        logger.warning("Process %d survived SIGKILL", proc.pid)
