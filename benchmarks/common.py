"""Helpers shared by the benchmarks: child workers, waiting, tables."""

from __future__ import annotations

import os
import platform
import signal
import statistics
import subprocess
import sys
import time
from collections.abc import Sequence
from pathlib import Path
from typing import Callable

import celery
import kombu

HERE = Path(__file__).parent


def wait_until(
    predicate: Callable[[], object],
    what: str,
    timeout: float = 120,
    interval: float = 0.001,
) -> None:
    deadline = time.monotonic() + timeout
    while not predicate():
        if time.monotonic() > deadline:
            raise TimeoutError(f"gave up waiting for {what}")
        time.sleep(interval)


def read_stamps(path: Path) -> dict[str, float]:
    if not path.exists():
        return {}
    stamps = {}
    for line in path.read_text().splitlines():
        label, _, value = line.partition(" ")
        stamps[label] = float(value)
    return stamps


def start_worker(script: str, *args: str, log: Path) -> subprocess.Popen[bytes]:
    with open(log, "ab") as out:
        return subprocess.Popen(
            [sys.executable, str(HERE / script), *args],
            stdout=out,
            stderr=subprocess.STDOUT,
            start_new_session=True,
        )


def stop(proc: subprocess.Popen[bytes]) -> None:
    if proc.poll() is None:
        os.killpg(proc.pid, signal.SIGKILL)
    proc.wait()


def median(values: Sequence[float]) -> float:
    return statistics.median(values)


def p95(values: Sequence[float]) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, round(0.95 * (len(ordered) - 1)))]


def machine() -> str:
    return (
        f"{os.cpu_count()} cores, Python {platform.python_version()}, "
        f"{platform.system()} {platform.release()}, celery {celery.__version__}, "
        f"kombu {kombu.__version__}"
    )


def publish_report(
    title: str,
    notes: str,
    header: Sequence[str],
    rows: Sequence[Sequence[str]],
    output: Path | None,
) -> None:
    """Print a Markdown section (machine, notes, table); write it to ``output``."""
    report = "\n".join(
        [
            f"## {title}",
            "",
            f"Machine: {machine()}. {notes}",
            "",
            table(header, rows),
            "",
        ]
    )
    print(report)
    if output:
        output.write_text(report)


def table(header: Sequence[str], rows: Sequence[Sequence[str]]) -> str:
    lines = ["| " + " | ".join(header) + " |", "|" + "---|" * len(header)]
    lines += ["| " + " | ".join(row) + " |" for row in rows]
    return "\n".join(lines)
