"""Entry point of a detached runner: ``python -m dvc_task.proc.runner SPEC``.

SPEC is the JSON that :meth:`ManagedProcess.spawn` writes: the class to use
and its constructor arguments. The runner starts the command, waits for it
and records its return code.
"""

from __future__ import annotations

import importlib
import json
import os
import signal
import sys
from typing import Any

#: Signals that the runner passes on to its command.
FORWARDED = (signal.SIGINT, signal.SIGTERM, signal.SIGHUP)


def main(argv: list[str]) -> int:
    """Run the spawned command; return 0 once its return code is recorded."""
    # A caller started in the background by a shell ignores SIGINT and
    # SIGQUIT; a detached runner starts afresh, so that its command (which
    # gets these dispositions) can be interrupted. SIGINT, SIGTERM and SIGHUP
    # are forwarded to the command (see below).
    signal.signal(signal.SIGQUIT, signal.SIG_DFL)
    spec = json.loads(argv[0])
    module, _, qualname = spec.pop("class").partition(":")
    target: Any = importlib.import_module(module)
    for part in qualname.split("."):
        target = getattr(target, part)
    proc = target(**spec)

    def forward(signum: int, _frame: Any) -> None:
        # Stopping the runner stops its command: the signal goes on to the
        # command's process group, and the runner records how it ended.
        try:
            os.killpg(proc.pid, signum)
        except ValueError:
            raise SystemExit(128 + signum) from None  # nothing started yet
        except ProcessLookupError:
            pass

    for sig in FORWARDED:
        signal.signal(sig, forward)
    with proc:
        pass
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
