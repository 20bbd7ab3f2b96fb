"""Pure-ASGI guards that run before any request body is read.

``BodyLimit`` caps every body while it is read: a declared ``Content-Length`` over the
route's limit is refused before the first byte is read, and ``receive`` counts the bytes
of chunked bodies. Ordinary (JSON, Arrow) bodies get ``max_body_bytes``; a streaming
upload route raises its own limit to ``max_upload_bytes`` with :func:`allow_upload`
before it reads.

``Authenticate`` resolves the bearer token of every ``/api/v1`` request except the few
anonymous ones (password login, the OpenAPI document) before the route parses anything,
so an anonymous 100 MB body is answered 401 without being read. The caller is kept in
the request's state, and :class:`~ghaf.server.dependencies.ServiceCall` reuses it.
"""

from __future__ import annotations

import logging
from collections.abc import Collection
from dataclasses import dataclass
from functools import partial

from starlette.concurrency import run_in_threadpool
from starlette.exceptions import HTTPException
from starlette.requests import Request
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from ghaf.core.errors import GhafError, PayloadTooLarge
from ghaf.security.context import Caller
from ghaf.security.service import authenticate
from ghaf.server.problems import problem_response
from ghaf.server.runtime import Runtime

log = logging.getLogger("ghaf.server")
READ_METHODS = frozenset({"GET", "HEAD", "OPTIONS"})
AUTH_STATE = "ghaf_auth"
BODY_STATE = "ghaf_body"
# The body of an anonymous route (a login) is a name and a password.
ANONYMOUS_BODY_BYTES = 64 << 10


# --- body size ---------------------------------------------------------------------


class BodyTooLarge(PayloadTooLarge, HTTPException):
    """Raised from ``receive``; an ``HTTPException`` too, so FastAPI's body parsing lets it
    through unchanged (it turns other errors into 400) to the problem handler."""

    def __init__(self, limit: int) -> None:
        PayloadTooLarge.__init__(
            self,
            f"the request body is larger than this route accepts ({limit:,} bytes)",
            limit=limit,
        )
        self.status_code = 413
        self.headers = None


class BodyBudget:
    """How many body bytes this request may still send; routes may raise the limit."""

    __slots__ = ("declared", "limit", "received")

    def __init__(self, limit: int, declared: int | None) -> None:
        self.limit = limit
        self.declared = declared
        self.received = 0

    def check(self) -> None:
        if (self.declared is not None and self.declared > self.limit) or (
            self.received > self.limit
        ):
            raise BodyTooLarge(self.limit)


def allow_upload(request: Request) -> None:
    """Let a streaming upload route read up to ``max_upload_bytes``; call before reading."""
    budget = request.scope.get("state", {}).get(BODY_STATE)
    if isinstance(budget, BodyBudget):
        runtime: Runtime = request.app.state.runtime
        budget.limit = max(budget.limit, runtime.settings.max_upload_bytes)


def _content_length(scope: Scope) -> int | None:
    for name, value in scope["headers"]:
        if name == b"content-length":
            try:
                return int(value)
            except ValueError:
                return None
    return None


class BodyLimit:
    """Counts every request body against its route's limit (see the module docstring)."""

    def __init__(self, app: ASGIApp, *, default: int, most: int) -> None:
        self.app = app
        self.default = default
        self.most = max(most, default)

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

        async def counted() -> Message:
            budget.check()
            message = await receive()
            if message["type"] == "http.request":
                budget.received += len(message.get("body", b""))
                budget.check()
            return message

        await self.app(scope, counted, send)


# --- authentication ------------------------------------------------------------------


@dataclass(frozen=True)
class Resolved:
    """The request's caller; ``epoch`` is set when it came through the read cache."""

    caller: Caller
    epoch: int | None


def resolve_caller(
    runtime: Runtime,
    authorization: str | None,
    *,
    write: bool,
    request_id: str | None,
    client: str | None,
) -> Resolved:
    """Authenticate in a read session of its own (refusals are audited by ``authenticate``).

    Reads use the epoch-checked security cache; writes never do (ghaf/security/cache.py)
    and look the token up afresh. No transaction stays open: a write request's own
    transaction starts later, inside its service call.
    """
    ctx = runtime.context(write=False, request_id=request_id, client=client)
    if write:
        ctx.cache = None
    try:
        caller = authenticate(ctx, authorization)
        return Resolved(caller, ctx.epoch)
    finally:
        ctx.close()


def _header(scope: Scope, wanted: bytes) -> str | None:
    for name, value in scope["headers"]:
        if name == wanted:
            return str(value.decode("latin-1"))
    return None


class Authenticate:
    """Refuses unauthenticated ``/api/v1`` requests before their body is read."""

    def __init__(
        self,
        app: ASGIApp,
        *,
        runtime: Runtime,
        prefix: str,
        anonymous: Collection[str],
        login: str | None = None,
    ) -> None:
        self.app = app
        self.runtime = runtime
        self.prefix = prefix.rstrip("/") + "/"
        self.anonymous = frozenset(anonymous)
        self.login = login

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http" or not scope["path"].startswith(self.prefix):
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
            resolve_caller,
            self.runtime,
            _header(scope, b"authorization"),
            write=write,
            request_id=state.get("request_id"),
            client=client[0] if client else None,
        )
        try:
            # SQLite reads stay on the event loop, as their service calls do (see
            # ghaf/server/dependencies.py); everything else may wait, so it hops.
            if self.runtime.database.is_sqlite and not write:
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
