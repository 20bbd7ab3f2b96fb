"""The gateway's HTTP/1.1 client for its replicas: kept-alive connections to 127.0.0.1,
one request at a time on each, answers parsed by httptools (uvicorn's parser).

Written by hand because it is the gateway's hot path: httpx spent 60% of the gateway's
event loop on a 1-row request (its pool machinery and an import lookup per request that
stats the file system), for a peer that only ever speaks plain HTTP/1.1 on loopback with
fixed-length bodies. ADR 0023 records the measurement.
"""

from __future__ import annotations

import asyncio
from dataclasses import dataclass, field

import httptools


class UpstreamError(ConnectionError):
    """The connection failed, closed, or carried something that is not HTTP/1.1."""


@dataclass
class _Answer:
    status: int = 0
    headers: dict[str, str] = field(default_factory=dict)
    body: list[bytes] = field(default_factory=list)
    complete: bool = False
    keep_alive: bool = True

    # httptools' callbacks
    def on_header(self, name: bytes, value: bytes) -> None:
        self.headers[name.decode("latin-1").lower()] = value.decode("latin-1")

    def on_body(self, body: bytes) -> None:
        self.body.append(body)

    def on_message_complete(self) -> None:
        self.complete = True


class _Connection:
    def __init__(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        self.reader = reader
        self.writer = writer

    def close(self) -> None:
        self.writer.close()


class Upstream:
    """Connections to one replica (``host``, ``port``), reused while it keeps them."""

    def __init__(self, host: str, port: int, *, idle: int = 64) -> None:
        self.host = host
        self.port = port
        self._idle: list[_Connection] = []
        self._most_idle = idle

    async def send(self, method: str, path: str, body: bytes, headers: dict[str, str]) -> _Answer:
        """Send ``body`` with ``method``; the caller bounds the time (a connection left
        mid-exchange by a timeout or cancellation is closed, never reused)."""
        for name, value in headers.items():
            if "\r" in value or "\n" in value or "\r" in name or "\n" in name:
                raise ValueError(f"header {name!r} holds a line break")
        head = [f"{method} {path} HTTP/1.1", f"host: {self.host}:{self.port}"]
        head += [f"{name}: {value}" for name, value in headers.items()]
        head.append(f"content-length: {len(body)}")
        message = ("\r\n".join(head) + "\r\n\r\n").encode("latin-1") + body
        reused = bool(self._idle)
        connection = self._idle.pop() if reused else await self._open()
        try:
            answer = await self._exchange(connection, message)
        except UpstreamError:
            connection.close()
            if not reused:
                raise
            # A kept-alive connection the replica closed meanwhile: once more, afresh.
            connection = await self._open()
            try:
                answer = await self._exchange(connection, message)
            except BaseException:
                connection.close()
                raise
        except BaseException:
            connection.close()
            raise
        if answer.keep_alive and len(self._idle) < self._most_idle:
            self._idle.append(connection)
        else:
            connection.close()
        return answer

    async def _open(self) -> _Connection:
        try:
            reader, writer = await asyncio.open_connection(self.host, self.port)
        except OSError as error:
            raise UpstreamError(f"cannot connect: {error}") from None
        return _Connection(reader, writer)

    async def _exchange(self, connection: _Connection, message: bytes) -> _Answer:
        answer = _Answer()
        parser = httptools.HttpResponseParser(answer)
        try:
            connection.writer.write(message)
            await connection.writer.drain()
            while not answer.complete:
                data = await connection.reader.read(1 << 16)
                if not data:
                    raise UpstreamError("the replica closed the connection")
                parser.feed_data(data)
        except (OSError, httptools.HttpParserError) as error:
            raise UpstreamError(str(error)) from None
        answer.status = parser.get_status_code()
        answer.keep_alive = parser.should_keep_alive()
        return answer

    def close(self) -> None:
        for connection in self._idle:
            connection.close()
        self._idle.clear()
