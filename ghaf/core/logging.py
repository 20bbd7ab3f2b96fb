"""Structured logging (text or JSON), tagged with the current request id."""

from __future__ import annotations

import json
import logging
import sys
from contextvars import ContextVar
from datetime import UTC, datetime
from typing import Any

from ghaf.core.clock import isoformat

request_id_var: ContextVar[str | None] = ContextVar("ghaf_request_id", default=None)
FIELDS = "ghaf_fields"
"""A record's ``extra`` key naming its arguments: ``log.info("%s %d", a, b,
extra={FIELDS: ("name", "count")})`` is text as usual, and in JSON also carries
``"name": a, "count": b`` as fields of their own (the access log's lines)."""


class _RequestIdFilter(logging.Filter):
    def filter(self, record: logging.LogRecord) -> bool:
        record.request_id = request_id_var.get() or "-"
        return True


class JsonFormatter(logging.Formatter):
    def format(self, record: logging.LogRecord) -> str:
        payload = {
            "ts": isoformat(datetime.fromtimestamp(record.created, UTC)),
            "level": record.levelname.lower(),
            "logger": record.name,
            "message": record.getMessage(),
            "request_id": getattr(record, "request_id", None),
        }
        fields = getattr(record, FIELDS, None)
        if fields is not None and isinstance(record.args, tuple):
            payload.update(zip(fields, record.args, strict=False))
        if record.exc_info:
            payload["error"] = self.formatException(record.exc_info)
        return json.dumps(payload, ensure_ascii=False)


class _StderrHandler(logging.StreamHandler):  # type: ignore[type-arg]
    """Writes to ``sys.stderr`` as it is when a record is emitted, not as it was when
    logging was configured: whoever swaps the stream (a test runner invoking the CLI, a
    process manager) would otherwise leave the handler writing to a closed file."""

    @property
    def stream(self) -> Any:
        return sys.stderr

    @stream.setter
    def stream(self, _value: Any) -> None:
        pass


def configure_logging(*, fmt: str = "text", level: str = "info") -> None:
    """Install one stderr handler on the root logger (idempotent)."""
    handler = _StderrHandler()
    handler.addFilter(_RequestIdFilter())
    if fmt == "json":
        handler.setFormatter(JsonFormatter())
    else:
        handler.setFormatter(
            logging.Formatter("%(asctime)s %(levelname)s %(name)s [%(request_id)s] %(message)s")
        )
    root = logging.getLogger()
    root.handlers = [handler]
    root.setLevel(level.upper())
