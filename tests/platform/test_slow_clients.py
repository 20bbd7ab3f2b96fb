"""The platform's bound on request headers (ghaf/platform/slow_clients.py), on the
protocol ``ghaf server`` listens with, fed bytes as a socket would deliver them."""

from __future__ import annotations

import asyncio
from typing import Any

import uvicorn
from starlette.types import Receive, Scope, Send
from uvicorn.server import ServerState

from ghaf.server.serve import GuardedHttpToolsProtocol

LIMIT = 8192


class Transport(asyncio.Transport):
    """What the protocol writes, and whether it closed."""

    def __init__(self) -> None:
        super().__init__()
        self.written = b""
        self.closed = False

    def write(self, data: bytes | bytearray | memoryview) -> None:
        self.written += bytes(data)

    def close(self) -> None:
        self.closed = True

    def is_closing(self) -> bool:
        return self.closed

    def get_extra_info(self, name: str, default: Any = None) -> Any:
        return ("127.0.0.1", 1) if name in ("peername", "sockname") else default

    def pause_reading(self) -> None:
        pass

    def resume_reading(self) -> None:
        pass


async def _ok(scope: Scope, receive: Receive, send: Send) -> None:
    while (await receive()).get("more_body"):
        pass
    await send(
        {"type": "http.response.start", "status": 200, "headers": [(b"content-length", b"2")]}
    )
    await send({"type": "http.response.body", "body": b"ok"})


def _fed(*reads: bytes) -> tuple[bytes, bool]:
    """``reads`` delivered one after another on one connection: what the server wrote,
    and whether it closed the connection."""

    async def run() -> tuple[bytes, bool]:
        config = uvicorn.Config(_ok, log_config=None)
        config.load()
        protocol = GuardedHttpToolsProtocol(
            config=config,
            server_state=ServerState(),
            app_state={},
            header_timeout_s=10,
            max_header_bytes=LIMIT,
        )
        transport = Transport()
        protocol.connection_made(transport)
        for data in reads:
            if not transport.closed:
                protocol.data_received(data)
            for _ in range(5):  # let the app's task answer
                await asyncio.sleep(0)
        answered = transport.written, transport.closed
        protocol.connection_lost(None)
        return answered

    return asyncio.run(run())


def _request(header_bytes: int, body: bytes = b"") -> bytes:
    junk = b"".join(b"x-junk-%d: %s\r\n" % (i, b"x" * 990) for i in range(header_bytes // 1000))
    head = b"POST / HTTP/1.1\r\nhost: t\r\ncontent-length: %d\r\n" % len(body)
    return head + junk + b"\r\n" + body


def test_a_header_block_past_the_limit_in_one_read_is_431() -> None:
    # Counted only when a read left the headers incomplete, a whole block was let in.
    written, closed = _fed(_request(3 * LIMIT))
    assert written.startswith(b"HTTP/1.1 431") and closed


def test_headers_past_the_limit_over_two_reads_are_431() -> None:
    request = _request(LIMIT + LIMIT // 2)
    written, closed = _fed(request[: LIMIT - 100], request[LIMIT - 100 :])
    assert written.startswith(b"HTTP/1.1 431") and closed


def test_a_request_pipelined_behind_another_is_held_to_the_limit() -> None:
    written, closed = _fed(_request(1000) + _request(3 * LIMIT))
    assert b"HTTP/1.1 431" in written and closed


def test_bodies_and_earlier_requests_do_not_count_as_header_bytes() -> None:
    # A big body in the same read as its headers, then requests whose headers together
    # pass the limit, each within it: all answered.
    body = b"b" * (4 * LIMIT)
    written, closed = _fed(
        _request(LIMIT // 2, body) + _request(LIMIT - 1000), _request(LIMIT - 1000)
    )
    assert written.count(b"HTTP/1.1 200") == 3 and not closed


def test_trailer_fields_never_join_the_headers_an_app_reads() -> None:
    seen: list[list[tuple[bytes, bytes]]] = []

    async def app(scope: Scope, receive: Receive, send: Send) -> None:
        seen.append(list(scope["headers"]))
        await _ok(scope, receive, send)

    async def run() -> bytes:
        config = uvicorn.Config(app, log_config=None)
        config.load()
        protocol = GuardedHttpToolsProtocol(
            config=config,
            server_state=ServerState(),
            app_state={},
            header_timeout_s=10,
            max_header_bytes=LIMIT,
        )
        transport = Transport()
        protocol.connection_made(transport)
        # The whole request in one read: the app starts after its trailers were parsed.
        protocol.data_received(
            b"POST /x HTTP/1.1\r\nhost: a\r\ntransfer-encoding: chunked\r\n\r\n"
            b"2\r\nhi\r\n0\r\nauthorization: Bearer stolen\r\nx-forwarded-user: root\r\n\r\n"
        )
        for _ in range(5):
            await asyncio.sleep(0)
        protocol.connection_lost(None)
        return transport.written

    assert asyncio.run(run()).startswith(b"HTTP/1.1 200")
    (headers,) = seen
    assert [name for name, _ in headers] == [b"host", b"transfer-encoding"]
