"""Recurring jobs on a folder queue: real workers started with --beat, real
time passing, SIGKILL of the scheduler, and the OS timer's ``schedule tick``.
"""

from __future__ import annotations

import json
import os
import signal
import subprocess
import time
from datetime import datetime, timedelta, timezone
from pathlib import Path
from typing import Any

import pytest

from conftest import SCRIPT, Cli, Processes, wait_for

ONE_S = timedelta(seconds=1)


def beat_worker(
    cli: Cli, processes: Processes, name: str, *options: str
) -> subprocess.Popen[bytes]:
    """``dvc-task worker --beat`` in the foreground (a host's scheduler)."""
    return processes.start(
        SCRIPT,
        "worker",
        "--beat",
        "--name",
        name,
        *options,
        env=cli.env,
        cwd=cli.cwd,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )


def stop(*workers: subprocess.Popen[bytes]) -> None:
    for worker in workers:
        worker.send_signal(signal.SIGTERM)
    for worker in workers:
        worker.wait(timeout=60)


def fired(cli: Cli, schedule: str) -> dict[datetime, dict[str, Any]]:
    """``tick -> status row`` of the jobs that ``schedule`` fired."""
    found = {}
    for name, row in cli.states().items():
        base, sep, tick = name.partition("@")
        if sep and base == schedule and len(tick) == len("2026-12-04T02:00:00Z"):
            when = datetime.strptime(tick, "%Y-%m-%dT%H:%M:%SZ")
            found[when.replace(tzinfo=timezone.utc)] = row  # by hand: not ticks
    return found


def record(cli: Cli, name: str) -> dict[str, Any]:
    (found,) = [
        s
        for s in json.loads(cli("schedule", "list", "--json").stdout)
        if s["name"] == name
    ]
    return found


def assert_every_tick_once(ticks: list[datetime]) -> None:
    """One job per tick of a 1 s schedule, none missing in between."""
    assert ticks == sorted(set(ticks))
    gaps = [later - earlier for earlier, later in zip(ticks, ticks[1:])]
    assert set(gaps) <= {ONE_S}, (gaps, ticks)


def drain(cli: Cli) -> None:
    cli("worker", "--timeout", "0")


def test_two_beat_workers_fire_each_tick_once(
    cli: Cli, processes: Processes, tmp_path: Path
) -> None:
    cli(
        "schedule",
        "add",
        "t",
        "--every",
        "1s",
        "--overlap",
        "allow",
        "--",
        "sh",
        "-c",
        "echo x >> fired.txt",
    )
    workers = [beat_worker(cli, processes, name) for name in ("w1", "w2")]

    wait_for(lambda: len(fired(cli, "t")) >= 7, "seven ticks", timeout=120)
    stop(*workers)
    drain(cli)

    ticks = sorted(fired(cli, "t"))
    assert_every_tick_once(ticks)
    assert len((tmp_path / "fired.txt").read_text().split()) == len(ticks)


def test_the_next_scheduler_takes_over_at_once_when_one_is_killed(
    cli: Cli, processes: Processes
) -> None:
    cli("schedule", "add", "t", "--every", "1s", "--overlap", "allow", "--", "true")
    first = beat_worker(cli, processes, "w1")
    wait_for(lambda: len(fired(cli, "t")) >= 2, "the first worker's fires")
    second = beat_worker(cli, processes, "w2")
    wait_for(lambda: len(cli.workers()) == 2, "the second worker")

    os.kill(first.pid, signal.SIGKILL)
    killed_at = datetime.now(timezone.utc)
    first.wait()

    def after_kill() -> list[datetime]:
        return [t for t in fired(cli, "t") if t > killed_at + ONE_S]

    wait_for(lambda: len(after_kill()) >= 3, "the other worker's fires", timeout=60)
    stop(second)
    fires = fired(cli, "t")
    ticks = sorted(fires)
    assert_every_tick_once(ticks)
    # The first tick after the kill was queued within 5 s of it.
    first_after = min(after_kill())
    queued = datetime.fromisoformat(fires[first_after]["submitted"])
    assert queued - first_after < timedelta(seconds=5)


def test_ticks_missed_while_no_scheduler_ran_follow_the_catch_up_rule(
    cli: Cli, processes: Processes
) -> None:
    rules = ("none", "last", "all")
    for rule in rules:  # one schedule per rule, through one gap
        cli(
            "schedule",
            "add",
            rule,
            "--every",
            "1s",
            "--catch-up",
            rule,
            "--overlap",
            "allow",
            "--",
            "true",
        )
    worker = beat_worker(cli, processes, "w1")
    wait_for(
        lambda: all(len(fired(cli, rule)) >= 2 for rule in rules), "the first fires"
    )
    stop(worker)
    before = {rule: max(fired(cli, rule)) for rule in rules}
    time.sleep(10)  # the gap: ten seconds with no scheduler
    worker = beat_worker(cli, processes, "w1")
    restarted = datetime.now(timezone.utc)
    wait_for(
        lambda: all(max(fired(cli, rule)) > restarted + ONE_S for rule in rules),
        "fires again",
        timeout=60,
    )
    stop(worker)

    for rule in rules:
        ticks = sorted(fired(cli, rule))
        notes = record(cli, rule)["fires"]
        skipped = [f for f in notes if "missed" in f.get("skipped", "")]
        if rule == "all":
            assert not skipped
            assert_every_tick_once(ticks)
            continue
        (note,) = skipped
        missed = int(note["skipped"].split()[0])
        assert missed >= 5
        assert note["skipped"] == f"{missed} missed (catch-up {rule})"
        last_missed = datetime.fromisoformat(note["tick"])
        assert [t for t in ticks if before[rule] < t <= last_missed] == []
        after = [t for t in ticks if t > last_missed]
        if rule == "last":
            assert after[0] == last_missed + ONE_S  # the latest missed one, once
        assert_every_tick_once(after)


def test_overlap_skip_never_runs_two_fires_at_once(
    cli: Cli, processes: Processes
) -> None:
    cli("schedule", "add", "t", "--every", "1s", "--", "sleep", "2.2")
    worker = beat_worker(cli, processes, "w1", "-j", "4")
    wait_for(lambda: len(fired(cli, "t")) >= 3, "three fires", timeout=120)
    stop(worker)
    drain(cli)

    spans = sorted(
        (datetime.fromisoformat(r["started"]), datetime.fromisoformat(r["finished"]))
        for r in fired(cli, "t").values()
    )
    assert all(end <= start for (_, end), (start, _) in zip(spans, spans[1:]))
    notes = record(cli, "t")["fires"]
    assert any("had not ended" in f.get("skipped", "") for f in notes)


def test_overlap_queue_runs_fires_one_after_another(
    cli: Cli, processes: Processes
) -> None:
    cli(
        "schedule",
        "add",
        "t",
        "--every",
        "1s",
        "--overlap",
        "queue",
        "--",
        "sleep",
        "1.5",
    )
    worker = beat_worker(cli, processes, "w1", "-j", "4")
    wait_for(
        lambda: sum(r["state"] == "succeeded" for r in fired(cli, "t").values()) >= 3,
        "three fires to run",
        timeout=120,
    )
    stop(worker)

    rows = fired(cli, "t")
    assert_every_tick_once(sorted(rows))  # no tick skipped
    spans = sorted(
        (datetime.fromisoformat(r["started"]), datetime.fromisoformat(r["finished"]))
        for r in rows.values()
        if r["state"] == "succeeded"
    )
    assert all(end <= start for (_, end), (start, _) in zip(spans, spans[1:]))


def test_overlap_allow_runs_fires_side_by_side(cli: Cli, processes: Processes) -> None:
    cli(
        "schedule",
        "add",
        "t",
        "--every",
        "1s",
        "--overlap",
        "allow",
        "--",
        "sleep",
        "2.5",
    )
    worker = beat_worker(cli, processes, "w1", "-j", "4")
    wait_for(
        lambda: sum(r["state"] == "running" for r in fired(cli, "t").values()) >= 2,
        "two fires running at once",
        timeout=120,
    )
    stop(worker)


def test_start_and_end_bound_the_ticks(cli: Cli, processes: Processes) -> None:
    start = (datetime.now() + timedelta(seconds=3)).replace(microsecond=0)
    end = start + timedelta(seconds=3)
    cli(
        "schedule",
        "add",
        "t",
        "--every",
        "1s",
        "--start",
        start.isoformat(),
        "--end",
        end.isoformat(),
        "--",
        "true",
    )
    worker = beat_worker(cli, processes, "w1")
    wait_for(lambda: datetime.now() > end + timedelta(seconds=2), "the end", timeout=60)
    stop(worker)

    ticks = sorted(fired(cli, "t"))
    local = [t.astimezone().replace(tzinfo=None) for t in ticks]
    assert local == [start + n * ONE_S for n in range(4)]
    assert record(cli, "t")["next"] is None


def test_pause_resume_run_and_rm(cli: Cli, processes: Processes) -> None:
    cli("schedule", "add", "t", "--every", "1s", "--", "true")
    worker = beat_worker(cli, processes, "w1")
    wait_for(lambda: len(fired(cli, "t")) >= 2, "fires")

    assert cli("schedule", "pause", "t").stdout == "paused schedule t\n"
    paused_at = datetime.now(timezone.utc)
    time.sleep(3)  # ticks pass while it is paused
    assert record(cli, "t")["paused"] is True
    assert not [t for t in fired(cli, "t") if t > paused_at + ONE_S]
    cli("schedule", "resume", "t")
    resumed_at = datetime.now(timezone.utc)
    wait_for(lambda: max(fired(cli, "t")) > resumed_at, "fires again")
    gap = [t for t in fired(cli, "t") if paused_at + ONE_S < t < resumed_at - ONE_S]
    assert gap == []  # ticks of the pause never fire

    job = cli("schedule", "run", "t").stdout.strip()
    assert job.startswith("t@")
    cli.wait_state(job, "succeeded")
    stop(worker)

    assert cli("schedule", "rm", "t").stdout == "removed schedule t\n"
    assert "no schedules" in cli("schedule", "list").stdout
    assert fired(cli, "t")  # its jobs stay
    assert "no schedule named 't'" in cli("schedule", "run", "t", check=1).stderr


def test_a_fire_that_starts_past_its_sla_is_late(
    cli: Cli, processes: Processes
) -> None:
    cli("schedule", "add", "t", "--every", "1s", "--sla", "1s", "--held", "--", "true")
    worker = beat_worker(cli, processes, "w1")
    wait_for(lambda: any(r["late"] for r in fired(cli, "t").values()), "a late fire")
    stop(worker)

    assert "held (late)" in cli("status", "--schedule", "t").stdout
    # The last fire is late too once its second has passed (it never starts).
    wait_for(lambda: record(cli, "t")["late"], "the last fire to be late")
    assert "(late)" in cli("schedule", "list").stdout


def test_status_schedule_lists_only_its_fires(cli: Cli) -> None:
    cli("schedule", "add", "t", "--every", "1h", "--", "true")
    cli("run", "--no-start", "--name", "other", "--", "true")
    job = cli("schedule", "run", "t", "--no-start").stdout.strip()
    rows = json.loads(cli("status", "--json", "--schedule", "t").stdout)
    assert [row["name"] for row in rows] == [job]


@pytest.mark.parametrize(
    ("options", "said"),
    [
        (["--cron", "61 * * * *"], "bad cron expression '61 * * * *'"),
        (
            ["--cron", "0 2 * * *", "--tz", "Mars/Olympus"],
            "unknown time zone 'Mars/Olympus'",
        ),
        (["--every", "0s"], "every must be a duration above 0"),
        (["--every", "soon"], "'soon' is not a duration"),
        ([], "give --cron EXPR or --every DURATION"),
        (
            ["--every", "1m", "--cron", "* * * * *"],
            "give --cron EXPR or --every DURATION",
        ),
    ],
)
def test_a_bad_rule_is_refused_in_one_line(
    cli: Cli, options: list[str], said: str
) -> None:
    done = cli("schedule", "add", "bad", *options, "--", "true", check=None)
    assert done.returncode in (1, 2)
    assert said in done.stderr
    assert done.stderr.count("\n") == 1
    assert "no schedules" in cli("schedule", "list").stdout


def test_schedule_tick_fires_what_is_due_once_from_several_places(
    cli: Cli, tmp_path: Path
) -> None:
    start = datetime.now() - timedelta(seconds=30)
    cli(
        "schedule",
        "add",
        "t",
        "--every",
        "10s",
        "--start",
        start.isoformat(),
        "--overlap",
        "allow",
        "--",
        "sh",
        "-c",
        "echo x >> fired.txt",
    )
    ticks = [
        subprocess.Popen([str(SCRIPT), "schedule", "tick"], env=cli.env, cwd=tmp_path)
        for _ in range(3)
    ]
    assert [proc.wait(timeout=60) for proc in ticks] == [0, 0, 0]

    fires = fired(cli, "t")
    assert len(fires) == 4  # start, +10, +20, +30 s: each once
    for name in [f"t@{t:%Y-%m-%dT%H:%M:%SZ}" for t in fires]:
        cli.wait_state(name, "succeeded")
    assert len((tmp_path / "fired.txt").read_text().split()) == 4


def test_a_flow_can_be_scheduled(cli: Cli, tmp_path: Path) -> None:
    (tmp_path / "pipelines.py").write_text(
        "from dvc_task.flow import flow, sh\n"
        "@flow\n"
        "def hello():\n"
        "    yield sh(['sh', '-c', 'echo hello >> flow.txt'], name='say')\n"
    )
    cli("schedule", "add", "f", "--every", "1h", "--flow", "pipelines:hello")
    job = cli("schedule", "run", "f").stdout.strip()
    cli.wait_state(job, "succeeded")
    wait_for((tmp_path / "flow.txt").exists, "the flow task to run")
    assert (tmp_path / "flow.txt").read_text() == "hello\n"


FAKE_CRONTAB = """#!/bin/sh
# A user's crontab, kept in a file (the test cannot run cron itself).
if [ "$1" = "-l" ]; then cat "$CRONTAB_FILE" 2>/dev/null || exit 1;
elif [ "$1" = "-" ]; then cat > "$CRONTAB_FILE"; fi
"""


def test_install_adds_one_crontab_line_and_uninstall_removes_exactly_it(
    cli: Cli, tmp_path: Path
) -> None:
    bin_dir = tmp_path / "bin"
    bin_dir.mkdir()
    (bin_dir / "crontab").write_text(FAKE_CRONTAB)
    (bin_dir / "systemctl").write_text("#!/bin/sh\nexit 1\n")  # no user manager
    for program in bin_dir.iterdir():
        program.chmod(0o755)
    table = tmp_path / "crontab.txt"
    table.write_text("0 3 * * * backup # mine\n")
    env = {
        "PATH": f"{bin_dir}{os.pathsep}{os.environ['PATH']}",
        "CRONTAB_FILE": str(table),
    }

    done = cli("schedule", "install", env=env)
    assert "crontab line" in done.stdout
    lines = table.read_text().splitlines()
    assert lines[0] == "0 3 * * * backup # mine"
    assert lines[1].startswith("* * * * * ")
    assert f"--dir {cli.folder} schedule tick" in lines[1]
    cli("schedule", "install", env=env)  # again: still one line
    assert len(table.read_text().splitlines()) == 2

    assert "removed its crontab line" in cli("schedule", "uninstall", env=env).stdout
    assert table.read_text() == "0 3 * * * backup # mine\n"
    assert "nothing was installed" in cli("schedule", "uninstall", env=env).stdout


def test_install_makes_a_systemd_user_timer_where_systemd_runs(
    cli: Cli, tmp_path: Path
) -> None:
    bin_dir = tmp_path / "bin"
    bin_dir.mkdir()
    calls = tmp_path / "calls.txt"
    (bin_dir / "systemctl").write_text(f'#!/bin/sh\necho "$@" >> {calls}\n')
    (bin_dir / "systemctl").chmod(0o755)
    config = tmp_path / "config"
    env = {
        "PATH": f"{bin_dir}{os.pathsep}{os.environ['PATH']}",
        "XDG_CONFIG_HOME": str(config),
    }

    assert "systemd user timer" in cli("schedule", "install", env=env).stdout
    units = sorted(p.name for p in (config / "systemd" / "user").iterdir())
    assert [u.rsplit(".", 1)[1] for u in units] == ["service", "timer"]
    service = (config / "systemd" / "user" / units[0]).read_text()
    assert f"--dir {cli.folder} schedule tick" in service
    assert "--user enable --now dvc-task-tick-" in calls.read_text()

    assert (
        "removed the systemd user timer" in cli("schedule", "uninstall", env=env).stdout
    )
    assert not list((config / "systemd" / "user").iterdir())
    assert "--user disable --now dvc-task-tick-" in calls.read_text()


def test_removing_a_queue_schedule_kills_the_fires_it_held_back(
    cli: Cli, processes: Processes
) -> None:
    cli(
        "schedule",
        "add",
        "q",
        "--every",
        "1s",
        "--overlap",
        "queue",
        "--",
        "sleep",
        "30",
    )
    worker = beat_worker(cli, processes, "w1")
    wait_for(
        lambda: sum(r["state"] == "held" for r in fired(cli, "q").values()) >= 2,
        "fires held back",
    )
    said = cli("schedule", "rm", "q").stdout
    assert said.startswith("removed schedule q (killed ")
    assert said.endswith(" held-back fire(s))\n")
    states = {r["state"] for r in fired(cli, "q").values()}
    assert "held" not in states
    cli("kill", *[n for n, r in cli.states().items() if r["state"] == "running"])
    stop(worker)


def test_add_says_when_the_first_tick_fires(cli: Cli) -> None:
    start = (datetime.now() + timedelta(hours=2)).replace(second=0, microsecond=0)
    said = cli(
        "schedule",
        "add",
        "t",
        "--every",
        "1h",
        "--start",
        start.isoformat(),
        "--",
        "true",
    )
    assert (
        said.stdout
        == f"added schedule t: every 1h, next at {start:%Y-%m-%d %H:%M:%S}\n"
    )
