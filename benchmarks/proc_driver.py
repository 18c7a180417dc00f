"""Drives whichever dvc-task the running interpreter has (ours or 0.40.2).

Usage:
  python proc_driver.py make WDIR N          N finished process folders
  python proc_driver.py processes WDIR RUNS  seconds per processes() listing
  python proc_driver.py follow WDIR LINES    follow latencies of LINES lines
  python proc_driver.py run WDIR N           seconds per managed run of `true`
All results are printed as JSON.
"""

from __future__ import annotations

import json
import os
import statistics
import sys
import time

from dvc_task.proc import ManagedProcess, ProcessInfo, ProcessManager

WRITER = (
    "import sys, time\n"
    "for i in range(int(sys.argv[1])):\n"
    "    time.sleep(0.03)\n"
    "    print(f'{i} {time.monotonic()}', flush=True)\n"
)


def make(wdir: str, count: str) -> None:
    """Write ``count`` finished-process folders the way our ManagedProcess does."""
    for i in range(int(count)):
        name = f"exp-{i:05d}"
        folder = os.path.join(wdir, name)
        os.makedirs(folder, mode=0o700)
        out = os.path.join(folder, f"{name}.out")
        with open(out, "w") as fobj:
            fobj.write("done\n")
        info = ProcessInfo(
            pid=100000 + i, stdin=None, stdout=out, stderr=None, returncode=0
        )
        for key, value in (
            ("create_time", 1.0e9 + i),
            ("started_at", "x"),
            ("finished_at", "y"),
            ("args", ["python", "train.py"]),
        ):
            if hasattr(info, key):
                setattr(info, key, value)
        info.dump(os.path.join(folder, f"{name}.json"))
        with open(os.path.join(folder, f"{name}.pid"), "w") as fobj:
            fobj.write(str(info.pid))
    print(json.dumps({"made": int(count)}))


def processes(wdir: str, runs: str) -> None:
    times = []
    count = 0
    for _ in range(int(runs)):
        start = time.perf_counter()
        count = len(list(ProcessManager(wdir).processes()))
        times.append(time.perf_counter() - start)
    print(json.dumps({"seconds": statistics.median(times), "count": count}))


def follow(wdir: str, lines: str) -> None:
    ManagedProcess.spawn(
        [sys.executable, "-c", WRITER, lines], wdir=os.path.join(wdir, "w"), name="w"
    )
    manager = ProcessManager(wdir)
    while manager.get("w") is None:
        time.sleep(0.001)
    delays = []
    for line in manager.follow("w"):
        seen = time.monotonic()
        delays.append(seen - float(line.split()[1]))
    print(json.dumps({"delays": delays}))


def run(wdir: str, count: str) -> None:
    """Seconds per ``with ManagedProcess(["true"], ...)``, as a task runs it.

    Every process gets its own new folder, as under ``ProcessManager``; the
    first tenth is left out (warm-up).
    """
    total = int(count)
    warm = total // 10
    start = 0.0
    for i in range(total):
        if i == warm:
            start = time.perf_counter()
        name = f"run-{i:05d}"
        with ManagedProcess(["true"], wdir=os.path.join(wdir, name), name=name):
            pass
    print(json.dumps({"seconds": (time.perf_counter() - start) / (total - warm)}))


if __name__ == "__main__":
    commands = {"make": make, "processes": processes, "follow": follow, "run": run}
    commands[sys.argv[1]](*sys.argv[2:])
