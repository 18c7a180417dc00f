"""Our dvcfs:// transport against Kombu's stock filesystem:// transport.

Measures, side by side in one run: queue->start latency on an idle worker,
the drain rate of 300 trivial jobs, and the CPU an idle worker burns.
Run with ``nox -s bench`` (or ``python benchmarks/bench_transport.py``).
"""

from __future__ import annotations

import argparse
import random
import tempfile
import time
from pathlib import Path

import psutil

from benchapp import make_app
from common import (
    median,
    p95,
    publish_report,
    read_stamps,
    start_worker,
    stop,
    wait_until,
)

TRANSPORTS = ("filesystem", "dvcfs")


def _ready(app_dir: Path, transport: str, log: Path) -> tuple[object, object]:
    app = make_app(str(app_dir), transport)
    proc = start_worker("benchapp.py", str(app_dir), transport, log=log)
    out = app_dir / "warmup"
    app.send_task("stamp", args=[str(out), "warmup"])
    wait_until(lambda: read_stamps(out), "the worker to start")
    return app, proc


def latency(transport: str, samples: int, work: Path) -> list[float]:
    app_dir = work / f"latency-{transport}"
    app, proc = _ready(app_dir, transport, work / f"latency-{transport}.log")
    out = app_dir / "stamps"
    delays = []
    try:
        for i in range(samples):
            time.sleep(random.uniform(0.05, 0.15))  # let the worker go idle
            sent = time.monotonic()
            app.send_task("stamp", args=[str(out), str(i)])  # type: ignore[attr-defined]
            wait_until(lambda i=i: str(i) in read_stamps(out), f"job {i}")
            delays.append(read_stamps(out)[str(i)] - sent)
    finally:
        stop(proc)  # type: ignore[arg-type]
    return delays


def idle_cpu(transport: str, seconds: float, work: Path) -> float:
    app_dir = work / f"idle-{transport}"
    _, proc = _ready(app_dir, transport, work / f"idle-{transport}.log")
    try:
        ps = psutil.Process(proc.pid)  # type: ignore[attr-defined]
        before = ps.cpu_times()
        time.sleep(seconds)
        after = ps.cpu_times()
    finally:
        stop(proc)  # type: ignore[arg-type]
    used = (after.user + after.system) - (before.user + before.system)
    return 100 * used / seconds


def publish(transport: str, jobs: int, work: Path) -> float:
    app_dir = work / f"publish-{transport}"
    app = make_app(str(app_dir), transport)
    start = time.monotonic()
    for i in range(jobs):
        app.send_task("stamp", args=["x", str(i)])
    return jobs / (time.monotonic() - start)


def drain(transport: str, jobs: int, work: Path, profile: str = "dvc") -> float:
    app_dir = work / f"drain-{transport}-{jobs}-{profile}"
    app = make_app(str(app_dir), transport)
    out = app_dir / "stamps"
    for i in range(jobs):
        app.send_task("stamp", args=[str(out), str(i)])
    proc = start_worker(
        "benchapp.py",
        str(app_dir),
        transport,
        profile,
        log=work / f"drain-{transport}.log",
    )
    try:
        wait_until(lambda: len(read_stamps(out)) == jobs, f"{jobs} jobs", timeout=900)
    finally:
        stop(proc)
    stamps = read_stamps(out)
    return (jobs - 1) / (max(stamps.values()) - min(stamps.values()))


def _row(
    name: str, stock: float, ours: float, lower_is_better: bool | None
) -> list[str]:
    if lower_is_better is None:
        ratio = "(absolute)"
    elif lower_is_better:
        ratio = f"{stock / ours:.0f}x lower" if ours else "n/a"
    else:
        ratio = f"{ours / stock:.1f}x" if stock else "n/a"
    return [name, f"{stock:.1f}", f"{ours:.1f}", ratio]


def measure(transport: str, args: argparse.Namespace, work: Path) -> dict[str, float]:
    delays = latency(transport, args.samples, work)
    runs = range(args.runs)
    return {
        "lat_med": median(delays) * 1000,
        "lat_p95": p95(delays) * 1000,
        "drain_dvc": median(
            [drain(transport, args.jobs, work / f"d{r}") for r in runs]
        ),
        "drain_celery": median(
            [drain(transport, args.jobs, work / f"c{r}", "celery") for r in runs]
        ),
        "drain_big": drain(transport, args.big_jobs, work / "big", "celery"),
        "publish": median(
            [publish(transport, args.jobs, work / f"p{r}") for r in runs]
        ),
        "cpu": idle_cpu(transport, 5.0, work),
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--samples", type=int, default=20)
    parser.add_argument("--jobs", type=int, default=300)
    parser.add_argument("--big-jobs", type=int, default=3000)
    parser.add_argument("--runs", type=int, default=3)
    parser.add_argument("--output", type=Path)
    args = parser.parse_args()

    with tempfile.TemporaryDirectory() as tmp:
        work = Path(tmp)
        (work / "big").mkdir()
        for r in range(args.runs):
            for kind in "dcp":
                (work / f"{kind}{r}").mkdir()
        stock, ours = (measure(t, args, work) for t in TRANSPORTS)

    jobs, runs = args.jobs, args.runs
    rows = [
        _row(
            "queue->start latency, median (ms)", stock["lat_med"], ours["lat_med"], True
        ),
        _row("queue->start latency, p95 (ms)", stock["lat_p95"], ours["lat_p95"], True),
        _row(
            f"drain {jobs} jobs, DVC settings (jobs/s)",
            stock["drain_dvc"],
            ours["drain_dvc"],
            False,
        ),
        _row(
            f"drain {jobs} jobs, prefetch 4 + early ack (jobs/s)",
            stock["drain_celery"],
            ours["drain_celery"],
            False,
        ),
        _row(
            f"drain {args.big_jobs} jobs, prefetch 4 + early ack (jobs/s, 1 run)",
            stock["drain_big"],
            ours["drain_big"],
            False,
        ),
        _row(f"publish {jobs} jobs (jobs/s)", stock["publish"], ours["publish"], False),
        _row("idle worker CPU (% of one core)", stock["cpu"], ours["cpu"], None),
    ]
    publish_report(
        "Transport: dvcfs:// (ours) vs Kombu's stock filesystem://",
        f"Latency over {args.samples} jobs queued one at a time to an idle "
        f"worker; rates are the median of {runs} runs. DVC settings: threads "
        "pool, concurrency 1, prefetch 1, late acks. Our publish fsyncs "
        "each message; the stock transport does not.",
        ["measure", "filesystem:// (stock)", "dvcfs:// (ours)", "ours vs stock"],
        rows,
        args.output,
    )


if __name__ == "__main__":
    main()
