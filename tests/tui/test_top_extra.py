"""``dvc-task top`` where the 'tui' extra is not installed."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

from dvc_task.jobs import JobQueue


def test_top_without_textual_says_how_to_install_it(tmp_path: Path) -> None:
    folder = tmp_path / "q"
    JobQueue(folder).submit(["true"], held=True)  # a queue to watch
    code = (
        "import sys; sys.modules['textual'] = sys.modules['rich'] = None\n"
        "from dvc_task.cli import main\n"
        "sys.argv = ['dvc-task', '--dir', sys.argv[1], 'top']\n"
        "main()\n"
    )
    done = subprocess.run(
        [sys.executable, "-c", code, str(tmp_path / "q")],
        capture_output=True,
        text=True,
        check=False,
    )
    assert done.returncode == 1
    assert "pip install 'dvc-task[tui]'" in done.stderr
