"""Entry point of a detached runner: ``python -m dvc_task.proc.runner SPEC``.

SPEC is the JSON that :meth:`ManagedProcess.spawn` writes: the class to use
and its constructor arguments. The runner starts the command, waits for it
and records its return code.
"""

from __future__ import annotations

import importlib
import json
import signal
import sys
from typing import Any


def main(argv: list[str]) -> int:
    """Run the spawned command; return 0 once its return code is recorded."""
    # A caller started in the background by a shell ignores SIGINT and
    # SIGQUIT; a detached runner starts afresh, so that its command (which
    # gets these dispositions) can be interrupted.
    signal.signal(signal.SIGINT, signal.default_int_handler)
    signal.signal(signal.SIGQUIT, signal.SIG_DFL)
    spec = json.loads(argv[0])
    module, _, qualname = spec.pop("class").partition(":")
    target: Any = importlib.import_module(module)
    for part in qualname.split("."):
        target = getattr(target, part)
    with target(**spec):
        pass
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
