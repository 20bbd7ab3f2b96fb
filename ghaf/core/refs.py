"""Version references, parsed in one place for every domain (models, datasets).

A reference is a version number (ASCII digits only, at most 9 of them), ``latest``, or
an alias (a tag, for datasets), optionally written ``@alias``. Anything else is refused
as invalid input naming the field, never guessed at: ``'²'.isdigit()`` is true and
``int('٣')`` is 3, so neither ``str.isdigit`` nor ``int`` may decide what a number is.
"""

from __future__ import annotations

import re
from dataclasses import dataclass

from ghaf.core.errors import InvalidInput
from ghaf.core.names import validate_name

LATEST = "latest"
MAX_DIGITS = 9
_DIGITS = re.compile(r"[0-9]+")  # a str pattern's [0-9] is ASCII only


@dataclass(frozen=True)
class Ref:
    """Exactly one of: ``number``, ``latest`` (true), or ``alias``."""

    number: int | None = None
    latest: bool = False
    alias: str | None = None

    def __str__(self) -> str:
        if self.number is not None:
            return str(self.number)
        return LATEST if self.latest else f"@{self.alias}"


def version_number(value: str | int, *, field: str = "version") -> int | None:
    """``value`` as a version number if it is written as one (ASCII digits), else None.

    Refuses numbers of more than 9 digits: no version gets there, and a database may not
    hold the integer."""
    if isinstance(value, bool):
        raise InvalidInput(f"{field} must be a version number, not a boolean", field=field)
    if isinstance(value, int):
        if value < 1:
            raise InvalidInput(
                f"{field} {value} is not a version: versions start at 1", field=field
            )
        text = str(value)
    elif isinstance(value, str):
        text = value
    else:
        raise InvalidInput(f"{field} must be a version number or a name", field=field)
    if not _DIGITS.fullmatch(text):
        return None
    if len(text.lstrip("0")) > MAX_DIGITS:
        raise InvalidInput(
            f"{field} {text[:20]!r}{'...' if len(text) > 20 else ''} is too large: "
            f"versions have at most {MAX_DIGITS} digits",
            field=field,
        )
    return int(text)


def parse_ref(value: str | int, *, field: str = "version", alias_field: str = "alias") -> Ref:
    """A version number, ``latest``, or an alias (``@champion`` or ``champion``)."""
    number = version_number(value, field=field)
    if number is not None:
        return Ref(number=number)
    assert isinstance(value, str)
    text = value.strip()
    if text == LATEST:
        return Ref(latest=True)
    alias = text.removeprefix("@")
    number = version_number(alias, field=field)  # '@3' means version 3
    if number is not None:
        return Ref(number=number)
    if alias == LATEST:
        return Ref(latest=True)
    return Ref(alias=validate_name(alias, field=alias_field))


def is_reserved(alias: str) -> bool:
    """Names an alias or tag cannot take: ``latest`` and anything written as a number."""
    return alias == LATEST or _DIGITS.fullmatch(alias) is not None


def split_name_ref(text: str) -> tuple[str, str | None]:
    """``churn@champion`` -> ("churn", "champion"); ``churn`` -> ("churn", None)."""
    name, at, ref = text.partition("@")
    return name, (ref if at else None)
