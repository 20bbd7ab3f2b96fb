"""Logical artifact paths: normalised and validated, never used as filesystem paths."""

from __future__ import annotations

import unicodedata

from ghaf.core.errors import InvalidInput

MAX_PATH = 1024
MAX_SEGMENT = 255


def normalise_path(path: str, *, field: str = "path") -> str:
    """NFC-normalised ``a/b/c``; refuses anything that could mean something else.

    Refused: empty, absolute, ``.``/``..`` or empty segments, NUL, backslashes,
    control characters, over 1024 characters or a segment over 255.
    """
    if not isinstance(path, str) or not path:
        raise InvalidInput(f"{field} must not be empty", field=field)
    # Most paths are printable ASCII: NFC and the category scan cannot change or refuse
    # those, and skipping them matters for manifests of 100,000 files.
    simple = path.isascii() and path.isprintable()
    if not simple:
        path = unicodedata.normalize("NFC", path)
    if len(path) > MAX_PATH:
        raise InvalidInput(
            f"{field} is {len(path)} characters long; the limit is {MAX_PATH}", field=field
        )
    if "\x00" in path:
        raise InvalidInput(f"{field} must not contain a NUL byte", field=field)
    if "\\" in path:
        raise InvalidInput(f"{field} must not contain backslashes; use '/'", field=field)
    if not simple and any(unicodedata.category(ch) in ("Cc", "Cf", "Zl", "Zp") for ch in path):
        raise InvalidInput(f"{field} must not contain control characters", field=field)
    if path.startswith("/"):
        raise InvalidInput(f"{field} must be relative, not start with '/'", field=field)
    for segment in path.split("/"):
        if segment in ("", ".", ".."):
            raise InvalidInput(f"{field} {path!r} has an empty, '.' or '..' segment", field=field)
        if len(segment) > MAX_SEGMENT:
            raise InvalidInput(f"{field} has a segment over {MAX_SEGMENT} characters", field=field)
    return path
