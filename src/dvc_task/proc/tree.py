"""Signalling a whole job: a process, its process group and its descendants."""

from __future__ import annotations

import logging
import os
import time

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


def _running(proc: psutil.Process) -> bool:
    try:
        return proc.status() != psutil.STATUS_ZOMBIE
    except psutil.Error:
        return False


def wait_ended(procs: list[psutil.Process], timeout: float) -> list[psutil.Process]:
    """Wait up to ``timeout`` seconds for ``procs`` to end; those still running.

    A zombie has ended: its parent (maybe not us, maybe nobody in a
    container) has only to reap it.
    """
    deadline = time.monotonic() + timeout
    delay = 0.005
    alive = [proc for proc in procs if _running(proc)]
    while alive and time.monotonic() < deadline:
        time.sleep(min(delay, max(0.0, deadline - time.monotonic())))
        delay = min(delay * 2, 0.1)
        alive = [proc for proc in alive if _running(proc)]
    return alive


def wait_gone(pids: list[int], timeout: float) -> None:
    """Wait up to ``timeout`` seconds for ``pids`` to end; log any that lives on."""
    procs = []
    for pid in pids:
        try:
            procs.append(psutil.Process(pid))
        except psutil.NoSuchProcess:
            continue
    for proc in wait_ended(procs, timeout):
        logger.warning("Process %d survived SIGKILL", proc.pid)
