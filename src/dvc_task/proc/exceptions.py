"""Errors raised by the process manager."""

from __future__ import annotations

from typing import Any

from dvc_task.exceptions import DvcTaskError


class ProcessNotTerminatedError(DvcTaskError):
    """The process is still running."""

    def __init__(self, name: str) -> None:
        self.name = name
        super().__init__(
            f"Managed process '{name}' has not been terminated; stop it first, "
            "or remove it with force=True."
        )


class ProcessNotFoundError(DvcTaskError):
    """No process of that name exists."""

    def __init__(self, name: str) -> None:
        self.name = name
        super().__init__(f"Managed process '{name}' does not exist.")


class TimeoutExpired(DvcTaskError):
    """The process did not finish within the timeout."""

    def __init__(self, cmd: Any, timeout: float | None) -> None:
        super().__init__(f"'{cmd}' did not complete before timeout '{timeout}'")
        self.cmd = cmd
        self.timeout = timeout


class UnsupportedSignalError(DvcTaskError):
    """The signal cannot be sent on this platform."""

    def __init__(self, sig: int) -> None:
        self.sig = sig
        super().__init__(f"Unsupported signal: {sig}")


class InvalidProcessInfoError(DvcTaskError, ValueError):
    """A process information file cannot be read; the text says why."""

    def __init__(self, path: str, reason: str) -> None:
        self.path = path
        super().__init__(
            f"cannot read process information '{path}': {reason}. Remove its "
            "folder (ProcessManager.remove(name, force=True)) if it is not needed."
        )
