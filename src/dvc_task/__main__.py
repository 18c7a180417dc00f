"""``python -m dvc_task``: the ``dvc-task`` command line."""

from __future__ import annotations

from dvc_task.cli import main

main()
