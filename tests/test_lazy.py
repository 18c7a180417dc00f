"""Imports made at first use (``dvc_task.lazy``): once, whole, in any thread."""

from __future__ import annotations

import sys
import threading
from pathlib import Path

import pytest

from dvc_task import lazy

SLOW_MODULE = """
import time
time.sleep(0.2)  # a module that takes a while to import: a race's window
READY = True
"""


def test_a_module_used_by_many_threads_at_once_is_imported_once_and_whole(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    (tmp_path / "slow_to_import.py").write_text(SLOW_MODULE)
    monkeypatch.syspath_prepend(str(tmp_path))
    monkeypatch.delitem(sys.modules, "slow_to_import", raising=False)
    deferred = lazy.module("slow_to_import")
    assert "slow_to_import" not in sys.modules  # nothing imported yet

    start = threading.Barrier(8)
    seen: list[object] = []

    def use() -> None:
        start.wait()
        try:
            seen.append(deferred.READY)
        except AttributeError as exc:  # a half-imported module
            seen.append(exc)

    threads = [threading.Thread(target=use) for _ in range(8)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()

    assert seen == [True] * 8
    real = sys.modules["slow_to_import"]
    real.READY = False  # the real module's attributes are what it shows
    assert deferred.READY is False


def test_a_package_export_is_imported_at_first_use_and_an_unknown_name_fails() -> None:
    getattr_ = lazy.exports("pkg", {"JobQueue": "dvc_task.jobs.queue"})

    assert getattr_("JobQueue").__name__ == "JobQueue"
    with pytest.raises(AttributeError, match="'pkg' has no attribute 'Nope'"):
        getattr_("Nope")
