"""The process of one Python task: ``python -m dvc_task.flow.runner SPEC``.

SPEC (JSON, see :meth:`dvc_task.flow.tasks.Task.spec`) names the function to
call (``call``) or the :class:`~dvc_task.flow.tasks.Task` class to make and
run (``make``), by module or by script path, and the encoded arguments. The
result is written as the last line of the output (stdout), after everything
the task printed. Each task runs in a process of its own, so that a crash,
a leak or ``os._exit`` in one cannot take its worker down.
"""

from __future__ import annotations

import importlib
import importlib.util
import json
import os
import sys
from types import ModuleType
from typing import Any

from dvc_task.flow.tasks import RESULT_PREFIX, SCRIPT_MODULE, FunctionTask, Task
from dvc_task.flow.values import NotJSONError, decode, dumps, encode


def load(target: dict[str, str], unwrap: bool = True) -> Any:
    """The function or class that ``target`` names (see ``target_of``).

    With ``unwrap``, a task or flow function's own function.
    """
    module: ModuleType
    if "module" in target:
        module = importlib.import_module(target["module"])
    else:
        spec = importlib.util.spec_from_file_location(SCRIPT_MODULE, target["path"])
        if spec is None or spec.loader is None:
            raise ImportError(f"cannot load the script {target['path']}")
        module = importlib.util.module_from_spec(spec)
        sys.modules[SCRIPT_MODULE] = module
        spec.loader.exec_module(module)
    found: Any = module
    for part in target["qualname"].split("."):
        found = getattr(found, part)
    return getattr(found, "func", found) if unwrap else found


def run(spec: dict[str, Any]) -> Any:
    """Run what ``spec`` says; what it returned."""
    args = decode(spec.get("args", []))
    kwargs = decode(spec.get("kwargs", {}))
    if "call" in spec:
        return load(spec["call"])(*args, **kwargs)
    made = load(spec["make"])(*args, **kwargs)
    if not isinstance(made, Task) or isinstance(made, FunctionTask):
        raise TypeError(f"{spec['make']['qualname']} is not a Task subclass")
    return made.run()


def _write_result(text: str) -> None:
    """Write the result line, on a line of its own, at the end of stdout."""
    sys.stdout.flush()
    sys.stderr.flush()
    out = sys.stdout.fileno()
    os.write(out, _line_break(out) + f"{RESULT_PREFIX}{text}\n".encode())


def _line_break(out: int) -> bytes:
    """A line break, unless the output file is empty or ends a line already."""
    try:
        # The output is opened for writing only: read it through /dev/fd.
        with open(f"/dev/fd/{out}", "rb") as again:
            size = again.seek(0, os.SEEK_END)
            if size == 0:
                return b""
            again.seek(size - 1)
            return b"" if again.read(1) == b"\n" else b"\n"
    except OSError:
        return b"\n"  # not a file we can read: be sure


def main(argv: list[str]) -> int:
    """Run the task; 0 once its result is written."""
    result = run(json.loads(argv[0]))
    try:
        text = dumps(encode(result, "the result"))
    except NotJSONError as exc:
        print(f"dvc-task: {exc}", file=sys.stderr)
        return 1
    _write_result(text)
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
