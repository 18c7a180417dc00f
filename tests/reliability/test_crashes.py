"""Kill -9 workers, producers and runners at random moments: nothing is lost.

Sizes are small in the normal run and large with ``--full``
(``nox -s reliability``); every trial is seeded, so a failure replays.
"""

from __future__ import annotations

import base64
import collections
import json
import os
import random
import signal
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

import pytest

from dvc_task.proc import ManagedProcess, ProcessManager

from conftest import HELPERS, Processes, lines, wait_finished, wait_for

sys.path.insert(0, str(HELPERS))
from taskapp import make_app

PRODUCER = (
    "import sys\n"
    "from taskapp import make_app\n"
    "app = make_app(sys.argv[1])\n"
    "print('ready', flush=True)\n"
    "i = 0\n"
    "while True:\n"
    "    item = f'{sys.argv[3]}-{i}'\n"
    "    app.send_task('record', args=[sys.argv[2], item, 'x' * 50000])\n"
    "    i += 1\n"
)


def reserved_messages(wdir: Path) -> list[Path]:
    return list((wdir / "broker" / "reserved").rglob("*.msg"))


@pytest.mark.parametrize("seed", [1, 2, 3])
def test_workers_killed_at_random_moments_lose_no_job(
    wdir: Path,
    processes: Processes,
    tmp_path: Path,
    full: bool,
    figures: dict[str, Any],
    seed: int,
) -> None:
    rng = random.Random(seed)
    jobs, max_kills = (1000, 100) if full else (30, 6)
    app = make_app(str(wdir), acks_late=True)
    journal = tmp_path / "journal"
    for i in range(jobs):
        app.send_task("journal", args=[str(journal), str(i), rng.randint(0, 60)])

    kills = 0
    while kills < max_kills:
        worker = processes.worker(
            wdir,
            name=f"w{kills}",
            timeout=0.3,
            acks_late=True,
            prefetch_multiplier=rng.choice([1, 4]),
        )
        try:
            # From start-up (about half a second) to deep into the drain.
            worker.wait(timeout=rng.uniform(0.1, 1.2))
            break  # drained before its kill moment
        except subprocess.TimeoutExpired:
            os.killpg(worker.pid, signal.SIGKILL)
            worker.wait()
            kills += 1
    assert processes.worker(wdir, name="final", acks_late=True).wait(timeout=300) == 0

    entries = collections.Counter(lines(journal))
    ended = {item for item in map(str, range(jobs)) if entries[f"end:{item}"]}
    reruns = sum(entries[f"start:{i}"] - 1 for i in range(jobs))
    assert ended == set(map(str, range(jobs))), "a job was lost"
    # Only a job running (or not yet acked) when its worker died runs again.
    assert reruns <= kills
    assert not reserved_messages(wdir)
    assert not list(app.iter_queued())
    stats = figures.setdefault(
        "worker_kill_trials", {"kills": 0, "jobs": 0, "reruns": 0, "lost": 0}
    )
    stats["kills"] += kills
    stats["jobs"] += jobs
    stats["reruns"] += reruns


def test_producers_killed_mid_publish_leave_no_partial_message(
    wdir: Path,
    processes: Processes,
    tmp_path: Path,
    full: bool,
    figures: dict[str, Any],
) -> None:
    rng = random.Random(7)
    kills = 40 if full else 4
    app = make_app(str(wdir))
    done = tmp_path / "done"
    for k in range(kills):
        producer = processes.start(
            sys.executable, "-c", PRODUCER, wdir, done, str(k), stdout=subprocess.PIPE
        )
        assert producer.stdout is not None
        assert producer.stdout.readline() == b"ready\n"
        try:
            producer.wait(timeout=rng.uniform(0.0, 0.3))
        except subprocess.TimeoutExpired:
            producer.kill()
            producer.wait()

    queued = list(app.iter_queued())
    assert not os.listdir(wdir / "broker" / "quarantine"), "a torn message was seen"
    torn = list((wdir / "broker" / "tmp").iterdir())
    old = time.time() - 3600
    for path in torn:
        os.utime(path, (old, old))
    app.clean()
    assert not list((wdir / "broker" / "tmp").iterdir())

    assert processes.worker(wdir).wait(timeout=300) == 0
    assert sorted(lines(done)) == sorted(m.decode()[0][1] for m in queued)
    figures["producer_kills"] = {
        "kills": kills,
        "messages": len(queued),
        "torn_tmp_files_removed": len(torn),
        "partial_messages_seen": 0,
    }


def test_killed_runners_leave_readable_failed_records(
    tmp_path: Path, full: bool, figures: dict[str, Any]
) -> None:
    rng = random.Random(3)
    trials = 15 if full else 3
    manager = ProcessManager(tmp_path / "procs")
    for trial in range(trials):
        name = f"job{trial}"
        ManagedProcess.spawn(
            ["sh", "-c", "while true; do echo tick; sleep 0.01; done"],
            wdir=tmp_path / "procs" / name,
            name=name,
        )
        info = wait_for(lambda name=name: manager.get(name), "the job to start")
        wait_for(lambda info=info: lines(Path(info.stdout)), "output")
        victims = [info.runner_pid, info.pid]
        rng.shuffle(victims)
        assert None not in victims  # never signal pid 0: the test's own group
        for pid in victims:
            os.kill(pid, signal.SIGKILL)

        finished = wait_finished(manager, name, "the job to be reported finished")
        assert finished.returncode != 0
        assert set(manager.follow(name)) == {"tick\n"}
        manager.remove(name)
        assert name not in list(manager)
    figures["runner_kills"] = {"trials": trials, "stuck_running": 0}


WATCHER = (
    "import sys, time\n"
    "from taskapp import make_app\n"
    "from dvc_task.proc import ProcessManager\n"
    "app = make_app(sys.argv[1])\n"
    "manager = ProcessManager(sys.argv[2])\n"
    "loops = 0\n"
    "while True:\n"
    "    list(app.iter_queued()); list(app.iter_processed())\n"
    "    for name, info in list(manager.processes()):\n"
    "        list(manager.follow(name, sleep_interval=0.01)) "
    "if info.returncode is not None else None\n"
    "    loops += 1\n"
    "    print(loops, flush=True)\n"
)


def test_many_producers_and_workers_run_each_message_exactly_once(
    wdir: Path,
    processes: Processes,
    tmp_path: Path,
    full: bool,
    figures: dict[str, Any],
) -> None:
    producers, per_producer, workers = (8, 500, 4) if full else (2, 50, 2)
    make_app(str(wdir))
    done = tmp_path / "done"
    procs = tmp_path / "procs"
    watcher = processes.start(
        sys.executable, "-c", WATCHER, wdir, procs, stdout=subprocess.PIPE
    )
    script = (
        "import sys\n"
        "from taskapp import make_app\n"
        "from dvc_task.proc import ProcessManager\n"
        "app = make_app(sys.argv[1])\n"
        "manager = ProcessManager(sys.argv[4])\n"
        "for i in range(int(sys.argv[3])):\n"
        "    item = f'{sys.argv[2]}-{i}'\n"
        "    if i % 50 == 0:\n"
        "        manager.run_signature(['echo', item], name=item).delay()\n"
        "    app.send_task('record', args=[sys.argv[5], item])\n"
    )
    senders = [
        processes.start(
            sys.executable, "-c", script, wdir, f"p{p}", str(per_producer), procs, done
        )
        for p in range(producers)
    ]
    runners = [processes.worker(wdir, name=f"w{w}", timeout=1) for w in range(workers)]
    for sender in senders:
        assert sender.wait(timeout=600) == 0
    for runner in runners:
        assert runner.wait(timeout=600) == 0
    assert processes.worker(wdir, name="last", timeout=0.3).wait(timeout=300) == 0

    assert watcher.poll() is None, "the watcher crashed"
    watcher.kill()
    watcher.wait()
    expected = [f"p{p}-{i}" for p in range(producers) for i in range(per_producer)]
    assert sorted(lines(done)) == sorted(expected)
    manager = ProcessManager(procs)
    assert all(info.returncode == 0 for _, info in manager.processes())
    figures["concurrency"] = {
        "producers": producers,
        "messages": len(expected),
        "workers": workers,
        "duplicates": 0,
        "lost": 0,
    }


def test_message_stamped_far_in_the_future_or_past_is_delivered(
    wdir: Path, processes: Processes, tmp_path: Path
) -> None:
    app = make_app(str(wdir))
    done = tmp_path / "done"
    app.send_task("record", args=[str(done), "normal"])
    inbox = wdir / "broker" / "in"
    (original,) = inbox.iterdir()
    payload = json.loads(original.read_text())
    for stamp, item in (("99999999999999", "future"), ("1", "past")):
        body = json.dumps([[str(done), item], {}, {}]).encode()
        copy = dict(payload)
        copy["body"] = base64.b64encode(body).decode()
        copy["properties"] = {**payload["properties"], "delivery_tag": item}
        (inbox / f"{stamp}_{item}.celery.msg").write_text(json.dumps(copy))

    assert processes.worker(wdir).wait(timeout=120) == 0

    assert sorted(lines(done)) == ["future", "normal", "past"]
