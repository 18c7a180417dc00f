"""Task automation: ``nox -s tests``, ``nox -s lint``, ``nox -s bench``."""

from __future__ import annotations

import nox

nox.options.sessions = ["lint", "tests"]
nox.options.reuse_existing_virtualenvs = True


@nox.session
def tests(session: nox.Session) -> None:
    """Run the test suite."""
    session.install("-e", ".[tests]")
    session.run("python", "-m", "pytest", *session.posargs)


@nox.session
def lint(session: nox.Session) -> None:
    """Ruff (lint and format) and mypy --strict on src/."""
    session.install("-e", ".[dev]")
    session.run("ruff", "check", "src", "tests", "benchmarks", "examples", "noxfile.py")
    session.run("ruff", "format", "--check", "src", "tests", "benchmarks", "examples")
    session.run("mypy")


@nox.session
def bench(session: nox.Session) -> None:
    """Benchmarks side by side with their peers; writes benchmarks/results/."""
    session.install("-e", ".")
    session.run(
        "python",
        "benchmarks/bench_transport.py",
        "--output",
        "benchmarks/results/latest.md",
        *session.posargs,
    )
