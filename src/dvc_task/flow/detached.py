"""A flow run detached: ``python -m dvc_task.flow.detached SPEC``.

Started by ``execute(..., wait=False)`` (or ``dvc-task flow run``) as a
managed process of its own in ``<folder>/flows/<flow>/``: it runs the flow's
generator to its end and prints how each task ended in its log.
"""

from __future__ import annotations

import json
import sys

from dvc_task.flow.driver import execute
from dvc_task.flow.runner import load
from dvc_task.flow.tasks import FlowFunction
from dvc_task.flow.values import decode


def main(argv: list[str]) -> int:
    """A detached flow: run it; 0 if every task succeeded."""
    spec = json.loads(argv[0])
    function = load(spec["flow"]["call"], unwrap=False)
    if not isinstance(function, FlowFunction):
        raise TypeError(f"{spec['flow']['call']['qualname']} is not a flow")
    target = function(*decode(spec["flow"]["args"]), **decode(spec["flow"]["kwargs"]))
    result = execute(target, spec["folder"], broker=spec["broker"], progress=False)
    for name, state in result.states.items():
        print(f"{name}: {state}")
    if result.error:
        print(f"the flow raised {result.error}")
    return 0 if result.ok else 1


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
