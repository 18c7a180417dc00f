"""dvc-task against what a user would pick instead, in one run.

Peers: dvc-task 0.40.2 and huey (``SqliteHuey`` + its consumer), each from its
own virtual environment (made by ``nox -s bench``), and the floor: a plain
loop of ``subprocess.run``. Every workload runs ``--runs`` times; the median
is reported. Exit lag, follow() and processes() (which huey has no
counterpart for) come from ``bench_perjob.py`` and ``bench_proc.py``.
"""

from __future__ import annotations

import argparse
import json
import subprocess
import sys
import tempfile
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any

from common import HERE, median, p95, publish_report

DRIVERS = HERE / "peers"


def drive(python: str, driver: str, *args: str) -> dict[str, Any]:
    out = subprocess.run(
        [python, str(DRIVERS / driver), *args],
        check=True,
        capture_output=True,
        text=True,
        timeout=3600,
    ).stdout
    return json.loads(out.strip().splitlines()[-1])  # type: ignore[no-any-return]


def floor(mode: str, count: int, work: str, concurrency: int) -> dict[str, Any]:
    """The same jobs with no queue at all: ``subprocess.run`` in a loop."""

    def job(_: int) -> None:
        if work == "true":
            subprocess.run(["true"], check=True)
        else:
            time.sleep(0.05)

    if mode == "latency":
        delays = []
        for _ in range(count):
            start = time.monotonic()
            subprocess.run(["true"], check=True)
            delays.append(time.monotonic() - start)
        return {"delays": delays}
    start = time.monotonic()
    with ThreadPoolExecutor(concurrency) as pool:
        list(pool.map(job, range(count)))
    return {"rate": count / (time.monotonic() - start)}


#: dvc-task 0.40.2 waits a polling second whenever its single prefetch slot
#: frees up, so it runs about one job a second whatever the count: its drains
#: use this many jobs, once, and skip the large drain.
SLOW_PEER_JOBS = 60


def measure(
    peers: dict[str, tuple[str, str]], args: argparse.Namespace, work: Path
) -> dict[str, Any]:
    results: dict[str, dict[str, float]] = {name: {} for name in [*peers, "floor"]}

    def run(name: str, *args: str) -> dict[str, Any]:
        if name == "floor":
            mode, _, count, job, conc = args
            return floor(mode, int(count), job, int(conc))
        python, driver = peers[name]
        return drive(python, driver, *args)

    def drains(name: str, jobs: int, work_kind: str, conc: int, runs: int) -> list[Any]:
        return [
            run(
                name,
                "drain",
                str(work / f"{name}-{work_kind}{conc}-{jobs}-{i}"),
                str(jobs),
                work_kind,
                str(conc),
            )
            for i in range(runs)
        ]

    for name, r in results.items():
        slow = name == "0.40.2"
        runs, jobs = (1, SLOW_PEER_JOBS) if slow else (args.runs, args.jobs)
        lat = [
            run(name, "latency", str(work / f"{name}-lat{i}"), "20", "none", "1")
            for i in range(args.runs)
        ]
        r["lat_med"] = median([median(x["delays"]) for x in lat]) * 1000
        r["lat_p95"] = median([p95(x["delays"]) for x in lat]) * 1000
        small = drains(name, jobs, "true", 1, runs)
        r["drain"] = median([x["rate"] for x in small])
        if not slow:
            r["drain_big"] = drains(name, args.big_jobs, "true", 1, 1)[0]["rate"]
        if name != "floor":
            r["idle_rss"] = median([x["idle_rss"] for x in lat]) / 2**20
            r["cold"] = median([x["cold_start"] for x in small])
            r["peak_rss"] = median([x["peak_rss"] for x in small]) / 2**20
        for conc in (2, 4):
            rates = [x["rate"] for x in drains(name, jobs, "sleep50", conc, runs)]
            r[f"conc{conc}"] = median(rates)
    return results


def rows_spec(jobs: int, big: int) -> list[tuple[str, str, bool]]:
    """(label, result key, lower is better) of each table row."""
    return [
        ("queue->start latency, median (ms)", "lat_med", True),
        ("queue->start latency, p95 (ms)", "lat_p95", True),
        (f"drain {jobs} jobs of `true` (jobs/s)", "drain", False),
        (f"drain {big:,} jobs of `true` (jobs/s, 1 run)", "drain_big", False),
        ("cold start: worker start to first job done (s)", "cold", True),
        ("idle worker RSS (MiB)", "idle_rss", True),
        (f"peak RSS of the worker tree, draining {jobs} (MiB)", "peak_rss", True),
        (f"concurrency 2: {jobs} jobs of 50 ms (jobs/s; ideal 40)", "conc2", False),
        (f"concurrency 4: {jobs} jobs of 50 ms (jobs/s; ideal 80)", "conc4", False),
    ]


def _ratio(ours: float | None, other: float | None, lower_is_better: bool) -> str:
    if not ours or not other:
        return "n/a"
    value = other / ours if lower_is_better else ours / other
    return f"{value:.2g}x"


def chart(results: dict[str, dict[str, float]], path: Path) -> None:
    import matplotlib  # noqa: PLC0415 - a bench-only dependency

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt  # noqa: PLC0415

    keys = [
        ("lat_med", "latency median (ms)"),
        ("drain", "drain (jobs/s)"),
        ("cold", "cold start (s)"),
        ("idle_rss", "idle RSS (MiB)"),
        ("conc4", "concurrency 4 (jobs/s)"),
    ]
    fig, axes = plt.subplots(1, len(keys), figsize=(4 * len(keys), 3.5))
    for ax, (key, title) in zip(axes, keys):
        names = [n for n in results if key in results[n]]
        ax.bar(
            names,
            [results[n][key] for n in names],
            color=["#2a7", "#c55", "#57c", "#999"][: len(names)],
        )
        ax.set_title(title)
        ax.set_yscale("log")
        ax.tick_params(axis="x", rotation=30)
    fig.tight_layout()
    fig.savefig(path, dpi=100)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--peer-040", required=True, help="python of dvc-task 0.40.2")
    parser.add_argument("--huey", required=True, help="python with huey and psutil")
    parser.add_argument("--runs", type=int, default=3)
    parser.add_argument("--jobs", type=int, default=300)
    parser.add_argument("--big-jobs", type=int, default=1000)
    parser.add_argument("--output", type=Path)
    parser.add_argument("--chart", type=Path)
    args = parser.parse_args()
    peers = {
        "ours": (sys.executable, "dvctask_driver.py"),
        "0.40.2": (args.peer_040, "dvctask_driver.py"),
        "huey": (args.huey, "huey_driver.py"),
    }
    with tempfile.TemporaryDirectory() as tmp:
        results = measure(peers, args, Path(tmp))

    rows = []
    for label, key, lower in rows_spec(args.jobs, args.big_jobs):
        values = [results[n].get(key) for n in ("ours", "0.40.2", "huey", "floor")]
        cells = [f"{v:.3g}" if v is not None else "n/a" for v in values]
        ratios = [_ratio(values[0], v, lower) for v in values[1:]]
        rows.append([label, *cells, *ratios])
    publish_report(
        "Peers: ours vs dvc-task 0.40.2, huey and the bare-process floor",
        f"Median of {args.runs} runs (1 for {args.big_jobs:,} jobs). dvc-task "
        "workers use DVC's settings (threads pool, prefetch 1, late acks); huey its "
        "defaults (thread workers, polling with back-off up to 10 s); the "
        "floor runs the jobs with subprocess.run in a loop. dvc-task 0.40.2 "
        f"runs about one job a second whatever the count, so its drains use "
        f"{SLOW_PEER_JOBS} jobs, one run. Ratios: how many "
        "times better ours is (above 1x: ours is better).",
        [
            "measure",
            "ours",
            "0.40.2",
            "huey",
            "floor",
            "vs 0.40.2",
            "vs huey",
            "vs floor",
        ],
        rows,
        args.output,
    )
    if args.chart:
        chart(results, args.chart)


if __name__ == "__main__":
    main()
