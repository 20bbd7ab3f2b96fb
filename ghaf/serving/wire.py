"""``ghaf serve``'s connections: prediction requests read straight off the wire.

Under uvicorn every request becomes an ASGI scope, a request-response cycle, a task and
a pair of ``receive``/``send`` coroutines before the app sees it; for a 1-row request
to a small model that costs more than the model call (docs/adr/0022-serving-wire.md).
:func:`protocol_for` gives uvicorn an HTTP protocol (uvicorn's own httptools one) that
answers the hot path's requests (ghaf/serving/fastpath.py) itself: it hands the path,
headers and body to :meth:`HotPath.answer` as a :class:`~ghaf.serving.calls.Call` and
writes the :class:`~ghaf.serving.calls.Answer` in one write. Everything else on the
connection (other routes, a request sent with ``Expect: 100-continue``, a path spelled
with escapes or a target in absolute form, a request pipelined behind another) goes to
uvicorn's ASGI path unchanged, which reaches the same hot path through the app.

What uvicorn guarantees for its own requests holds here too: the token is checked
before the body is read, and a body is buffered only up to uvicorn's high-water mark
until then (reading pauses); a body past the server's limit is refused with 413, and
the connection closed unless the whole body had been read already; answers keep the
order of the requests on a connection; a graceful shutdown lets a request in flight
finish and closes the connection after it. On every request, hot or not, the protocol
also holds headers and bodies to the platform's bounds for slow or huge clients
(ghaf/platform/slow_clients.py), refuses framing that RFC 9112 calls invalid (a 1.1
request without exactly one ``Host``, a transfer coding other than one ``chunked``),
drops trailer fields, and answers bytes that do not parse in the request's turn.
"""

from __future__ import annotations

import asyncio
import logging
from functools import partial
from typing import Any

from starlette.requests import ClientDisconnect
from starlette.types import Receive, Scope, Send
from uvicorn.protocols.http.flow_control import HIGH_WATER_LIMIT
from uvicorn.protocols.http.httptools_impl import STATUS_LINE, HttpToolsProtocol

from ghaf.core.errors import MalformedBody
from ghaf.platform.slow_clients import BodyDeadline, HeaderDeadline, SlowBodies
from ghaf.serving.calls import Answer, Call, too_large
from ghaf.serving.fastpath import Handler, HotPath, ServingApp

__all__ = ["protocol_for"]
log = logging.getLogger("ghaf.serving")
INVALID = "Invalid HTTP request received."  # uvicorn's words for bytes that do not parse
# What uvicorn answers when its app fails before answering (its send_500_response).
FAILED = Answer(500, b"Internal Server Error", "text/plain; charset=utf-8")


class _HotCycle:
    """A request the hot path answers, standing where uvicorn keeps its current
    request-response cycle: the connection reads ``response_complete``,
    ``keep_alive``, ``disconnected``, ``more_body`` and ``message_event.set()`` of it."""

    __slots__ = (
        "chunks",
        "disconnected",
        "keep_alive",
        "malformed",
        "more_body",
        "reading",
        "refused",
        "response_complete",
        "size",
        "waiter",
    )

    def __init__(self, *, keep_alive: bool) -> None:
        self.keep_alive = keep_alive
        self.response_complete = False
        self.disconnected = False
        self.more_body = True  # until the whole body has arrived
        self.refused = False  # the body went past the limit
        self.malformed = False  # the body's chunked framing did not parse
        self.reading = False  # the hot path asked for the body (the token passed)
        self.chunks: list[bytes] = []
        self.size = 0
        self.waiter: asyncio.Future[None] | None = None

    @property
    def message_event(self) -> _HotCycle:
        return self

    def set(self) -> None:
        """Wake the reader: more body, the end of it, or the connection is gone."""
        if self.waiter is not None and not self.waiter.done():
            self.waiter.set_result(None)


class _InvalidFraming(Exception):
    """Raised from ``on_headers_complete`` to stop the parser (module docstring)."""


def _framing_fault(headers: list[tuple[bytes, bytes]], http_version: str) -> str | None:
    """What RFC 9112 forbids in these headers and httptools lets through, if anything."""
    hosts = 0
    codings: list[bytes] = []
    for name, value in headers:
        if name == b"host":
            hosts += 1
        elif name == b"transfer-encoding":
            codings += [coding.strip().lower() for coding in value.split(b",")]
    if hosts > 1 or (hosts == 0 and http_version == "1.1"):
        # RFC 9112 3.2; h11 (uvicorn's other protocol) refuses the same.
        return "an HTTP/1.1 request needs exactly one Host header"
    if codings and codings != [b"chunked"]:
        # RFC 9112 6.1: chunked once and last; no other coding is implemented here.
        return "the only transfer coding accepted is chunked, once"
    return None


async def _invalid(msg: str, scope: Scope, receive: Receive, send: Send) -> None:
    """uvicorn's 400 for a queued request whose own bytes did not parse, in its turn."""
    body = msg.encode("ascii")
    headers = [
        (b"content-type", b"text/plain; charset=utf-8"),
        (b"content-length", str(len(body)).encode()),
        (b"connection", b"close"),
    ]
    await send({"type": "http.response.start", "status": 400, "headers": headers})
    await send({"type": "http.response.body", "body": body})


class HotProtocol(HeaderDeadline, HttpToolsProtocol):
    """uvicorn's httptools protocol, answering the hot path's requests itself, with the
    platform's bounds on slow or huge clients, and closing holes of uvicorn's own on
    every request (trailers, parse errors, loose framing)."""

    hot: HotPath
    body_timeout_s: float = 60.0
    body_min_rate: int = 1024
    _fault: str | None = None  # why on_headers_complete refused the request

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        # uvicorn's own requests get the hot path's body deadline (BodyLimit's rule).
        self.app = SlowBodies(self.app, timeout_s=self.body_timeout_s, min_rate=self.body_min_rate)

    def send_400_response(self, msg: str) -> None:
        current = self.cycle
        if current is None or current.response_complete:
            super().send_400_response(self._fault or msg)
            return
        current.keep_alive = False
        self.flow.pause_reading()  # nothing after the bad bytes is read
        if not current.more_body:
            # Bytes that do not parse behind a request still being answered: that
            # answer goes first, then the connection closes (uvicorn would write the
            # 400 at once, and its caller would read it as the answer to its good one).
            return
        # The bad bytes are in this request's own body: it fails now, in its turn.
        if isinstance(current, _HotCycle):
            current.malformed = True
            current.set()
        elif self.pipeline and self.pipeline[0][0] is current:
            self.pipeline[0] = (current, partial(_invalid, msg))  # queued behind another
        elif not current.response_started:
            super().send_400_response(msg)  # its app reads a disconnect
        else:
            self.transport.close()

    def on_headers_complete(self) -> None:
        self._in_trailers = True  # HeaderDeadline's: a hot request never reaches super()
        http_version = self.parser.get_http_version()
        fault = _framing_fault(self.headers, http_version)
        if fault is not None:
            self._fault = f"{INVALID[:-1]}: {fault}."
            raise _InvalidFraming(fault)  # the parser stops: send_400_response answers
        handler = self._hot_handler()
        if handler is None:
            super().on_headers_complete()
            return
        cycle = _HotCycle(keep_alive=http_version != "1.0" and self.parser.should_keep_alive())
        self.cycle = cycle
        path, _, query = self.url.partition(b"?")
        call = Call(
            path=path.decode("ascii"),
            raw_headers=self.headers,
            query_string=query,
            client=self.client[0] if self.client else None,
            read=lambda limit: self._read(cycle, limit),
        )
        task = self.loop.create_task(self._answer(cycle, handler, call))
        task.add_done_callback(self.tasks.discard)
        self.tasks.add(task)

    def _hot_handler(self) -> Handler | None:
        current = self.cycle
        if (
            self.expect_100_continue
            or (current is not None and not current.response_complete)  # pipelined
            or self.root_path
            or self.parser.get_method() != b"POST"
            or self.parser.should_upgrade()
            or b"#" in self.url
        ):
            return None
        # Exact bytes only: an escaped, absolute-form or fragment-carrying target goes
        # the ASGI way (which parses it as uvicorn does).
        return self.hot.routes.get(self.url.partition(b"?")[0].decode("latin-1"))

    def on_body(self, body: bytes) -> None:
        cycle = self.cycle
        if not isinstance(cycle, _HotCycle):
            super().on_body(body)
            return
        if cycle.response_complete or cycle.refused:
            return
        cycle.size += len(body)
        if cycle.size > self.hot.max_body_bytes:
            cycle.refused = True
            cycle.chunks.clear()
            self.flow.pause_reading()  # the rest is never read: the connection closes
            cycle.set()
            return
        cycle.chunks.append(body)
        if not cycle.reading:
            if cycle.size > HIGH_WATER_LIMIT:
                self.flow.pause_reading()  # until the token has passed
            return
        cycle.set()  # every byte received earns the reader more time

    def on_message_complete(self) -> None:
        cycle = self.cycle
        if not isinstance(cycle, _HotCycle):
            super().on_message_complete()
            return
        cycle.more_body = False
        cycle.set()

    async def _read(self, cycle: _HotCycle, limit: int) -> bytes:
        cycle.reading = True
        deadline = BodyDeadline(self.body_timeout_s, self.body_min_rate)
        while cycle.more_body and not (cycle.refused or cycle.malformed or cycle.disconnected):
            self.flow.resume_reading()
            cycle.waiter = self.loop.create_future()
            deadline.received = cycle.size
            await deadline.wait(cycle.waiter)  # BodyTimeout: answered 408, then closed
        if cycle.disconnected:
            raise ClientDisconnect()
        if cycle.refused:
            raise too_large(limit)
        if cycle.malformed:
            raise MalformedBody("the request's chunked body does not parse", field="body")
        chunks, cycle.chunks = cycle.chunks, []  # an idle connection keeps no body
        return chunks[0] if len(chunks) == 1 else b"".join(chunks)

    async def _answer(self, cycle: _HotCycle, handler: Handler, call: Call) -> None:
        try:
            answer: Answer | None = await self.hot.answer(handler, call)
        except ClientDisconnect:
            answer = None
        except Exception:  # the hot path answers its own errors; this is a bug
            log.exception("answering a serving request failed")
            cycle.keep_alive = False  # as uvicorn's 500, which closes the connection
            answer = FAILED
        if answer is None or cycle.disconnected or self.transport.is_closing():
            cycle.response_complete = True
            if not self.transport.is_closing():
                self.transport.close()
            return
        if self.flow.write_paused:
            await self.flow.drain()
        if cycle.more_body:
            cycle.keep_alive = False  # answered before its body was read: not reused
        self.transport.write(_wire(answer, self.server_state.default_headers, cycle.keep_alive))
        cycle.response_complete = True
        if not cycle.keep_alive:
            self.transport.close()
        self.on_response_complete()


def _wire(answer: Answer, default_headers: list[tuple[bytes, bytes]], keep_alive: bool) -> bytes:
    """The answer as HTTP/1.1 bytes: status line, headers, body."""
    content = [STATUS_LINE[answer.status]]
    for name, value in default_headers:
        content += [name, b": ", value, b"\r\n"]
    content += [
        b"content-type: ",
        answer.media_type.encode("latin-1"),
        b"\r\ncontent-length: ",
        str(len(answer.body)).encode(),
        b"\r\n",
    ]
    for name, value in answer.headers:
        content += [name, b": ", value, b"\r\n"]
    if not keep_alive:
        content.append(b"connection: close\r\n")
    content += [b"\r\n", answer.body]
    return b"".join(content)


def protocol_for(
    app: Any,
    *,
    header_timeout_s: float = 10.0,
    max_header_bytes: int = 64 << 10,
    body_timeout_s: float = 60.0,
    body_min_rate: int = 1024,
) -> Any:
    """The HTTP protocol to give uvicorn (``http=``) for ``app``: one that answers its
    hot path off the wire, and cuts off slow or huge headers and slow bodies as the
    platform's server does (the settings of the same names); None for an app without
    a hot path."""
    if not isinstance(app, ServingApp) or app.hot is None:
        return None
    attributes = {"hot": app.hot, "body_timeout_s": body_timeout_s, "body_min_rate": body_min_rate}
    protocol = type("ServingProtocol", (HotProtocol,), attributes)
    return partial(protocol, header_timeout_s=header_timeout_s, max_header_bytes=max_header_bytes)
