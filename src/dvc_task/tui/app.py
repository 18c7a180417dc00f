"""``dvc-task top``: the jobs, the live workers and the selected job's log.

It reads the same files as the command line, and changes nothing except
through the same operations as ``kill``, ``retry``, ``hold``/``release``
and ``rm``. A thread watches the folders (inotify where there is one) and
hands the app what changed; while nothing changes it wakes once a second.
"""

from __future__ import annotations

import shlex
import threading
from collections.abc import Callable, Iterable
from datetime import datetime, timezone
from typing import ClassVar, cast

from rich.text import Text
from textual import on
from textual.app import App, ComposeResult
from textual.binding import Binding, BindingType
from textual.containers import Horizontal, Vertical
from textual.screen import ModalScreen
from textual.widgets import DataTable, Footer, Header, Input, Label, Log, Static

from dvc_task.exceptions import DvcTaskError
from dvc_task.jobs import HELD, STARTING, STATES, Job, JobQueue, WorkerInfo
from dvc_task.jobs.display import ago, printable
from dvc_task.tui.model import (
    JobsReader,
    OutputFollower,
    SharedOutput,
    StreamFollower,
    TermBuffer,
    Watcher,
)
from dvc_task.tui.table import JobTable, header

WORKER_COLUMNS = ("WORKER", "PID", "CONCURRENCY", "RUNNING", "IDLE SINCE")
#: Every how many idle ticks the live workers are looked at again.
WORKERS_EVERY = 5
#: The state filters ``s`` goes through (None: every state).
STATE_FILTERS: tuple[str | None, ...] = (None, *STATES)


def worker_cells(worker: WorkerInfo, now: datetime) -> tuple[Text, ...]:
    """The cells of ``worker`` under :data:`WORKER_COLUMNS`."""
    return (
        Text(printable(worker.label)),
        Text(str(worker.pid or "")),
        Text(str(worker.concurrency or "")),
        Text(printable(", ".join(worker.running)) or "-"),
        Text(ago(worker.idle_since, now)),
    )


class Confirm(ModalScreen[bool]):
    """Asks a yes/no question; ``y`` or ``n``."""

    BINDINGS: ClassVar[list[BindingType]] = [
        Binding("y", "answer(True)", "yes"),
        Binding("n,escape", "answer(False)", "no"),
    ]

    def __init__(self, question: str) -> None:
        """Ask ``question``."""
        super().__init__()
        self.question = question

    def compose(self) -> ComposeResult:
        """The question."""
        yield Label(f"{self.question} [b]y[/]/[b]n[/]", id="question")

    def action_answer(self, answer: bool) -> None:
        """Close with ``answer``."""
        self.dismiss(answer)


class TopApp(App[None]):
    """The monitor of one queue folder."""

    TITLE = "dvc-task top"
    CSS = """
    #jobs { height: 2fr; }
    #side { height: 1fr; }
    #workers { width: 1fr; }
    #logpane { width: 2fr; }
    #log { height: 1fr; }
    #current { height: 1; }
    #filter { dock: bottom; display: none; }
    #filter.shown { display: block; }
    Confirm { align: center middle; }
    #question { padding: 1 2; border: thick $accent; background: $panel; }
    .fullscreen #jobs, .fullscreen #header, .fullscreen #side #workers {
        display: none;
    }
    #header { height: 1; padding: 0 0; }
    """
    BINDINGS: ClassVar[list[BindingType]] = [
        Binding("k", "kill", "kill"),
        Binding("r", "retry", "retry"),
        Binding("h", "hold", "hold/release"),
        Binding("d", "remove", "remove"),
        Binding("slash", "filter", "filter"),
        Binding("s", "state", "state"),
        Binding("escape", "leave", "back", show=False),
        Binding("q", "quit", "quit"),
    ]

    def __init__(self, queue: JobQueue) -> None:
        """A monitor of ``queue``."""
        super().__init__()
        self.queue = queue
        self.reader = JobsReader(queue)
        self.jobs: list[Job] = []
        #: Names of the jobs the table shows (after the filters).
        self.shown: list[str] = []
        self.live_workers: list[WorkerInfo] = []
        self.ticks = 0
        self.worker_rows: list[tuple[Text, ...]] = []
        self.text_filter = ""
        self.state_filter: str | None = None
        self.selected: str | None = None
        self.follower: OutputFollower | StreamFollower | None = None
        self.buffer = TermBuffer()
        #: Held while the follower is read or replaced (watcher thread vs app).
        self._follow_lock = threading.Lock()
        self._relay_stop = threading.Event()
        self.watcher = Watcher(
            [
                queue.backend.jobs_dir,
                queue.backend.procs_dir,
                queue.backend.workers_dir,
                queue.backend.tasks.folders.inbox,
                queue.backend.tasks.folders.inbox.parent,
            ],
            self._changed,
        )

    def compose(self) -> ComposeResult:
        """Jobs above; workers and the selected job's log below."""
        yield Header()
        with Vertical(id="main"):
            yield Static(header(), id="header")
            yield JobTable(id="jobs")
            with Horizontal(id="side"):
                yield DataTable(id="workers", cursor_type="none")
                with Vertical(id="logpane"):
                    yield Log(id="log", max_lines=self.buffer.max_lines)
                    yield Static("", id="current", markup=False)
        yield Input(placeholder="filter: part of a name, state or command", id="filter")
        yield Footer()

    def on_mount(self) -> None:
        """Set the tables up, show what is there, then watch."""
        self.sub_title = self.queue.location
        self.query_one("#workers", DataTable).add_columns(*WORKER_COLUMNS)
        self._show(self.reader.read(), self.queue.workers())
        self.query_one("#jobs", JobTable).focus()
        self.watcher.start()
        if self.queue.shared:
            # Records on a server: its change notices wake the watcher.
            threading.Thread(target=self._relay_changes, daemon=True).start()

    def _relay_changes(self) -> None:
        changes = self.queue.changes()
        try:
            while not self._relay_stop.is_set():
                if changes.wait(0.5):
                    self.watcher.wake()
        finally:
            changes.close()

    def on_unmount(self) -> None:
        """Stop watching."""
        self._relay_stop.set()
        self.watcher.stop()

    # --- data from the watcher thread ------------------------------------------

    def _changed(self, changed: bool) -> None:
        # In the watcher's thread: read, then hand over to the app.
        jobs = self.reader.read() if changed else self.reader.refresh(self.jobs)
        self.ticks += 1
        workers = self.live_workers
        if changed or jobs is not self.jobs or self.ticks % WORKERS_EVERY == 0:
            # A worker that died is seen here; its start and jobs by changes.
            workers = self.queue.workers(jobs)
        with self._follow_lock:  # not while _select swaps the follower
            follower = self.follower
            output = follower.read_new() if follower is not None else b""
        if (
            jobs is self.jobs
            and workers == self.live_workers
            and not output
            and not self.reader.running
        ):
            return  # nothing to draw: an idle tick costs a look at the folders
        try:
            self.call_from_thread(self._show, jobs, workers, output, follower)
        except RuntimeError:
            pass  # the app is closing

    def _show(
        self,
        jobs: list[Job],
        workers: list[WorkerInfo],
        output: bytes = b"",
        follower: OutputFollower | StreamFollower | None = None,
    ) -> None:
        if not self.screen.query("#jobs"):
            return  # closing: the widgets are gone
        self.jobs = jobs
        self.live_workers = workers
        self.watcher.busy = any(job.state == STARTING for job in jobs)
        self._show_jobs()
        self._show_workers(workers)
        if self.selected is None and self.shown:
            self._select(self.shown[0])
        if output and follower is self.follower:
            self._show_output(output)  # else read for a job no longer shown

    def _visible(self, jobs: Iterable[Job]) -> list[Job]:
        needle = self.text_filter.lower()
        return [
            job
            for job in jobs
            if (self.state_filter is None or job.state == self.state_filter)
            and (
                not needle
                or needle in job.name.lower()
                or needle in job.state
                or needle in shlex.join(job.command).lower()
            )
        ]

    def _show_jobs(self) -> None:
        visible = self._visible(self.jobs)
        self.shown = [job.name for job in visible]
        self.query_one("#jobs", JobTable).show(visible, self.selected)

    def _show_workers(self, workers: list[WorkerInfo]) -> None:
        now = datetime.now(timezone.utc)
        rows = [worker_cells(worker, now) for worker in workers]
        if rows == self.worker_rows:
            return
        self.worker_rows = rows
        table = self.query_one("#workers", DataTable)
        table.clear()
        for row in rows:
            table.add_row(*row)

    # --- the log ---------------------------------------------------------------

    @on(JobTable.Highlighted, "#jobs")
    def _highlighted(self, event: JobTable.Highlighted) -> None:
        if event.name != self.selected:
            self._select(event.name)

    @on(JobTable.Chosen, "#jobs")
    def _chosen(self) -> None:
        self.action_fullscreen()

    def _select(self, name: str) -> None:
        self.selected = name
        self.buffer = TermBuffer(self.buffer.max_lines)
        self.query_one("#log", Log).clear()
        self.query_one("#current", Static).update("")
        follower = (
            StreamFollower(cast(SharedOutput, self.queue.backend), name)
            if self.queue.shared
            else OutputFollower(self.queue.backend.output_path(name))
        )
        with self._follow_lock:
            self.follower = follower
            tail = follower.read_new()
        self.watcher.follow(self.queue.backend.procs_dir / name)
        self._show_output(tail)

    def _show_output(self, data: bytes) -> None:
        ended = self.buffer.feed(data)
        if ended:
            self.query_one("#log", Log).write_lines(ended)
        self.query_one("#current", Static).update(self.buffer.current)

    # --- actions -----------------------------------------------------------------

    def _job_at_cursor(self) -> Job | None:
        found = [job for job in self.jobs if job.name == self.selected]
        return found[0] if found else None

    def _do(self, action: Callable[[], object], done: str) -> None:
        try:
            action()
        except (DvcTaskError, KeyError, OSError) as exc:
            self.notify(str(exc), severity="error")
            return
        self.notify(done)
        self.watcher.wake()

    def _ask_then(self, question: str, action: Callable[[], object], done: str) -> None:
        def answered(yes: bool | None) -> None:
            if yes:
                self._do(action, done)

        self.push_screen(Confirm(question), answered)

    def action_kill(self) -> None:
        """Kill the selected job (after asking)."""
        job = self._job_at_cursor()
        if job is not None:
            name = job.name
            self._ask_then(
                f"Kill job {name} ({job.state})?",
                lambda: self.queue.kill(name),
                f"killing {name}",
            )

    def action_remove(self) -> None:
        """Remove the selected finished job (after asking)."""
        job = self._job_at_cursor()
        if job is not None:
            name = job.name
            self._ask_then(
                f"Remove job {name} and its output?",
                lambda: self.queue.remove(name),
                f"removed {name}",
            )

    def action_retry(self) -> None:
        """Queue the selected finished job again (a worker starts if none runs)."""
        job = self._job_at_cursor()
        if job is not None:

            def retry() -> None:
                self.queue.retry([job.name])
                self.queue.ensure_worker()

            self._do(retry, f"queued {job.name} again")

    def action_hold(self) -> None:
        """Hold the selected queued job, or release it if it is held."""
        job = self._job_at_cursor()
        if job is None:
            return
        if job.state == HELD:

            def release() -> None:
                self.queue.release(job.name)
                self.queue.ensure_worker()

            self._do(release, f"released {job.name}")
        else:
            self._do(lambda: self.queue.hold(job.name), f"held {job.name}")

    def action_fullscreen(self) -> None:
        """Show the selected job's log alone (again: back)."""
        self.screen.toggle_class("fullscreen")

    def action_filter(self) -> None:
        """Type a part of a name, state or command to show only those jobs."""
        field = self.query_one("#filter", Input)
        field.add_class("shown")
        field.focus()

    def action_state(self) -> None:
        """Show only the jobs in the next state (then all again)."""
        index = STATE_FILTERS.index(self.state_filter)
        self.state_filter = STATE_FILTERS[(index + 1) % len(STATE_FILTERS)]
        self.notify(f"state: {self.state_filter or 'all'}", timeout=1.5)
        self._show_jobs()

    def action_leave(self) -> None:
        """Leave the full-screen log or the filter."""
        self.screen.remove_class("fullscreen")
        field = self.query_one("#filter", Input)
        if field.has_class("shown"):
            field.remove_class("shown")
            self.query_one("#jobs", JobTable).focus()

    @on(Input.Changed, "#filter")
    def _filter_changed(self, event: Input.Changed) -> None:
        self.text_filter = event.value
        self._show_jobs()

    @on(Input.Submitted, "#filter")
    def _filter_done(self) -> None:
        self.action_leave()


def run(queue: JobQueue) -> None:
    """Run the monitor in this terminal until ``q``."""
    TopApp(queue).run()
