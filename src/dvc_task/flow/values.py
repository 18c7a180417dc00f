"""The values a flow's tasks take and give: JSON, and ``pathlib.Path``.

A path travels as ``{"__path__": "..."}`` and comes back a ``Path``; every
other value must be what :mod:`json` writes as it is (``None``, booleans,
numbers, strings, lists and dicts with string keys). Tuples become lists.
"""

from __future__ import annotations

import hashlib
import json
import math
from pathlib import PurePath
from typing import Any

_PATH_KEY = "__path__"


class NotJSONError(ValueError):
    """A value that cannot travel between processes as JSON."""


def encode(value: Any, where: str) -> Any:
    """``value`` as JSON-ready data; ``where`` names it in an error.

    Raises:
        NotJSONError: naming ``where`` and what is wrong.
    """
    if value is None or isinstance(value, (bool, int, str)):
        return value
    if isinstance(value, float):
        if not math.isfinite(value):
            raise NotJSONError(f"{where} is {value!r}: not a finite number")
        return value
    if isinstance(value, PurePath):
        return {_PATH_KEY: str(value)}
    if isinstance(value, (list, tuple)):
        return [encode(item, f"{where}[{i}]") for i, item in enumerate(value)]
    if isinstance(value, dict):
        found = {}
        for key, item in value.items():
            if not isinstance(key, str):
                raise NotJSONError(f"{where} has a key {key!r} that is not a string")
            if key == _PATH_KEY:
                raise NotJSONError(f"{where} has the reserved key {_PATH_KEY!r}")
            found[key] = encode(item, f"{where}[{key!r}]")
        return found
    raise NotJSONError(
        f"{where} is of type {type(value).__name__}: give JSON values (numbers, "
        "strings, lists, dicts) or a pathlib.Path"
    )


def decode(data: Any) -> Any:
    """The value that :func:`encode` made ``data`` of."""
    if isinstance(data, list):
        return [decode(item) for item in data]
    if isinstance(data, dict):
        if set(data) == {_PATH_KEY}:
            from pathlib import Path  # noqa: PLC0415 - only where paths come

            return Path(data[_PATH_KEY])
        return {key: decode(item) for key, item in data.items()}
    return data


def dumps(data: Any) -> str:
    """Encoded ``data`` as canonical JSON text (the same for equal values)."""
    return json.dumps(data, sort_keys=True, separators=(",", ":"))


def digest(*parts: Any) -> str:
    """A short stable fingerprint of encoded ``parts`` (10 hex digits)."""
    return hashlib.sha256(dumps(list(parts)).encode()).hexdigest()[:10]
