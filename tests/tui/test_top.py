"""``dvc-task top`` driven by Textual's headless pilot, on real jobs and workers."""

from __future__ import annotations

import asyncio
import json
import statistics
import subprocess
import threading
import time
from collections.abc import Awaitable
from datetime import datetime, timezone
from pathlib import Path
from typing import Any, Callable

import psutil
import pytest

pytest.importorskip("textual", reason="the monitor needs the 'tui' extra (Textual)")

from textual.pilot import Pilot

from dvc_task.jobs import JobQueue
from dvc_task.tui.app import TopApp
from dvc_task.tui.table import JobTable, job_cells

from conftest import SCRIPT, wait_for

Scenario = Callable[[TopApp, Pilot[None]], Awaitable[None]]


def run_top(queue: JobQueue, scenario: Scenario) -> None:
    async def main() -> None:
        app = TopApp(queue)
        async with app.run_test(size=(160, 50)) as pilot:
            await scenario(app, pilot)

    asyncio.run(main())


async def until(
    pilot: Pilot[None], predicate: Callable[[], Any], what: str, timeout: float = 60
) -> float:
    """Let the app run until ``predicate()``; the seconds it took."""
    start = time.monotonic()
    while not predicate():
        if time.monotonic() - start > timeout:
            raise AssertionError(f"gave up waiting for {what}")
        await pilot.pause(0.01)
    return time.monotonic() - start


def states(app: TopApp) -> dict[str, str]:
    """``name -> state`` as the table shows them."""
    table = app.query_one(JobTable)
    return {job.name: job_cells(job, NOW)[1].plain for job in table.jobs}


NOW = datetime.now(timezone.utc)


def test_jobs_appear_with_their_states(queue: JobQueue) -> None:
    queue.submit(["true"], name="ok")
    queue.submit(["sh", "-c", "exit 3"], name="bad")
    queue.submit(["sleep", "60"], name="long")
    queue.submit(["true"], name="later", after=["long"])
    queue.submit(["true"], name="held", held=True)
    queue.start_workers()

    async def scenario(app: TopApp, pilot: Pilot[None]) -> None:
        await until(
            pilot,
            lambda: (
                states(app).get("long") == "running"
                and states(app).get("bad") == "failed"
            ),
            "the jobs to run",
        )
        assert states(app) == {
            "ok": "succeeded",
            "bad": "failed",
            "long": "running",
            "later": "waiting for job long",
            "held": "held",
        }
        table = app.query_one(JobTable)
        bad = table.jobs[table.row_of("bad") or 0]
        assert job_cells(bad, NOW)[6].plain == "3"
        await until(pilot, lambda: app.query_one("#workers").row_count == 1, "worker")  # type: ignore[attr-defined]

    run_top(queue, scenario)


def test_a_job_queued_by_another_process_appears_at_once(
    queue: JobQueue, tmp_path: Path
) -> None:
    queue.submit(["true"], name="first", held=True)
    env = {"DVC_TASK_DIR": str(queue.folder), "PATH": "/usr/bin:/bin"}

    async def scenario(app: TopApp, pilot: Pilot[None]) -> None:
        await until(pilot, lambda: "first" in app.shown, "the first job")
        delays = []
        for i in range(5):
            subprocess.run(
                [
                    str(SCRIPT),
                    "run",
                    "--no-start",
                    "--held",
                    "--name",
                    f"n{i}",
                    "--",
                    "true",
                ],
                env=env,
                check=True,
                capture_output=True,
            )
            delays.append(await until(pilot, lambda i=i: f"n{i}" in app.shown, "row"))
        # A look once a second would take half a second on average.
        assert statistics.median(delays) < 0.3, delays

    run_top(queue, scenario)


def test_k_then_yes_kills_the_selected_running_job(queue: JobQueue) -> None:
    queue.submit(["sleep", "60"], name="victim")
    queue.start_workers()
    wait_for(lambda: queue.job("victim").state == "running", "the job to run")
    pid = queue.job("victim").pid
    assert pid is not None

    async def scenario(app: TopApp, pilot: Pilot[None]) -> None:
        await until(pilot, lambda: app.selected == "victim", "the job to be selected")
        await pilot.press("k")
        await until(pilot, lambda: len(app.screen_stack) == 2, "the question")
        await pilot.press("y")
        await until(pilot, lambda: states(app).get("victim") == "killed", "killed")

    run_top(queue, scenario)
    assert not psutil.pid_exists(pid) or psutil.Process(pid).status() == "zombie"


def test_n_keeps_the_job_running(queue: JobQueue) -> None:
    queue.submit(["sleep", "60"], name="spared")
    queue.start_workers()
    wait_for(lambda: queue.job("spared").state == "running", "the job to run")

    async def scenario(app: TopApp, pilot: Pilot[None]) -> None:
        await until(pilot, lambda: app.selected == "spared", "the job to be selected")
        await pilot.press("k", "n")
        await pilot.pause(0.3)
        assert states(app)["spared"] == "running"

    run_top(queue, scenario)
    assert queue.job("spared").state == "running"


def test_the_log_pane_follows_the_running_job(queue: JobQueue, tmp_path: Path) -> None:
    go = tmp_path / "go"
    script = (
        "echo first; printf 'bar 1%%\\rbar 50%%';"
        f" while [ ! -e {go} ]; do sleep 0.01; done;"
        " printf '\\rbar 100%%\\n'; echo last"
    )
    queue.submit(["sh", "-c", script], name="talker")
    queue.start_workers()

    async def scenario(app: TopApp, pilot: Pilot[None]) -> None:
        await until(pilot, lambda: app.buffer.current == "bar 50%", "the progress bar")
        assert app.buffer.lines == ["first"]
        go.touch()
        await until(pilot, lambda: "last" in app.buffer.lines, "the new lines")
        assert app.buffer.lines == ["first", "bar 100%", "last"]
        log = app.query_one("#log")
        assert list(log.lines) == ["first", "bar 100%", "last"]  # type: ignore[attr-defined]
        await pilot.press("enter")  # the log alone
        assert app.screen.has_class("fullscreen")
        await pilot.press("escape")
        assert not app.screen.has_class("fullscreen")

    run_top(queue, scenario)


def test_filter_by_text_and_state(queue: JobQueue) -> None:
    for name in ("train-a", "train-b", "eval"):
        queue.submit(["true"], name=name, held=True)

    async def scenario(app: TopApp, pilot: Pilot[None]) -> None:
        await until(pilot, lambda: len(app.shown) == 3, "the jobs")
        await pilot.press("slash", *"train", "enter")
        assert app.shown == ["train-a", "train-b"]
        app.query_one("#filter").value = ""  # type: ignore[attr-defined]
        await pilot.press("s")  # first state: held
        assert app.state_filter == "held"
        assert app.shown == ["train-a", "train-b", "eval"]
        await pilot.press("s")
        assert app.shown == []

    run_top(queue, scenario)


def test_hold_release_retry_and_remove_keys(queue: JobQueue) -> None:
    queue.submit(["sh", "-c", "exit 1"], name="job")
    queue.start_workers()
    queue.wait("job", timeout=120)

    async def scenario(app: TopApp, pilot: Pilot[None]) -> None:
        await until(pilot, lambda: app.selected == "job", "selection")
        await pilot.press("r")
        await until(
            pilot,
            lambda: (
                queue.job("job").state == "failed"
                and len(
                    json.loads((queue.backend.jobs_dir / "job.json").read_text())[
                        "attempts"
                    ]
                )
                == 1
            ),
            "retry",
        )
        await pilot.press("d", "y")
        await until(pilot, lambda: "job" not in app.shown, "the job to go")

    run_top(queue, scenario)
    assert queue.jobs() == []


def test_ten_thousand_finished_jobs_load_and_scroll(queue: JobQueue) -> None:
    queue.submit(["true"], name="first", held=True)
    base = json.loads((queue.backend.jobs_dir / "first.json").read_text())
    for i in range(10_000):
        record = {
            **base,
            "name": f"j{i:05d}",
            "seq": i + 2,
            "phase": "succeeded",
            "returncode": 0,
            "started_at": base["submitted_at"],
            "finished_at": base["submitted_at"],
        }
        (queue.backend.jobs_dir / f"j{i:05d}.json").write_text(json.dumps(record))

    async def scenario(app: TopApp, pilot: Pilot[None]) -> None:
        table = app.query_one(JobTable)
        assert len(table.jobs) == 10_001
        await pilot.press("end")
        await until(pilot, lambda: app.selected == "j09999", "the last row")
        assert table.scroll_offset.y > 9_900  # scrolled there
        await pilot.press("pageup", "pageup")
        assert 9_900 < table.cursor < 10_000
        await pilot.press("home")
        await until(pilot, lambda: table.scroll_offset.y == 0, "the top")
        assert app.selected == "first"

    run_top(queue, scenario)


PROGRESS = (
    "i=0; while true; do i=$((i+1)); printf '\\rA-progress %d' $i; sleep 0.05; done"
)


def test_output_read_for_one_job_never_reaches_the_next_ones_log(
    queue: JobQueue, monkeypatch: pytest.MonkeyPatch
) -> None:
    queue.submit(["sh", "-c", "echo quiet"], name="b")
    queue.submit(["sh", "-c", PROGRESS], name="a")
    queue.start_workers()
    # The watcher thread reads a's output, then hands it to the app: the
    # test holds it in between while b is chosen (the race, made certain).
    armed, reached, release, handed = (threading.Event() for _ in range(4))
    original = TopApp.call_from_thread

    def held_back(self: TopApp, callback: Any, *args: Any, **kwargs: Any) -> Any:
        if not (armed.is_set() and len(args) >= 3 and args[2]):
            return original(self, callback, *args, **kwargs)
        armed.clear()
        reached.set()
        release.wait(30)
        try:
            return original(self, callback, *args, **kwargs)
        finally:
            handed.set()

    monkeypatch.setattr(TopApp, "call_from_thread", held_back)

    async def scenario(app: TopApp, pilot: Pilot[None]) -> None:
        await until(pilot, lambda: {"a", "b"} <= set(app.shown), "both jobs")
        while app.selected != "a":
            above = app.shown.index("a") < app.shown.index(app.selected or "")
            await pilot.press("up" if above else "down")
        await until(pilot, lambda: "A-progress" in app.buffer.current, "a's output")
        await pilot.press("enter", "escape")
        armed.set()
        await until(pilot, reached.is_set, "a read of a's output in flight")
        await pilot.press("slash", "b", "enter")
        assert app.selected == "b"
        release.set()
        await until(pilot, handed.is_set, "the read to be handed over")
        await pilot.press("enter")
        assert app.buffer.lines == ["quiet"]
        assert "A-progress" not in app.buffer.current

    run_top(queue, scenario)
