"""A model-based test of a job's life: random sequences of what users do.

Hypothesis drives real workers and real commands on a folder queue: run
(with ``after``, ``resources``, ``retries``, ``held``), hold, release,
kill, retry, rm, cleanup, the end of a command, a worker started, a worker
killed with SIGKILL. After every step, and once the workers are left to
drain at the end, it checks what users rely on:

- every job is in one phase, and ``jobs()`` (what ``status`` lists) and
  ``job()`` agree on every job that has ended;
- no job ran twice at once (each command holds an OS lock of its job's
  while it runs, and says so if it finds it taken);
- no job is ``lost`` unless a worker died while it ran;
- a job held (and not released, killed or removed since) does not start;
- in the end every job ends in a final state, and ``wait()`` returns it.

A worker killed with SIGKILL takes its running commands with it (its
watchdog does; the test also kills them at once, so that a step never
waits for the watchdog's grace period).

Seeded (derandomized); ``nox -s reliability`` runs it longer (``--full``).
"""

from __future__ import annotations

import os
import signal
import sys
import time
from pathlib import Path

import psutil
import pytest

hypothesis = pytest.importorskip("hypothesis")

from hypothesis import HealthCheck, Phase, settings  # noqa: E402
from hypothesis import strategies as st  # noqa: E402
from hypothesis.stateful import (  # noqa: E402
    RuleBasedStateMachine,
    initialize,
    invariant,
    rule,
    run_state_machine_as_test,
)

from dvc_task.jobs import FINAL_STATES, STATES, UNREADABLE, JobError, JobQueue  # noqa: E402
from dvc_task.jobs.record import PHASES  # noqa: E402
from dvc_task.jobs.slots import Offer  # noqa: E402

from conftest import end_all, wait_for  # noqa: E402

#: The command of every job: takes its job's lock, waits for its gate, exits.
COMMAND = """
import fcntl, os, sys, time
name, folder, code = sys.argv[1], sys.argv[2], int(sys.argv[3])
lock = open(os.path.join(folder, name + ".lock"), "a")
try:
    fcntl.flock(lock, fcntl.LOCK_EX | fcntl.LOCK_NB)
except OSError:
    with open(os.path.join(folder, "overlaps"), "a") as out:
        out.write(name + "\\n")
    fcntl.flock(lock, fcntl.LOCK_EX)
with open(os.path.join(folder, name + ".started"), "a") as out:
    out.write("started\n")
gate = os.path.join(folder, name + ".gate")
while not os.path.exists(gate):
    time.sleep(0.02)
sys.exit(code)
"""
#: Names of jobs: a few, so that steps often meet the same job again.
NAMES = [f"j{number}" for number in range(5)]
#: What a job is submitted with (two rules draw it: jobs are most of the work).
RUN_ARGUMENTS = {
    "name": st.sampled_from(NAMES),
    "after": st.lists(st.sampled_from(NAMES), max_size=2, unique=True),
    "mem": st.booleans(),
    "retries": st.integers(0, 1),
    "held": st.booleans(),
    "code": st.sampled_from([0, 0, 1]),
}
#: The longest a step waits for the workers to take what they can.
SETTLE_S = 2.0
#: What the workers offer: two jobs at once, one unit of "mem".
OFFER = Offer([], {"mem": 1}, patience=1)


class JobLife(RuleBasedStateMachine):
    """What users do to a queue, against what the queue must never do."""

    folder: Path
    scratch: Path

    @initialize()
    def make_queue(self) -> None:
        base = Path(os.environ["DVC_TASK_MODEL_TMP"])
        number = len(list(base.iterdir()))
        self.folder = base / f"run{number}" / "q"
        self.scratch = base / f"run{number}" / "scratch"
        self.scratch.mkdir(parents=True)
        self.script = self.scratch / "job.py"
        self.script.write_text(COMMAND)
        self.queue = JobQueue(self.folder)
        #: Jobs that were starting or running on a worker when it was killed.
        self.orphaned: set[str] = set()
        #: Held jobs, with how many times each had started when it was held.
        self.held: dict[str, int] = {}
        self.queue.start_workers(timeout=30, concurrency=2, offer=OFFER)

    def teardown(self) -> None:
        end_all(self.folder)

    # --- what users do -------------------------------------------------------

    @rule(**RUN_ARGUMENTS)
    def run(
        self,
        name: str,
        after: list[str],
        mem: bool,
        retries: int,
        held: bool,
        code: int,
    ) -> None:
        command = [sys.executable, str(self.script), name, str(self.scratch), str(code)]
        try:
            self.queue.submit(
                command,
                name=name,
                replace=True,
                # Only jobs that exist (an unknown one is refused).
                after=[
                    dep
                    for dep in after
                    if dep != name and self.queue.backend.has_record(dep)
                ],
                resources={"mem": 1} if mem else None,
                retries=retries,
                held=held,
            )
        except JobError:
            return  # taken by a job that has not finished, or waits on it
        (self.scratch / f"{name}.gate").unlink(missing_ok=True)
        self.held.pop(name, None)
        if held:
            self.held[name] = self._starts(name)
        if not self.queue.workers():
            # As ``dvc-task run`` starts one; with the same offer as the
            # others (a worker that offers no "mem" never runs a mem job).
            self.queue.start_workers(timeout=30, concurrency=2, offer=OFFER)

    @rule(**RUN_ARGUMENTS)
    def run_another(
        self,
        name: str,
        after: list[str],
        mem: bool,
        retries: int,
        held: bool,
        code: int,
    ) -> None:
        self.run(name, after, mem, retries, held, code)

    @rule(name=st.sampled_from(NAMES))
    def finish(self, name: str) -> None:
        (self.scratch / f"{name}.gate").touch()

    @rule(name=st.sampled_from(NAMES))
    def hold(self, name: str) -> None:
        if self._try(self.queue.hold, name):
            self.held[name] = self._starts(name)

    @rule(name=st.sampled_from(NAMES))
    def release(self, name: str) -> None:
        self.held.pop(name, None)
        self._try(self.queue.release, name)

    @rule(name=st.sampled_from(NAMES))
    def kill(self, name: str) -> None:
        if self._try(self.queue.kill, name):
            self.held.pop(name, None)

    @rule(name=st.sampled_from(NAMES))
    def retry(self, name: str) -> None:
        self._try(lambda n: self.queue.retry([n]), name)

    @rule(name=st.sampled_from(NAMES))
    def remove(self, name: str) -> None:
        if self._try(self.queue.remove, name):
            self.held.pop(name, None)

    @rule()
    def settle(self) -> None:
        """Let the workers catch up: until nothing waits to start, or 2 s."""
        deadline = time.monotonic() + SETTLE_S
        waiter = self.queue.changes()
        try:
            while time.monotonic() < deadline and any(
                job.state in ("queued", "starting") for job in self.queue.jobs()
            ):
                waiter.wait(0.1)
        finally:
            waiter.close()

    @rule()
    def cleanup(self) -> None:
        self.queue.cleanup()

    @rule()
    def start_worker(self) -> None:
        # At most two at once. (What is drawn never depends on the workers
        # alive: Hypothesis replays a sequence by what it drew.)
        if len(self.queue.workers()) < 2:
            self.queue.start_workers(timeout=30, concurrency=2, offer=OFFER)

    @rule(which=st.integers(0, 1))
    def kill_worker(self, which: int) -> None:
        workers = [w for w in self.queue.workers() if w.pid is not None]
        if not workers:
            return
        worker = workers[which % len(workers)]
        assert worker.pid is not None
        # Its jobs that may be taken or running now (and a moment later).
        at_risk = [
            job
            for job in self.queue.jobs()
            if not job.finished and job.worker in (worker.node, None)
        ]
        try:
            os.kill(worker.pid, signal.SIGKILL)
        except ProcessLookupError:
            return  # it has just exited, idle
        wait_for(
            lambda: not psutil.pid_exists(worker.pid or 0) or _zombie(worker.pid),
            "the killed worker to die",
        )
        for job in self.queue.jobs():
            if job.worker == worker.node and job.pid and not job.finished:
                _kill_group(job.pid)
        self.orphaned.update(job.name for job in at_risk)

    def _try(self, action: object, name: str) -> bool:
        """Whether ``action(name)`` was done (not refused)."""
        try:
            action(name)  # type: ignore[operator]
        except (JobError, KeyError):
            return False  # an unknown job, or one in the wrong state: said
        return True

    def _starts(self, name: str) -> int:
        """How many times job ``name``'s command has started so far."""
        path = self.scratch / f"{name}.started"
        return len(path.read_text().splitlines()) if path.exists() else 0

    # --- what the queue must never do ----------------------------------------

    @invariant()
    def listings_agree(self) -> None:
        if not hasattr(self, "queue"):
            return
        listed = {job.name: job for job in self.queue.jobs()}
        for name, job in listed.items():
            assert job.state in (*STATES, UNREADABLE), job
            if job.state == UNREADABLE:
                continue
            assert self.queue.backend.load(name).phase in PHASES
            if job.finished:
                assert self.queue.job(name).state == job.state, name
            if job.state == "lost":
                assert name in self.orphaned, f"{name} lost with no worker dead"

    @invariant()
    def a_held_job_does_not_start(self) -> None:
        if not hasattr(self, "held"):
            return
        for name, starts in self.held.items():
            assert self._starts(name) == starts, f"held job {name} started"

    @invariant()
    def no_job_ran_twice_at_once(self) -> None:
        if not hasattr(self, "scratch"):
            return
        overlaps = self.scratch / "overlaps"
        assert not overlaps.exists(), overlaps.read_text()

    def drain(self) -> None:
        """Release, open every gate, run a worker: every job must end."""
        for job in self.queue.jobs():
            if job.state == "held":
                self.queue.release(job.name)
        self.held.clear()
        for name in NAMES:
            (self.scratch / f"{name}.gate").touch()
        self.queue.start_workers(timeout=30, concurrency=2, offer=OFFER)
        for job in self.queue.jobs():
            ended = self.queue.wait(job.name, timeout=120)
            assert ended.state in FINAL_STATES, ended
        self.no_job_ran_twice_at_once()


def _zombie(pid: int | None) -> bool:
    try:
        return psutil.Process(pid).status() == psutil.STATUS_ZOMBIE
    except psutil.NoSuchProcess:
        return True


def _kill_group(pid: int) -> None:
    try:
        os.killpg(pid, signal.SIGKILL)
    except (ProcessLookupError, PermissionError):
        pass


class DrainedJobLife(JobLife):
    """The same, with the final drain checked as the last step of each run."""

    def teardown(self) -> None:
        try:
            if hasattr(self, "queue"):
                self.drain()
        finally:
            super().teardown()


def test_random_sequences_keep_every_job_whole(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, full: bool
) -> None:
    monkeypatch.setenv("DVC_TASK_MODEL_TMP", str(tmp_path))
    run_state_machine_as_test(
        DrainedJobLife,
        settings=settings(
            max_examples=40 if full else 5,
            stateful_step_count=50 if full else 25,
            deadline=None,
            derandomize=True,
            # Real processes: a sequence replays with other timings, so it
            # is reported as found, not shrunk.
            phases=[Phase.generate],
            database=None,
            suppress_health_check=list(HealthCheck),
        ),
    )
