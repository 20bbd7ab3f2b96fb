"""Request body budgets: how many bytes a request may send, and how an upload route
raises its own limit.

The server's ``BodyLimit`` guard (ghaf/server/guards.py) keeps a :class:`BodyBudget` in
the request's state and counts every body against it. Ordinary (JSON, Arrow) bodies get
``max_body_bytes``; a streaming upload route raises its limit to ``max_upload_bytes``
with :func:`allow_upload` before it reads.
"""

from __future__ import annotations

from starlette.exceptions import HTTPException
from starlette.requests import Request

from ghaf.core.errors import PayloadTooLarge
from ghaf.core.settings import Settings

BODY_STATE = "ghaf_body"


class BodyTooLarge(PayloadTooLarge, HTTPException):
    """Raised from ``receive``; an ``HTTPException`` too, so FastAPI's body parsing lets it
    through unchanged (it turns other errors into 400) to the problem handler."""

    def __init__(self, limit: int, *, setting: str | None = None) -> None:
        where = f"; {setting}" if setting else ""
        PayloadTooLarge.__init__(
            self,
            f"the request body is larger than this route accepts ({limit:,} bytes{where})",
            limit=limit,
        )
        self.status_code = 413
        self.headers = None


class BodyBudget:
    """How many body bytes this request may still send; routes may raise the limit."""

    __slots__ = ("declared", "limit", "received", "setting")

    def __init__(self, limit: int, declared: int | None) -> None:
        self.limit = limit
        self.declared = declared
        self.received = 0
        self.setting: str | None = None  # the setting a lowered limit comes from

    def check(self) -> None:
        if (self.declared is not None and self.declared > self.limit) or (
            self.received > self.limit
        ):
            raise BodyTooLarge(self.limit, setting=self.setting)


def allow_upload(request: Request) -> None:
    """Let a streaming upload route read up to ``max_upload_bytes``; call before reading."""
    budget = request.scope.get("state", {}).get(BODY_STATE)
    if isinstance(budget, BodyBudget):
        settings: Settings = request.app.state.runtime.settings
        budget.limit = max(budget.limit, settings.max_upload_bytes)


def limit_body(request: Request, limit: int, *, setting: str) -> None:
    """Lower this request's limit to ``limit`` bytes (from ``setting``, named in the
    413); call before reading. A route whose body goes on to a smaller peer (a deployment
    replica) refuses what the peer would."""
    budget = request.scope.get("state", {}).get(BODY_STATE)
    if isinstance(budget, BodyBudget) and limit < budget.limit:
        budget.limit = limit
        budget.setting = setting
        budget.check()  # a declared length past it is refused before any byte is read
