"""A prediction request and its answer, as the serving hot path sees them.

The prediction routes (OIP ``infer`` and ``/predict``) are reached three ways: through
FastAPI's routing, through the app's ASGI fast path, and straight from the HTTP
connection (ghaf/serving/wire.py, no ASGI at all). Each way builds a :class:`Call`
(the path, the headers, the query, the caller's address, and a way to read the body
within a limit) and writes out the :class:`Answer` the route's function returns, so one
function answers a request whichever way it came (docs/adr/0022-serving-wire.md).
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from typing import Any

from starlette.datastructures import QueryParams
from starlette.requests import ClientDisconnect, Request
from starlette.responses import Response
from starlette.types import Receive, Scope, Send

from ghaf.core.errors import PayloadTooLarge

__all__ = ["JSON", "Answer", "Call", "Headers", "too_large"]
JSON = "application/json"
BodyReader = Callable[[int], Awaitable[bytes]]
"""Reads the whole body, raising :class:`PayloadTooLarge` past the given byte count."""


def too_large(limit: int) -> PayloadTooLarge:
    return PayloadTooLarge(
        f"the request body is larger than this server accepts ({limit:,} bytes)", limit=limit
    )


class Headers(dict[str, str]):
    """Request headers by lower-case name (the first of repeated ones, as Starlette's);
    ``get`` takes a name in any case."""

    @classmethod
    def of(cls, raw: list[tuple[bytes, bytes]]) -> Headers:
        headers = cls()
        for name, value in raw:
            key = name.decode("latin-1").lower()
            if key not in headers:
                headers[key] = value.decode("latin-1")
        return headers

    def get(self, name: str, default: Any = None) -> Any:
        return dict.get(self, name.lower(), default)


class Call:
    """One prediction request: what the routes read of it (module docstring)."""

    __slots__ = ("_query", "_read", "client", "headers", "path", "query_string", "raw_headers")

    def __init__(
        self,
        *,
        path: str,
        raw_headers: list[tuple[bytes, bytes]],
        query_string: bytes,
        client: str | None,
        read: BodyReader,
    ) -> None:
        self.path = path
        self.raw_headers = raw_headers
        self.headers = Headers.of(raw_headers)
        self.query_string = query_string
        self.client = client
        self._read = read
        self._query: QueryParams | None = None

    @property
    def query_params(self) -> QueryParams:
        if self._query is None:
            self._query = QueryParams(self.query_string.decode("latin-1"))
        return self._query

    async def body(self, limit: int) -> bytes:
        """The body as sent (still in its ``Content-Encoding``), refused past ``limit``
        bytes, declared or sent."""
        declared = self.headers.get("content-length")
        if declared is not None and declared.isdigit() and int(declared) > limit:
            raise too_large(limit)
        return await self._read(limit)

    @classmethod
    def of_asgi(cls, scope: Scope, receive: Receive) -> Call:
        client = scope.get("client")

        async def read(limit: int) -> bytes:
            chunks: list[bytes] = []
            received = 0
            while True:
                message = await receive()
                if message["type"] == "http.disconnect":
                    raise ClientDisconnect()
                chunk = message.get("body", b"")
                received += len(chunk)
                if received > limit:
                    raise too_large(limit)
                chunks.append(chunk)
                if not message.get("more_body", False):
                    return chunks[0] if len(chunks) == 1 else b"".join(chunks)

        return cls(
            path=scope["path"],
            raw_headers=scope["headers"],
            query_string=scope.get("query_string", b""),
            client=client[0] if client else None,
            read=read,
        )

    @classmethod
    def of_request(cls, request: Request) -> Call:
        """The call of a request FastAPI routed (its body not read yet)."""
        return cls.of_asgi(request.scope, request.receive)


@dataclass(slots=True)
class Answer:
    """A status, a body of ``media_type`` and any further headers."""

    status: int
    body: bytes
    media_type: str = JSON
    headers: list[tuple[bytes, bytes]] = field(default_factory=list)

    def response(self) -> Response:
        response = Response(self.body, status_code=self.status, media_type=self.media_type)
        for name, value in self.headers:
            response.headers.append(name.decode("latin-1"), value.decode("latin-1"))
        return response

    async def send(self, send: Send) -> None:
        """Answer over ASGI."""
        await send(
            {
                "type": "http.response.start",
                "status": self.status,
                "headers": [
                    (b"content-type", self.media_type.encode("latin-1")),
                    (b"content-length", str(len(self.body)).encode()),
                    *self.headers,
                ],
            }
        )
        await send({"type": "http.response.body", "body": self.body})
