"""Task automation: ``nox -s tests``, ``nox -s lint``, ``nox -s bench``."""

from __future__ import annotations

from pathlib import Path

import nox

nox.options.sessions = ["lint", "tests"]
nox.options.reuse_existing_virtualenvs = True


@nox.session
def tests(session: nox.Session) -> None:
    """Run the test suite."""
    session.install("-e", ".[tests]")
    session.run("python", "-m", "pytest", *session.posargs)


@nox.session
def reliability(session: nox.Session) -> None:
    """The crash, fuzz and permission suite at full size; figures to docs/."""
    session.install("-e", ".[tests]")
    session.run(
        "python",
        "-m",
        "pytest",
        "tests/reliability",
        "--full",
        "-p",
        "no:cacheprovider",
        *session.posargs,
        env={"DVC_TASK_FIGURES": "docs/reliability-figures.json"},
    )


@nox.session
def dvc(session: nox.Session) -> None:
    """DVC's experiment queue on our package, driven through DVC's CLI."""
    session.install("-e", ".[tests]", "dvc")
    session.run("python", "-m", "pytest", "tests/integration", *session.posargs)


@nox.session
def lint(session: nox.Session) -> None:
    """Ruff (lint and format) and mypy --strict on src/."""
    session.install("-e", ".[dev]")
    session.run("ruff", "check", "src", "tests", "benchmarks", "examples", "noxfile.py")
    session.run("ruff", "format", "--check", "src", "tests", "benchmarks", "examples")
    session.run("mypy")


def _peer_env(session: nox.Session, path: Path, requirement: str) -> Path:
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
            requirement,
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
    session.run(
        "python",
        "benchmarks/bench_worker.py",
        "--peer-040",
        str(peer_python),
        "--output",
        str(results / "worker.md"),
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
    names = ("peers.md", "transport.md", "proc.md", "worker.md")
    parts = [(results / name).read_text() for name in names]
    (results / "latest.md").write_text("\n".join(parts))
