"""Reading a message file and checking that it is a message we can deliver.

What happens to a bad one (``quarantine/``) is :mod:`.folderqueue`'s.
"""

from __future__ import annotations

import base64
import binascii
import fcntl
import json
import os
from pathlib import Path
from typing import Any

from dvc_task.files import open_regular

#: A message file found empty is left alone this long: a dvc-task 0.40
#: producer creates the file first and writes it afterwards.
EMPTY_GRACE_S = 2.0
DEFAULT_ACCEPT = frozenset({"application/json"})


class BadMessageError(ValueError):
    """A message file that can never be delivered; the text says why."""


def read_message(path: Path) -> bytes:
    """Read a message file, waiting for no writer.

    Raises:
        FileNotFoundError: the file is gone (taken by someone else).
        BlockingIOError: a dvc-task 0.40 producer is still writing it.

    """
    with os.fdopen(open_regular(path), "rb") as fobj:
        # 0.40 producers write in place under an exclusive lock; ours rename
        # complete files, so the lock is only ever held by an old producer.
        fcntl.flock(fobj.fileno(), fcntl.LOCK_SH | fcntl.LOCK_NB)
        try:
            return fobj.read()
        finally:
            fcntl.flock(fobj.fileno(), fcntl.LOCK_UN)


def parse_message(
    data: bytes, accept: frozenset[str] = DEFAULT_ACCEPT
) -> dict[str, Any]:
    """Decode a message file into a Kombu payload.

    Raises:
        BadMessageError: the file can never be delivered; says why.

    """
    if not data.strip():
        raise BadMessageError("the file is empty")
    # Kombu's decoder (dates, UUIDs...), imported here so that listing the
    # queue from the command line need not load Kombu.
    from kombu.utils.json import loads  # noqa: PLC0415

    try:
        payload = loads(data.decode("utf-8"))
    except (UnicodeDecodeError, ValueError) as exc:
        raise BadMessageError(f"not JSON ({exc})") from None
    if not isinstance(payload, dict):
        raise BadMessageError("not a JSON object")
    props = payload.get("properties")
    if not isinstance(props, dict):
        raise BadMessageError("no 'properties' object")
    tag = props.get("delivery_tag")
    if not isinstance(tag, str) or not tag:
        raise BadMessageError("no 'properties.delivery_tag' string")
    if not isinstance(props.get("delivery_info", {}), dict):
        raise BadMessageError("'properties.delivery_info' is not an object")
    if not isinstance(payload.get("headers", {}), (dict, type(None))):
        raise BadMessageError("'headers' is not an object")
    for key in ("content-type", "content-encoding"):
        if not isinstance(payload.get(key), (str, type(None))):
            raise BadMessageError(f"'{key}' is not a string")
    content_type = payload.get("content-type")
    if content_type not in accept:
        raise BadMessageError(
            f"content type {content_type!r} is not accepted (accepted: "
            f"{', '.join(sorted(accept))})"
        )
    body = _decode_body(payload.get("body"), props.get("body_encoding"))
    if content_type == "application/json":
        _check_json_body(body, payload.get("content-encoding"))
    return payload


def _check_json_body(body: bytes, encoding: Any) -> None:
    # Celery reads a task or a broadcast from a JSON array or object; anything
    # else would reach it as an exception in its consumer.
    if encoding is not None and str(encoding).lower() not in ("utf-8", "utf8"):
        raise BadMessageError(f"JSON body in unexpected encoding {encoding!r}")
    try:
        decoded = json.loads(body.decode("utf-8"))
    except (UnicodeDecodeError, ValueError) as exc:
        raise BadMessageError(f"the body is not JSON ({exc})") from None
    if not isinstance(decoded, (list, dict)):
        raise BadMessageError("the body is not a JSON array or object")


def _decode_body(body: Any, encoding: Any) -> bytes:
    if body is not None and not isinstance(body, str):
        raise BadMessageError("'body' is not a string")
    if encoding is None or (isinstance(encoding, str) and encoding.lower() == "utf-8"):
        return (body or "").encode("utf-8", "surrogatepass")
    if encoding != "base64":
        raise BadMessageError(f"unknown body encoding {encoding!r}")
    try:
        return base64.b64decode(body or "", validate=True)
    except (binascii.Error, ValueError):
        raise BadMessageError("'body' is not valid base64") from None
