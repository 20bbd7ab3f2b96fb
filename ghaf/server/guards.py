"""Pure-ASGI guards that run before any request body is read.

``BodyLimit`` caps every body while it is read: a declared ``Content-Length`` over the
route's limit is refused before the first byte is read, and ``receive`` counts the bytes
of chunked bodies. Ordinary (JSON, Arrow) bodies get ``max_body_bytes``; a streaming
upload route raises its own limit to ``max_upload_bytes`` with
:func:`ghaf.platform.uploads.allow_upload` before it reads.

``BodyLimit`` also bounds how slowly a body may arrive, by the rule ``ghaf serve`` uses
too (:class:`~ghaf.platform.slow_clients.BodyDeadline`): the time spent waiting on the
client for body bytes may not exceed ``body_timeout_s`` plus one second per
``body_min_rate`` bytes received (mod_reqtimeout's rule), so a client that sends a byte a
second is answered 408 and its connection closed, while a large upload on a working link
is never cut off. Time the route spends between reads does not count.

``Authenticate`` resolves the bearer token of every ``/api/v1`` request except the few
anonymous ones (password login, the OpenAPI document) before the route parses anything,
so an anonymous 100 MB body is answered 401 without being read. The caller is kept in
the request's state, and :class:`~ghaf.platform.calls.ServiceCall` reuses it.

Below ASGI, :class:`~ghaf.platform.slow_clients.HeaderDeadline` (mixed into uvicorn's
HTTP protocol by ghaf/server/serve.py, and by ``ghaf serve``'s in ghaf/serving/wire.py)
adds the one bound uvicorn lacks: a request's line and headers must arrive within
``header_timeout_s`` of the connection opening or the previous response ending
(uvicorn's keep-alive timer stops at the first byte, so a client sending a header byte a
second held its connection for ever) and may not exceed ``max_header_bytes``.
"""

from __future__ import annotations

import logging
from collections.abc import Collection
from functools import partial

from starlette.concurrency import run_in_threadpool
from starlette.requests import Request
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from ghaf.core.errors import GhafError
from ghaf.platform.calls import AUTH_STATE
from ghaf.platform.slow_clients import BodyDeadline
from ghaf.platform.uploads import BODY_STATE, BodyBudget, BodyTooLarge
from ghaf.runtime import Runtime
from ghaf.server.problems import problem_response

log = logging.getLogger("ghaf.server")
READ_METHODS = frozenset({"GET", "HEAD", "OPTIONS"})
# The body of an anonymous route (a login) is a name and a password.
ANONYMOUS_BODY_BYTES = 64 << 10


# --- body size ---------------------------------------------------------------------


def _content_length(scope: Scope) -> int | None:
    for name, value in scope["headers"]:
        if name == b"content-length":
            try:
                return int(value)
            except ValueError:
                return None
    return None


class BodyLimit:
    """Counts every request body against its route's limit and bounds how slowly it may
    arrive (see the module docstring)."""

    def __init__(
        self,
        app: ASGIApp,
        *,
        default: int,
        most: int,
        timeout_s: float = 60.0,
        min_rate: int = 1024,
    ) -> None:
        self.app = app
        self.default = default
        self.most = max(most, default)
        self.timeout_s = timeout_s
        self.min_rate = min_rate

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        declared = _content_length(scope)
        if declared is not None and declared > self.most:
            # No route takes this much: refuse before anything else runs.
            await problem_response(BodyTooLarge(self.most), Request(scope))(scope, receive, send)
            return
        budget = BodyBudget(self.default, declared)
        scope.setdefault("state", {})[BODY_STATE] = budget
        deadline = BodyDeadline(self.timeout_s, self.min_rate)

        async def counted() -> Message:
            budget.check()
            message = await deadline.receive(receive)
            budget.received = deadline.received
            budget.check()
            return message

        await self.app(scope, counted, deadline.closing(send))


# --- authentication ------------------------------------------------------------------


def _header(scope: Scope, wanted: bytes) -> str | None:
    for name, value in scope["headers"]:
        if name == wanted:
            return str(value.decode("latin-1"))
    return None


class Authenticate:
    """Refuses unauthenticated ``/api/v1`` requests (and those under any of
    ``more_prefixes``) before their body is read."""

    def __init__(
        self,
        app: ASGIApp,
        *,
        runtime: Runtime,
        prefix: str,
        anonymous: Collection[str],
        login: str | None = None,
        more_prefixes: Collection[str] = (),
    ) -> None:
        self.app = app
        self.runtime = runtime
        self.prefixes = tuple(p.rstrip("/") + "/" for p in (prefix, *more_prefixes))
        self.anonymous = frozenset(anonymous)
        self.login = login

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http" or not scope["path"].startswith(self.prefixes):
            await self.app(scope, receive, send)
            return
        state = scope.setdefault("state", {})
        if scope["path"] in self.anonymous:
            budget = state.get(BODY_STATE)
            if isinstance(budget, BodyBudget):
                budget.limit = min(budget.limit, ANONYMOUS_BODY_BYTES)
            if scope["path"] == self.login and scope["method"] == "POST":
                # A flooding address is refused here, before routing or parsing; the
                # service counts the attempt (and checks the name) if it gets through.
                client = scope.get("client")
                check = partial(
                    self.runtime.login_guard.check_address, client[0] if client else None
                )
                try:
                    if self.runtime.login_guard.in_memory:
                        check()
                    else:
                        await run_in_threadpool(check)
                except GhafError as error:
                    await problem_response(error, Request(scope))(scope, receive, send)
                    return
            await self.app(scope, receive, send)
            return
        write = scope["method"] not in READ_METHODS
        client = scope.get("client")
        resolve = partial(
            self.runtime.resolve_caller,
            _header(scope, b"authorization"),
            write=write,
            request_id=state.get("request_id"),
            client=client[0] if client else None,
        )
        try:
            # On SQLite the token lookup stays on the event loop, for writes too: it is a
            # sub-millisecond read that never waits for writers (WAL), as SQLite reads'
            # service calls are (ghaf/platform/calls.py); a write's own work hops
            # once, in its service call, so a write costs one thread hop, not two.
            # PostgreSQL waits on the network, so it hops.
            if self.runtime.database.is_sqlite:
                resolved = resolve()
            else:
                resolved = await run_in_threadpool(resolve)
        except GhafError as error:
            await problem_response(error, Request(scope))(scope, receive, send)
            return
        except Exception:
            log.exception("authentication failed unexpectedly")
            internal = GhafError("internal server error; see the server log with this request_id")
            await problem_response(internal, Request(scope))(scope, receive, send)
            return
        state[AUTH_STATE] = resolved
        await self.app(scope, receive, send)
