"""UTC time. Every timestamp ghaf stores or prints is timezone-aware UTC."""

from __future__ import annotations

from datetime import UTC, datetime


def utcnow() -> datetime:
    return datetime.now(UTC)


def as_utc(value: datetime) -> datetime:
    """Attach UTC to naive values read back from SQLite, convert aware ones."""
    if value.tzinfo is None:
        return value.replace(tzinfo=UTC)
    return value.astimezone(UTC)


def isoformat(value: datetime) -> str:
    """Fixed-width ISO 8601 with microseconds and a Z suffix (sorts as text)."""
    return as_utc(value).strftime("%Y-%m-%dT%H:%M:%S.%fZ")


def parse_time(text: str, *, field: str = "time") -> datetime:
    """Parse ISO 8601; naive input is read as UTC."""
    from ghaf.core.errors import InvalidInput

    try:
        parsed = datetime.fromisoformat(text.replace("Z", "+00:00"))
    except ValueError:
        raise InvalidInput(
            f"{field}: {text!r} is not an ISO 8601 time (e.g. 2026-01-31T12:00:00Z)",
            field=field,
        ) from None
    return as_utc(parsed)
