"""Background processes that outlive their caller: run, list, follow, kill.

The names below are imported when first used, so that a module that needs
only one of them (a listing needs :class:`ProcessInfo`) does not load the
others (and psutil).
"""

from __future__ import annotations

from typing import TYPE_CHECKING

from dvc_task import lazy

if TYPE_CHECKING:
    from dvc_task.proc.info import ProcessInfo
    from dvc_task.proc.manager import ProcessManager
    from dvc_task.proc.process import ManagedProcess

__all__ = ["ManagedProcess", "ProcessInfo", "ProcessManager"]

_WHERE = {
    "ManagedProcess": "dvc_task.proc.process",
    "ProcessInfo": "dvc_task.proc.info",
    "ProcessManager": "dvc_task.proc.manager",
}


__getattr__ = lazy.exports(__name__, _WHERE)
