"""What a server does about slow clients below its routes, for the platform's server
(ghaf/server/serve.py, ghaf/server/guards.py) and ``ghaf serve`` (ghaf/serving/wire.py)
alike: :class:`HeaderDeadline`, mixed into one of uvicorn's HTTP protocols, and
:class:`BodyTimeout`, the 408 for a body that arrives too slowly."""

from __future__ import annotations

import asyncio
import logging
from typing import Any, ClassVar

from starlette.exceptions import HTTPException

from ghaf.core.errors import GhafError

__all__ = ["BodyTimeout", "HeaderDeadline"]
log = logging.getLogger("ghaf.server")


class BodyTimeout(GhafError, HTTPException):
    """Raised from ``receive`` when the body arrives too slowly; an ``HTTPException`` too,
    so FastAPI's body parsing lets it through unchanged to the problem handler."""

    status: ClassVar[int] = 408
    code: ClassVar[str] = "request-timeout"
    title: ClassVar[str] = "Request timeout"

    def __init__(self, waited: float) -> None:
        GhafError.__init__(
            self,
            f"the request body arrived too slowly (waited {waited:.0f} s for it); send it "
            "again over a faster link",
            field="body",
        )
        self.status_code = 408
        self.headers = None


class HeaderDeadline:
    """Mixed into one of uvicorn's HTTP protocols: the next request's line and headers
    must arrive within ``header_timeout_s`` of the connection opening or the previous
    response ending, and within ``max_header_bytes``; otherwise the connection closes."""

    # The attributes of uvicorn's protocols this relies on (both have them).
    transport: asyncio.Transport
    loop: asyncio.AbstractEventLoop
    cycle: Any

    def __init__(
        self, *args: Any, header_timeout_s: float, max_header_bytes: int, **kwargs: Any
    ) -> None:
        super().__init__(*args, **kwargs)
        self._header_timeout_s = header_timeout_s
        self._max_header_bytes = max_header_bytes
        self._header_timer: asyncio.TimerHandle | None = None
        self._waiting = False  # for the next request's headers
        self._waiting_after: Any = None  # the cycle that was current when waiting began
        self._header_deadline = 0.0
        self._header_bytes = 0

    def _await_headers(self) -> None:
        # One timer a connection, re-armed only when it fires early: a timer per
        # request cost the serving hot path 5% of its rate (ADR 0022).
        self._waiting = True
        self._waiting_after = self.cycle
        self._header_bytes = 0
        self._header_deadline = self.loop.time() + self._header_timeout_s
        if self._header_timer is None:
            self._header_timer = self.loop.call_later(self._header_timeout_s, self._check_headers)

    def _stop_waiting(self) -> None:
        self._waiting = False

    def _check_headers(self) -> None:
        self._header_timer = None
        if not self._waiting or self.transport.is_closing():
            return
        if self.cycle is not self._waiting_after:
            self._waiting = False  # a new request's headers are complete
            return
        left = self._header_deadline - self.loop.time()
        if left > 0:
            self._header_timer = self.loop.call_later(left, self._check_headers)
            return
        log.debug("closed a connection whose request headers were too slow")
        self.transport.close()

    def connection_made(self, transport: Any) -> None:
        super().connection_made(transport)  # type: ignore[misc]
        self._await_headers()

    def connection_lost(self, exc: Exception | None) -> None:
        self._stop_waiting()
        if self._header_timer is not None:
            self._header_timer.cancel()
            self._header_timer = None
        super().connection_lost(exc)  # type: ignore[misc]

    def data_received(self, data: bytes) -> None:
        super().data_received(data)  # type: ignore[misc]
        if not self._waiting:
            return
        if self.cycle is not self._waiting_after:
            self._stop_waiting()  # a new request's headers are complete
            return
        self._header_bytes += len(data)
        if self._header_bytes > self._max_header_bytes and not self.transport.is_closing():
            self._stop_waiting()
            self.transport.write(
                b"HTTP/1.1 431 Request Header Fields Too Large\r\n"
                b"content-length: 0\r\nconnection: close\r\n\r\n"
            )
            self.transport.close()

    def on_response_complete(self) -> None:
        super().on_response_complete()  # type: ignore[misc]
        running = self.cycle is not None and not self.cycle.response_complete
        if not running and not self.transport.is_closing():
            self._await_headers()  # a pipelined request already has its headers
