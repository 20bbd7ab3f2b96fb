"""FastAPI dependencies: the runtime, and an authenticated :class:`Context` per request."""

from __future__ import annotations

from collections.abc import Iterator
from typing import Annotated

from fastapi import Depends, Query, Request

from ghaf.core.paging import DEFAULT_LIMIT, MAX_LIMIT
from ghaf.core.settings import Settings
from ghaf.security.context import Context
from ghaf.security.service import authenticate
from ghaf.server.runtime import Runtime

_READ_METHODS = frozenset({"GET", "HEAD", "OPTIONS"})


def get_runtime(request: Request) -> Runtime:
    runtime: Runtime = request.app.state.runtime
    return runtime


def get_settings(request: Request) -> Settings:
    return get_runtime(request).settings


def _new_context(request: Request) -> Context:
    return get_runtime(request).context(
        write=request.method not in _READ_METHODS,
        request_id=getattr(request.state, "request_id", None),
        client=request.client.host if request.client else None,
    )


def authenticated_context(request: Request) -> Iterator[Context]:
    """The caller's context. Services commit; anything left open is rolled back."""
    ctx = _new_context(request)
    try:
        ctx.caller = authenticate(ctx, request.headers.get("authorization"))
        yield ctx
    finally:
        ctx.session.rollback()
        ctx.session.close()


def anonymous_context(request: Request) -> Iterator[Context]:
    """For the few routes that establish identity themselves (password login)."""
    ctx = _new_context(request)
    try:
        yield ctx
    finally:
        ctx.session.rollback()
        ctx.session.close()


Ctx = Annotated[Context, Depends(authenticated_context)]
AnonymousCtx = Annotated[Context, Depends(anonymous_context)]
SettingsDep = Annotated[Settings, Depends(get_settings)]
Limit = Annotated[int, Query(ge=1, le=MAX_LIMIT, description="Page size.")]
Cursor = Annotated[str | None, Query(description="next_cursor of the previous page.")]
DEFAULT_PAGE = DEFAULT_LIMIT
