"""What every peer driver shares: timing jobs, sampling memory, printing JSON.

A driver is run by the interpreter of the peer it measures (its own virtual
environment), so this module uses only the standard library and psutil.
"""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from typing import Callable

import psutil


def append_stamp(path: str, label: str) -> None:
    fd = os.open(path, os.O_WRONLY | os.O_APPEND | os.O_CREAT, 0o600)
    try:
        os.write(fd, f"{label} {time.monotonic()}\n".encode())
    finally:
        os.close(fd)


def read_stamps(path: str) -> dict[str, float]:
    stamps: dict[str, float] = {}
    if os.path.exists(path):
        with open(path) as fobj:
            for line in fobj:
                label, _, value = line.partition(" ")
                stamps[label] = float(value)
    return stamps


def run_work(work: str) -> None:
    """The job: run ``true``, sleep 50 ms, or nothing (``none``)."""
    if work == "true":
        subprocess.run(["true"], check=True)
    elif work == "sleep50":
        time.sleep(0.05)


def wait_until(predicate: Callable[[], object], timeout: float = 600) -> None:
    deadline = time.monotonic() + timeout
    while not predicate():
        if time.monotonic() > deadline:
            raise TimeoutError("benchmark job did not finish")
        time.sleep(0.001)


def tree_rss(pid: int) -> int:
    try:
        proc = psutil.Process(pid)
        procs = [proc, *proc.children(recursive=True)]
    except psutil.Error:
        return 0
    total = 0
    for each in procs:
        try:
            total += each.memory_info().rss
        except psutil.Error:
            continue
    return total


def spawn(args: list[str]) -> subprocess.Popen[bytes]:
    return subprocess.Popen(
        args,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
        start_new_session=True,
    )


def stop(proc: subprocess.Popen[bytes]) -> None:
    if proc.poll() is None:
        os.killpg(proc.pid, signal.SIGKILL)
    proc.wait()


def measure(
    start_worker: Callable[[], subprocess.Popen[bytes]],
    enqueue: Callable[[str, str, str], None],
    *,
    mode: str,
    wdir: str,
    count: int,
    work: str,
) -> dict[str, object]:
    """Run one workload against a worker; see the drivers' usage."""
    out = os.path.join(wdir, "stamps")
    if mode == "latency":
        worker = start_worker()
        try:
            enqueue(out, "warmup", "none")
            wait_until(lambda: "warmup" in read_stamps(out))
            idle_rss = psutil.Process(worker.pid).memory_info().rss
            delays = []
            for i in range(count):
                time.sleep(0.05 + 0.1 * (i % 3) / 2)  # the worker goes idle
                sent = time.monotonic()
                enqueue(out, str(i), "none")
                wait_until(lambda i=i: str(i) in read_stamps(out))
                delays.append(read_stamps(out)[str(i)] - sent)
        finally:
            stop(worker)
        return {"delays": delays, "idle_rss": idle_rss}
    for i in range(count):
        enqueue(out, str(i), work)
    started = time.monotonic()
    worker = start_worker()
    peak = 0
    try:
        while len(read_stamps(out)) < count:
            peak = max(peak, tree_rss(worker.pid))
            time.sleep(0.02)
    finally:
        stop(worker)
    stamps = read_stamps(out)
    first, last = min(stamps.values()), max(stamps.values())
    return {
        "rate": (count - 1) / (last - first) if last > first else float("inf"),
        "cold_start": first - started,
        "peak_rss": peak,
    }


Peer = Callable[
    [str, int],
    tuple[Callable[[], "subprocess.Popen[bytes]"], Callable[[str, str, str], None]],
]


def main(peer: Peer, argv: list[str]) -> None:
    """``MODE WDIR COUNT WORK CONCURRENCY``: measure, print JSON.

    MODE ``latency`` queues COUNT jobs one at a time to an idle worker;
    ``drain`` queues COUNT jobs of WORK (``true``, ``sleep50``), then starts a
    worker of CONCURRENCY slots. ``peer(wdir, concurrency)`` returns the
    peer's (start_worker, enqueue).
    """
    mode, wdir, count, work, concurrency = argv
    os.makedirs(wdir, exist_ok=True)
    start_worker, enqueue = peer(wdir, int(concurrency))
    result = measure(
        start_worker, enqueue, mode=mode, wdir=wdir, count=int(count), work=work
    )
    print(json.dumps(result), file=sys.__stdout__, flush=True)
