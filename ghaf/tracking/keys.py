"""Rules for metric, param and tag keys, shared by the SDK (checked at the call) and the
server (checked again, for every other client).

A key is 1-250 characters of letters, digits, ``_ - . /`` and spaces. ``/`` namespaces
keys (``val/loss``), as TensorBoard does; ``.`` and ``..`` as a whole segment, empty
segments and a leading or trailing ``/`` are refused, because keys become file paths
when runs are exported.
"""

from __future__ import annotations

import re

from ghaf.core.errors import InvalidInput

MAX_KEY = 250
_ALLOWED = re.compile(r"[A-Za-z0-9_\-. /]+")


def validate_key(key: object, *, kind: str) -> str:
    """``key`` if it is a valid ``kind`` (metric, param, tag) key, else ``InvalidInput``."""
    field = f"{kind}s.{key}" if isinstance(key, str) and len(key) <= MAX_KEY else f"{kind}s"
    if not isinstance(key, str):
        raise InvalidInput(f"{kind} key must be a string, not {type(key).__name__}", field=field)
    if not key or len(key) > MAX_KEY:
        raise InvalidInput(
            f"{kind} key must be 1 to {MAX_KEY} characters long; got {len(key)}", field=field
        )
    if not _ALLOWED.fullmatch(key):
        raise InvalidInput(
            f"{kind} key {key!r} may only hold letters, digits, '_', '-', '.', '/' and spaces",
            field=field,
        )
    if any(segment in ("", ".", "..") for segment in key.split("/")):
        raise InvalidInput(
            f"{kind} key {key!r} has an empty, '.' or '..' segment between slashes",
            field=field,
        )
    return key
