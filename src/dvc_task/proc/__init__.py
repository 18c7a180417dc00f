"""Background processes that outlive their caller: run, list, follow, kill."""

from __future__ import annotations

from dvc_task.proc.info import ProcessInfo
from dvc_task.proc.manager import ProcessManager
from dvc_task.proc.process import ManagedProcess

__all__ = ["ManagedProcess", "ProcessInfo", "ProcessManager"]
