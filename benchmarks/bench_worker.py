"""TemporaryWorker exit lag: ours against dvc-task 0.40.2, side by side.

The lag is the time from the queue becoming empty (the last job ended) to the
worker returning, beyond its idle ``timeout``. dvc-task 0.40.2 runs from its
own virtual environment (``--peer-040``, made by ``nox -s bench``).
"""

from __future__ import annotations

import argparse
import json
import subprocess
import sys
import tempfile
from pathlib import Path

from common import HERE, median, publish_report

DRIVER = str(HERE / "worker_driver.py")


def lag(python: str, work: Path, timeout: float) -> float:
    work.mkdir(parents=True)
    out = subprocess.run(
        [python, DRIVER, str(work), str(timeout)],
        check=True,
        capture_output=True,
        text=True,
    ).stdout
    return float(json.loads(out.strip().splitlines()[-1])["lag"])


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--peer-040", required=True, help="python of dvc-task 0.40.2")
    parser.add_argument("--runs", type=int, default=3)
    parser.add_argument("--output", type=Path)
    args = parser.parse_args()
    peers = {"0.40.2": args.peer_040, "ours": sys.executable}

    rows = []
    with tempfile.TemporaryDirectory() as tmp:
        for timeout in (1.0, 5.0):
            lags = {
                label: median(
                    [
                        lag(python, Path(tmp, f"{label}-{timeout}-{run}"), timeout)
                        for run in range(args.runs)
                    ]
                )
                for label, python in peers.items()
            }
            old, new = lags["0.40.2"], lags["ours"]
            rows.append(
                [
                    f"exit lag beyond timeout={timeout:g} s (s)",
                    f"{old:.2f}",
                    f"{new:.2f}",
                    f"{old / new:.0f}x lower",
                ]
            )

    publish_report(
        "TemporaryWorker: ours vs dvc-task 0.40.2",
        (
            f"Median of {args.runs} runs; one trivial job, DVC's worker settings; "
            "lag = exit time - last job end - timeout."
        ),
        ["measure", "dvc-task 0.40.2", "ours", "ours vs 0.40.2"],
        rows,
        args.output,
    )


if __name__ == "__main__":
    main()
