"""Cursor (keyset) pagination shared by every list endpoint."""

from __future__ import annotations

import base64
import json
from collections.abc import Sequence
from typing import TYPE_CHECKING, Any, Generic, TypeVar

from pydantic import BaseModel

from ghaf.core.errors import InvalidInput

if TYPE_CHECKING:  # the SDK pages too, and must not need SQLAlchemy to import
    from sqlalchemy import Select
    from sqlalchemy.orm import InstrumentedAttribute, Session

T = TypeVar("T")
DEFAULT_LIMIT = 100
MAX_LIMIT = 1000


class Page(BaseModel, Generic[T]):
    """One page of a list; pass ``next_cursor`` back to get the next one."""

    items: list[T]
    next_cursor: str | None = None


def encode_cursor(value: Any) -> str:
    raw = json.dumps([value], separators=(",", ":")).encode()
    return base64.urlsafe_b64encode(raw).decode().rstrip("=")


def decode_cursor(cursor: str) -> Any:
    try:
        padded = cursor + "=" * (-len(cursor) % 4)
        (value,) = json.loads(base64.urlsafe_b64decode(padded.encode()))
    except Exception:  # any malformed cursor gets the same clear error
        raise InvalidInput("cursor is not one this server issued", field="cursor") from None
    # bool is an int to Python; an int past 64 bits overflows the database's binding.
    if (
        isinstance(value, bool)
        or not isinstance(value, str | int)
        or (isinstance(value, int) and not -(2**63) <= value < 2**63)
    ):
        raise InvalidInput("cursor is not one this server issued", field="cursor")
    return value


def check_page_size(page_size: int) -> int:
    """``page_size`` (the one paging word: docs/conventions.md), or a clear refusal."""
    if not 1 <= page_size <= MAX_LIMIT:
        raise InvalidInput(
            f"page_size must be between 1 and {MAX_LIMIT}, got {page_size}", field="page_size"
        )
    return page_size


def paginate(
    session: Session,
    statement: Select[Any],
    *,
    key: InstrumentedAttribute[Any],
    limit: int,
    cursor: str | None,
    descending: bool = False,
) -> tuple[Sequence[Any], str | None]:
    """Run ``statement`` ordered by the unique column ``key``, one page at a time."""
    check_page_size(limit)
    if cursor:
        last = decode_cursor(cursor)
        # A cursor of the wrong type (a name where a number belongs) is not ours either;
        # PostgreSQL would refuse the comparison with an error, not an empty page.
        if not isinstance(last, key.type.python_type):
            raise InvalidInput("cursor is not one this server issued", field="cursor")
        statement = statement.where(key < last if descending else key > last)
    statement = statement.order_by(key.desc() if descending else key).limit(limit + 1)
    rows = session.scalars(statement).all()
    if len(rows) <= limit:
        return rows, None
    rows = rows[:limit]
    return rows, encode_cursor(getattr(rows[-1], key.key))
