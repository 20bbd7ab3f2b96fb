"""Validation of human-chosen names (projects, users, groups, tokens, regions)."""

from __future__ import annotations

import re
from typing import Annotated

from pydantic import AfterValidator, WithJsonSchema

MAX_NAME_LENGTH = 64
_ALLOWED = re.compile(r"[A-Za-z0-9][A-Za-z0-9_.-]*")
NAME_PATTERN = r"^(?!.*\.\.)[A-Za-z0-9][A-Za-z0-9_.-]*$"
"""What :func:`validate_name` accepts, as a JSON Schema (ECMA-262) pattern: the OpenAPI
document states it so that clients can check a name before they send it."""
NAME_SCHEMA: dict[str, object] = {
    "type": "string",
    "minLength": 1,
    "maxLength": MAX_NAME_LENGTH,
    "pattern": NAME_PATTERN,
    "description": "Letters, digits, '_', '.' and '-', starting with a letter or digit; "
    f"at most {MAX_NAME_LENGTH} characters; never '..'.",
}


def validate_name(value: str, *, field: str = "name") -> str:
    """Return ``value`` if it is a valid name, else raise ``InvalidInput`` saying why.

    A name starts with a letter or digit, then letters, digits, ``_``, ``.`` or ``-``;
    at most 64 characters; never ``..``. Names appear in URLs, paths and logs, so
    anything that could escape one of those is refused rather than escaped.
    """
    from ghaf.core.errors import InvalidInput

    if not isinstance(value, str):
        raise InvalidInput(f"{field} must be a string", field=field)
    if value == "":
        raise InvalidInput(f"{field} must not be empty", field=field)
    if len(value) > MAX_NAME_LENGTH:
        raise InvalidInput(
            f"{field} is {len(value)} characters long; the limit is {MAX_NAME_LENGTH}",
            field=field,
        )
    for bad, label in (("\x00", "a NUL byte"), ("/", "'/'"), ("\\", "'\\'"), ("..", "'..'")):
        if bad in value:
            raise InvalidInput(f"{field} must not contain {label}", field=field)
    if not _ALLOWED.fullmatch(value):
        raise InvalidInput(
            f"{field} {value!r} is not allowed: use letters, digits, '_', '.' and '-', "
            "starting with a letter or digit",
            field=field,
        )
    return value


def _as_pydantic(value: str) -> str:
    from ghaf.core.errors import InvalidInput

    try:
        return validate_name(value)
    except InvalidInput as exc:
        # Pydantic adds the field location itself; strip our generic prefix.
        raise ValueError(exc.detail.removeprefix("name ").removeprefix("name")) from None


# The schema is stated, not enforced by Pydantic: validate_name gives the clearer message.
Name = Annotated[str, AfterValidator(_as_pydantic), WithJsonSchema(NAME_SCHEMA)]
"""A validated name, for Pydantic request schemas."""
