"""Exceptions shared by every part of dvc-task."""

from __future__ import annotations


class DvcTaskError(Exception):
    """Base class of every error raised by dvc-task."""


class UnsafeFolderError(DvcTaskError, PermissionError):
    """A queue or process folder can be written by someone other than its owner."""

    def __init__(self, path: str, reason: str, fix: str) -> None:
        self.path = path
        super().__init__(f"refusing to use '{path}': {reason}; {fix}")
