"""What a server does about slow clients below its routes, for the platform's server
(ghaf/server/serve.py, ghaf/server/guards.py) and ``ghaf serve`` (ghaf/serving/wire.py)
alike: :class:`HeaderDeadline`, mixed into one of uvicorn's HTTP protocols;
:class:`BodyDeadline`, the one rule for how slowly a body may arrive, and
:class:`SlowBodies`, that rule around an ASGI app; :class:`BodyTimeout`, the 408 for a
body that arrives too slowly."""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Awaitable
from functools import partial
from typing import Any, ClassVar, TypeVar

from starlette.exceptions import HTTPException
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from ghaf.core.errors import GhafError

__all__ = ["BodyDeadline", "BodyTimeout", "HeaderDeadline", "SlowBodies"]
log = logging.getLogger("ghaf.server")
T = TypeVar("T")
_CLOSE = (b"connection", b"close")


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


class BodyDeadline:
    """How long one request has waited on its client for body bytes, and the bound on
    it (mod_reqtimeout's rule): no more than ``timeout_s`` plus one second per
    ``min_rate`` bytes received, so a client that sends a byte a second is cut off while
    a large upload on a working link never is. Time spent between waits (the route's
    own work) does not count."""

    __slots__ = ("complete", "min_rate", "received", "timed_out", "timeout_s", "waited")

    def __init__(self, timeout_s: float, min_rate: int) -> None:
        self.timeout_s = timeout_s
        self.min_rate = min_rate
        self.received = 0  # body bytes so far: each one earns more time
        self.waited = 0.0
        self.complete = False
        self.timed_out = False

    async def wait(self, pending: Awaitable[T]) -> T:
        """``pending``, awaited within what is left of the deadline (for the bytes
        received so far); :class:`BodyTimeout` past it."""
        allowed = self.timeout_s + self.received / self.min_rate - self.waited
        started = time.monotonic()
        try:
            async with asyncio.timeout(max(allowed, 0.0)):
                return await pending
        except TimeoutError:
            self.timed_out = True
            raise BodyTimeout(self.waited + time.monotonic() - started) from None
        finally:
            self.waited += time.monotonic() - started

    async def receive(self, receive: Receive) -> Message:
        """ASGI ``receive()`` within the deadline, counting the body's bytes."""
        if self.complete:
            # After the body, receive() waits for the disconnect (streaming responses
            # listen for it): that is not the client being slow.
            return await receive()
        message = await self.wait(receive())
        if message["type"] == "http.request":
            self.received += len(message.get("body", b""))
            self.complete = not message.get("more_body", False)
        else:
            self.complete = True
        return message

    def closing(self, send: Send) -> Send:
        """``send``, closing the connection after an answer given once the body timed
        out: the rest of it is never read, so the connection cannot be reused."""

        async def closing(message: Message) -> None:
            if message["type"] == "http.response.start" and self.timed_out:
                message["headers"] = [*message.get("headers", []), _CLOSE]
            await send(message)

        return closing


class SlowBodies:
    """An ASGI app whose every request body is held to a :class:`BodyDeadline`."""

    def __init__(self, app: ASGIApp, *, timeout_s: float, min_rate: int) -> None:
        self.app = app
        self.timeout_s = timeout_s
        self.min_rate = min_rate

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        deadline = BodyDeadline(self.timeout_s, self.min_rate)
        await self.app(scope, partial(deadline.receive, receive), deadline.closing(send))


class HeadersTooLarge(Exception):
    """Raised from a parser callback to stop parsing a request whose line and headers
    passed ``max_header_bytes``; the parser error ends in ``send_400_response``."""


TOO_LARGE = (
    b"HTTP/1.1 431 Request Header Fields Too Large\r\n"
    b"content-length: 0\r\nconnection: close\r\n\r\n"
)


class HeaderDeadline:
    """Mixed into one of uvicorn's HTTP protocols: the next request's line and headers
    must arrive within ``header_timeout_s`` of the connection opening or the previous
    response ending (otherwise the connection closes), and every request's line and
    headers must fit ``max_header_bytes`` (otherwise 431 and closed).

    The size is counted twice over: the bytes read while the next request's headers are
    still incomplete (a header value httptools is still buffering), and, in httptools'
    parser callbacks, each request's line and headers as they are parsed (a whole block
    in one read, a request pipelined behind another). uvicorn's h11 protocol has no such
    callbacks, so ghaf listens with httptools only. Trailer fields of a chunked body are
    dropped, never added to the request's headers."""

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
        self._header_bytes = 0  # read while waiting for the next request's headers
        self._parsed_bytes = 0  # of the line and headers of the request being parsed

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
        if self._header_bytes > self._max_header_bytes:
            self._refuse_headers()

    # httptools' parser callbacks: what a request's line and headers add up to.
    _in_trailers = False

    def on_message_begin(self) -> None:
        self._parsed_bytes = 0
        self._in_trailers = False
        super().on_message_begin()  # type: ignore[misc]

    def on_url(self, url: bytes) -> None:
        self._count_header_bytes(len(url))
        super().on_url(url)  # type: ignore[misc]

    def on_header(self, name: bytes, value: bytes) -> None:
        # httptools reports a chunked body's trailer fields here too, and uvicorn adds
        # them to the headers list its app reads (the scope's, when the whole request
        # came in one read): a token sent as a trailer would authenticate, and a proxy
        # that strips Authorization would be bypassed (RFC 9110 6.5.1: it must not).
        if self._in_trailers:
            return
        self._count_header_bytes(len(name) + len(value) + 4)  # ": " and CRLF
        super().on_header(name, value)  # type: ignore[misc]

    def on_headers_complete(self) -> None:
        self._in_trailers = True
        super().on_headers_complete()  # type: ignore[misc]

    def _count_header_bytes(self, size: int) -> None:
        self._parsed_bytes += size
        if self._parsed_bytes > self._max_header_bytes:
            raise HeadersTooLarge  # stops the parser before anything else runs

    def send_400_response(self, msg: str) -> None:
        """uvicorn's answer to bytes that do not parse: 431 for headers too large."""
        if self._parsed_bytes > self._max_header_bytes:
            self._refuse_headers()
        else:
            super().send_400_response(msg)  # type: ignore[misc]

    def _refuse_headers(self) -> None:
        self._stop_waiting()
        if not self.transport.is_closing():
            self.transport.write(TOO_LARGE)
            self.transport.close()

    def on_response_complete(self) -> None:
        super().on_response_complete()  # type: ignore[misc]
        running = self.cycle is not None and not self.cycle.response_complete
        if not running and not self.transport.is_closing():
            self._await_headers()  # a pipelined request already has its headers
