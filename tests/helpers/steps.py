"""A job that writes its output in steps the test controls.

Usage: ``python steps.py DIR CHUNK...``: for each CHUNK i, wait until
``DIR/go<i>`` exists, then write CHUNK (escapes like ``\\n`` decoded) to stdout.
"""

from __future__ import annotations

import os
import sys
import time


def main(folder: str, *chunks: str) -> int:
    for i, chunk in enumerate(chunks):
        deadline = time.monotonic() + 120
        while not os.path.exists(os.path.join(folder, f"go{i}")):
            if time.monotonic() > deadline:
                return 2
            time.sleep(0.005)
        sys.stdout.write(chunk.encode().decode("unicode_escape"))
        sys.stdout.flush()
    return 0


if __name__ == "__main__":
    sys.exit(main(*sys.argv[1:]))
