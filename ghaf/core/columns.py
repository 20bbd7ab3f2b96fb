"""Column types that check the shape of what they read back.

SQLite keeps JSON as text, and anyone who can write the database file (or a PostgreSQL
role with UPDATE) can replace a list with a number. Code reading ``project.allowed_regions``
trusts it to be a list of strings; a row of the wrong shape is reported as damaged
metadata (``StoredObjectCorrupt``, answered 502) where it is read, instead of surfacing
later as a ``TypeError`` and a 500.
"""

from __future__ import annotations

from typing import Any

from sqlalchemy import JSON
from sqlalchemy.engine import Dialect
from sqlalchemy.types import TypeDecorator

from ghaf.core.errors import StoredObjectCorrupt


def _damaged(what: str, value: Any) -> StoredObjectCorrupt:
    return StoredObjectCorrupt(
        f"a stored row holds {type(value).__name__} where {what} belongs: the metadata "
        "database was damaged or tampered with; restore it from a backup"
    )


class JsonList(TypeDecorator[list[Any]]):
    """A JSON array; ``of_strings=True`` also requires every item to be a string."""

    impl = JSON
    cache_ok = True

    def __init__(self, *, of_strings: bool = False) -> None:
        super().__init__()
        self.of_strings = of_strings

    def process_result_value(self, value: Any, dialect: Dialect) -> list[Any] | None:
        if value is None:
            return None
        if not isinstance(value, list):
            raise _damaged("a JSON array", value)
        if self.of_strings and not all(isinstance(item, str) for item in value):
            bad = next(item for item in value if not isinstance(item, str))
            raise _damaged("a string in a JSON array", bad)
        return value


class JsonObject(TypeDecorator[dict[str, Any]]):
    """A JSON object."""

    impl = JSON
    cache_ok = True

    def process_result_value(self, value: Any, dialect: Dialect) -> dict[str, Any] | None:
        if value is None:
            return None
        if not isinstance(value, dict):
            raise _damaged("a JSON object", value)
        return value
