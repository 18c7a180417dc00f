"""Background jobs for desktop and command-line applications, without a broker."""

from __future__ import annotations

__all__ = ["app", "proc", "utils", "worker"]
