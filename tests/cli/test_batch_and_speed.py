"""Batch submission, and what makes the command line quick: the modules a
command imports, and the job message written without Celery.
"""

from __future__ import annotations

import base64
import json
import subprocess
import sys
import time
from pathlib import Path

import pytest

from dvc_task.app import FSApp
from dvc_task.app.message import task_message
from dvc_task.jobs import JobError, JobQueue

from conftest import SCRIPT, Cli

SWEEP = """\
# a sweep of learning rates
python -c "print('lr 0.1')"

python -c "print('lr 0.01')"   # the second one
echo 'three words here'
"""


def test_run_from_a_file_queues_each_line_named_by_the_pattern(
    cli: Cli, tmp_path: Path
) -> None:
    (tmp_path / "sweep.txt").write_text(SWEEP)

    done = cli("run", "--from", "sweep.txt", "--name", "sweep-{n}", "--priority", "2")

    assert done.stdout == "sweep-1\nsweep-2\nsweep-3\n"
    for name in ("sweep-1", "sweep-2", "sweep-3"):
        cli.wait_state(name, "succeeded")
    rows = cli.states()
    assert rows["sweep-3"]["command"] == ["echo", "three words here"]
    assert {row["priority"] for row in rows.values()} == {2}
    assert cli("logs", "sweep-2").stdout == "lr 0.01\n"


def test_run_from_stdin(cli: Cli) -> None:
    done = subprocess.run(
        [str(SCRIPT), "run", "--no-start", "--from", "-"],
        input="echo a\necho b\n",
        capture_output=True,
        text=True,
        env=cli.env,
        cwd=cli.cwd,
        check=True,
    )
    assert len(done.stdout.split()) == 2
    assert [row["command"] for row in cli.states().values()] == [
        ["echo", "a"],
        ["echo", "b"],
    ]


def test_a_bad_line_is_reported_by_its_number_and_nothing_is_queued(
    cli: Cli, tmp_path: Path
) -> None:
    (tmp_path / "bad.txt").write_text("echo fine\n\necho 'unclosed\n")
    done = cli("run", "--no-start", "--from", "bad.txt", check=1)
    assert done.stderr == "Error: line 3: No closing quotation\n"
    assert not (cli.folder / "jobs").exists() or cli.states() == {}


def test_a_taken_name_refuses_the_whole_batch(cli: Cli, tmp_path: Path) -> None:
    cli("run", "--no-start", "--name", "b-2", "--", "true")
    (tmp_path / "three.txt").write_text("echo 1\necho 2\necho 3\n")

    done = cli("run", "--no-start", "--from", "three.txt", "--name", "b-{n}", check=1)

    assert "line 2: job 'b-2' exists" in done.stderr
    assert list(cli.states()) == ["b-2"]
    assert (
        "--name needs {n}"
        in cli(
            "run", "--no-start", "--from", "three.txt", "--name", "same", check=2
        ).stderr
    )


def test_submit_many_queues_a_thousand_jobs_at_once(tmp_path: Path) -> None:
    queue = JobQueue(tmp_path / "q")
    begun = time.monotonic()
    names = queue.submit_many([["echo", str(n)] for n in range(1000)])
    took = time.monotonic() - begun

    assert took < 10  # about 0.6 s here; one fsync per file took 2 s
    assert len(names) == len(set(names)) == 1000
    jobs = queue.jobs()
    assert [job.name for job in jobs] == names
    assert {job.state for job in jobs} == {"queued"}
    with pytest.raises(JobError, match="given twice"):
        queue.submit_many([["true"], ["true"]], names=["x", "x"])
    with pytest.raises(ValueError, match="command 2: empty command"):
        queue.submit_many([["true"], []])
    assert len(queue.jobs()) == 1000


IMPORTS = """
import sys, types
sys.argv = ["dvc-task", *sys.argv[1:]]
from dvc_task.cli import main
try:
    main()
except SystemExit:
    pass
# A module imported lazily but never used is not run: its type says so.
loaded = [n for n, m in sys.modules.items() if type(m) is types.ModuleType]
print(sorted(n for n in loaded if n.startswith(HEAVY)), file=sys.stderr)
"""

#: What a quick command must not load: Celery's machinery, the worker's side
#: of the job layer (starting workers, schedules, running a job, processes),
#: psutil, and the optional extras.
HEAVY = (
    "celery",
    "kombu",
    "redis",
    "textual",
    "psutil",
    "shortuuid",
    "dvc_task.jobs.workers",
    "dvc_task.jobs.scheduler",
    "dvc_task.jobs.lifecycle.running",
    "dvc_task.proc.process",
    "dvc_task.proc.tree",
)


@pytest.mark.parametrize(
    "command",
    [
        ["run", "--no-start", "--", "true"],
        ["status"],
        ["status", "--json"],
        ["logs", "1"],
        ["run", "--no-start", "--in", "1h", "--priority", "3", "--", "true"],
    ],
)
def test_quick_commands_import_only_what_they_use(cli: Cli, command: list[str]) -> None:
    cli("run", "--no-start", "--", "true")  # a queue with a job in it
    done = subprocess.run(
        [sys.executable, "-c", f"HEAVY = {HEAVY!r}\n{IMPORTS}", *command],
        capture_output=True,
        text=True,
        env=cli.env,
        cwd=cli.cwd,
        check=True,
    )
    assert done.stderr.splitlines()[-1] == "[]"


def test_the_message_of_a_job_is_the_one_celery_sends(tmp_path: Path) -> None:
    app = FSApp("compare", wdir=tmp_path / "app", mkdir=True)
    app.send_task(
        "dvc_task.jobs.run", kwargs={"name": "a", "folder": "/q"}, task_id="t1"
    )
    (celerys,) = app.iter_queued()
    ours = task_message("dvc_task.jobs.run", "t1", {"name": "a", "folder": "/q"})

    assert set(ours["headers"]) == set(celerys.headers)
    for key in ("lang", "task", "id", "root_id", "eta", "retries", "timelimit"):
        assert ours["headers"][key] == celerys.headers[key], key
    assert set(ours["properties"]) == set(celerys.properties)
    assert ours["properties"]["delivery_info"] == celerys.delivery_info
    assert json.loads(base64.b64decode(ours["body"])) == json.loads(celerys.body)
    assert ours["content-type"] == celerys.content_type


def test_a_job_queued_without_celery_is_listed_by_the_040_api_and_runs(
    tmp_path: Path,
) -> None:
    queue = JobQueue(tmp_path / "q")
    queue.submit(["echo", "hello"], name="direct", priority=5)
    app = FSApp("reader", wdir=tmp_path / "q" / "app")
    (message,) = app.iter_queued()
    assert message.headers["task"] == "dvc_task.jobs.run"
    assert message.properties["priority"] == 5

    queue.work(timeout=0.2)

    assert queue.job("direct").state == "succeeded"
    assert queue.read_output("direct") == b"hello\n"
