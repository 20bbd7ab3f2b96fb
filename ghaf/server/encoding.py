"""Refuse requests whose path or query is not valid UTF-8 once percent-decoded.

The ASGI server decodes ``%ff`` in a path to U+FFFD (``scope['path']``), and Starlette
decodes the query string the same way, so ``name%ff.txt`` and ``name%fe.txt`` would
both arrive as ``name\ufffd.txt``: two names for one object. This pure-ASGI layer
checks the raw bytes (``scope['raw_path']``, ``scope['query_string']``) before anything
is routed, hot routes included, and answers 400 ``invalid-encoding``.
"""

from __future__ import annotations

import json
from urllib.parse import unquote_to_bytes

from starlette.types import ASGIApp, Receive, Scope, Send

from ghaf.core.errors import InvalidEncoding

PROBLEM_JSON = b"application/problem+json"


def _decodes(raw: bytes) -> bool:
    if raw.isascii() and b"%" not in raw:
        return True  # the common case: nothing to decode
    try:
        unquote_to_bytes(raw).decode("utf-8")
    except UnicodeDecodeError:
        return False
    return True


def encoding_problem(scope: Scope) -> InvalidEncoding | None:
    """Why this request's path or query cannot be decoded, if it cannot."""
    raw_path = scope.get("raw_path")
    if raw_path is None:  # a server that gives no raw path: check what it decoded
        path: str = scope.get("path", "")
        valid = path.isascii() or _is_utf8(path)
    else:
        valid = _decodes(bytes(raw_path).split(b"?", 1)[0])
    if not valid:
        return InvalidEncoding(
            "the request path is not valid UTF-8 once percent-decoded (e.g. '%ff'); "
            "names are UTF-8, and invalid bytes are refused rather than replaced",
            field="path",
        )
    if not _decodes(bytes(scope.get("query_string", b"")).replace(b"+", b" ")):
        return InvalidEncoding(
            "the query string is not valid UTF-8 once percent-decoded (e.g. '%ff'); "
            "invalid bytes are refused rather than replaced",
            field="query",
        )
    return None


def _is_utf8(text: str) -> bool:
    if "\ufffd" in text:
        return False
    try:
        text.encode("utf-8")
    except UnicodeEncodeError:
        return False
    return True


class RefuseInvalidEncoding:
    """Answers 400 problem+json to a request whose path or query is not UTF-8."""

    def __init__(self, app: ASGIApp) -> None:
        self.app = app

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] not in ("http", "websocket"):
            await self.app(scope, receive, send)
            return
        problem = encoding_problem(scope)
        if problem is None:
            await self.app(scope, receive, send)
            return
        if scope["type"] == "websocket":
            await send({"type": "websocket.close", "code": 1007})
            return
        request_id = scope.get("state", {}).get("request_id")
        body = json.dumps(problem.to_problem(request_id=request_id)).encode()
        await send(
            {
                "type": "http.response.start",
                "status": problem.status,
                "headers": [
                    (b"content-type", PROBLEM_JSON),
                    (b"content-length", str(len(body)).encode()),
                ],
            }
        )
        await send({"type": "http.response.body", "body": body})
