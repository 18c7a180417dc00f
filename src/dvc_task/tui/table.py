"""A table of jobs that draws only the rows on screen.

Textual's ``DataTable`` measures every cell of every row it is given; with
10,000 jobs that takes seconds. This one keeps the jobs and turns a job into
a line of text only when that line is drawn, so its cost follows the height
of the terminal, not the number of jobs.
"""

from __future__ import annotations

import shlex
from collections.abc import Sequence
from datetime import datetime, timezone
from typing import ClassVar

from rich.segment import Segment
from rich.text import Text
from textual.binding import Binding, BindingType
from textual.geometry import Size
from textual.message import Message
from textual.reactive import reactive
from textual.scroll_view import ScrollView
from textual.strip import Strip

from dvc_task.jobs import Job
from dvc_task.jobs.display import (
    COLOURS,
    duration,
    printable,
    slots_text,
    state_words,
)
from dvc_task.jobs.view import parse_time

#: Space between two columns.
GAP = 2

#: The job table's columns and their widths: fixed, a job's line
#: is drawn without measuring anything.
JOB_COLUMNS = (
    ("NAME", 24),
    ("STATE", 17),
    ("ATTEMPT", 7),
    ("SLOTS", 12),
    ("STARTED", 16),
    ("DURATION", 8),
    ("EXIT", 4),
    ("COMMAND", 60),
)


def job_cells(job: Job, now: datetime) -> tuple[Text, ...]:
    """The cells of ``job`` under :data:`JOB_COLUMNS` (the state coloured).

    Plain text, never markup: a name or command with ``[...]`` shows as is.
    """
    return (
        Text(printable(job.name)),
        Text(state_words(job), style=COLOURS.get(job.state, "")),
        Text(f"{job.attempt}/{job.max_attempts}" if job.max_attempts > 1 else ""),
        Text(slots_text(job)),
        Text(clock(job.started_at, now)),
        Text(duration(job.duration)),
        Text("" if job.returncode is None else str(job.returncode)),
        Text(printable(shlex.join(job.command))),
    )


def clock(when: str | None, now: datetime) -> str:
    """A recorded UTC time as local ``HH:MM:SS`` (with the date if not today)."""
    if not when:
        return ""
    try:
        local = parse_time(when).astimezone()
    except ValueError:
        return ""
    if local.date() == now.astimezone().date():
        return local.strftime("%H:%M:%S")
    return local.strftime("%Y-%m-%d %H:%M")


def header() -> Text:
    """The column titles, as :func:`line_of` lays them out."""
    titles = [Text(title, style="bold") for title, _ in JOB_COLUMNS]
    return line_of(titles, [width for _, width in JOB_COLUMNS])


def line_of(cells: Sequence[Text], widths: Sequence[int]) -> Text:
    """``cells`` padded or cut to ``widths``, in one line."""
    line = Text(no_wrap=True, end="")
    for index, (cell, width) in enumerate(zip(cells, widths)):
        piece = cell.copy()
        piece.truncate(width, overflow="ellipsis", pad=index < len(widths) - 1)
        line.append_text(piece)
        if index < len(widths) - 1:
            line.append(" " * GAP)
    return line


class JobTable(ScrollView, can_focus=True):
    """Jobs, one per line, with a cursor; ``enter`` chooses the job."""

    BINDINGS: ClassVar[list[BindingType]] = [
        Binding("up", "move(-1)", "up", show=False),
        Binding("down", "move(1)", "down", show=False),
        Binding("pageup", "page(-1)", "page up", show=False),
        Binding("pagedown", "page(1)", "page down", show=False),
        Binding("home,ctrl+home", "jump(0)", "first", show=False),
        Binding("end,ctrl+end", "jump(-1)", "last", show=False),
        Binding("enter", "choose", "full log"),
    ]
    DEFAULT_CSS = """
    JobTable { height: 1fr; }
    JobTable > .jobtable--cursor { background: $accent 40%; }
    """
    COMPONENT_CLASSES: ClassVar[set[str]] = {"jobtable--cursor"}

    cursor: reactive[int] = reactive(0)

    class Highlighted(Message):
        """The cursor is on another job."""

        def __init__(self, table: JobTable, name: str) -> None:
            """The job ``name`` is under the cursor of ``table``."""
            super().__init__()
            self.table = table
            self.name = name

        @property
        def control(self) -> JobTable:
            """The table (for ``@on(..., selector)``)."""
            return self.table

    class Chosen(Highlighted):
        """``enter`` on a job."""

    def __init__(self, *, id: str | None = None) -> None:
        """An empty table of jobs."""
        super().__init__(id=id)
        self.widths = [width for _, width in JOB_COLUMNS]
        self.jobs: list[Job] = []
        self._index: dict[str, int] = {}

    @property
    def selected(self) -> str | None:
        """The name of the job under the cursor."""
        return self.jobs[self.cursor].name if self.jobs else None

    def show(self, jobs: list[Job], keep: str | None) -> None:
        """Show ``jobs``; the cursor stays on job ``keep`` if it is there."""
        self.jobs = jobs
        self._index = {job.name: i for i, job in enumerate(jobs)}
        width = sum(self.widths) + GAP * (len(self.widths) - 1)
        self.virtual_size = Size(width, len(jobs))
        target = self._index.get(keep) if keep is not None else None
        if target is None:
            target = min(self.cursor, max(0, len(jobs) - 1))
        if target != self.cursor:
            self.cursor = target
        else:
            self._announce()
        self.refresh()

    def row_of(self, name: str) -> int | None:
        """The line of job ``name`` (None if it is not shown)."""
        return self._index.get(name)

    def render_line(self, y: int) -> Strip:
        """Line ``y`` of the screen: only the jobs on screen are turned into text."""
        scroll_x, scroll_y = self.scroll_offset
        index = scroll_y + y
        width = self.size.width
        if index >= len(self.jobs):
            return Strip.blank(width, self.rich_style)
        now = datetime.now(timezone.utc)
        text = line_of(job_cells(self.jobs[index], now), self.widths)
        style = self.rich_style
        if index == self.cursor:
            style = style + self.get_component_rich_style("jobtable--cursor")
        segments = [
            Segment(seg.text, style + seg.style if seg.style else style)
            for seg in text.render(self.app.console)
        ]
        strip = Strip(segments).crop(scroll_x, scroll_x + width)
        return strip.extend_cell_length(width, style)

    def watch_cursor(self, old: int, new: int) -> None:
        """Keep the cursor on screen and tell the app which job it is on."""
        height = self.scrollable_content_region.height or 1
        if new < self.scroll_offset.y:
            self.scroll_to(y=new, animate=False)
        elif new >= self.scroll_offset.y + height:
            self.scroll_to(y=new - height + 1, animate=False)
        self.refresh()
        self._announce()

    def _announce(self) -> None:
        if self.jobs:
            self.post_message(self.Highlighted(self, self.jobs[self.cursor].name))

    def _go(self, row: int) -> None:
        if self.jobs:
            self.cursor = max(0, min(row, len(self.jobs) - 1))

    def action_move(self, step: int) -> None:
        """One job up or down."""
        self._go(self.cursor + step)

    def action_page(self, direction: int) -> None:
        """One screen up or down."""
        self._go(self.cursor + direction * max(1, self.size.height - 1))

    def action_jump(self, row: int) -> None:
        """To the first (0) or last (-1) job."""
        self._go(row if row >= 0 else len(self.jobs) - 1)

    def action_choose(self) -> None:
        """Choose the job under the cursor."""
        if self.jobs:
            self.post_message(self.Chosen(self, self.jobs[self.cursor].name))
