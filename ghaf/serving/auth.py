"""Who may call a served model: a token holding ``deployment:invoke`` in its project.

:class:`InvokeGuard` (pure ASGI) checks every request but the health probes before its
body is read, through an *authorizer*:

- :class:`PlatformAuthorizer`, beside the platform (same database): the platform's own
  token resolution and ``ctx.require`` through :func:`ghaf.serving.service.check_invoke`,
  kept cheap by its epoch-checked security cache (ghaf/security/cache.py): a revoked
  token or a removed member is refused on the very next request;
- :class:`RemoteAuthorizer`, for ``ghaf serve`` on a machine without the database: asks
  the platform's ``deployments:check-invoke`` route with the caller's token and keeps
  the answer for ``ttl_s`` seconds (refusals for ``refusal_ttl_s``), one platform call
  per token at a time (docs/adr/0020-serving-authentication.md).

Refusals are 401 (no or bad token) and 403 (a token that may not invoke here); a token
the platform cannot be asked about is 503, never let through.

A server may also hold a per-server **invoke key** (:class:`InvokeKey`, ``ghaf serve
--invoke-key-file`` or ``GHAF_SERVE_INVOKE_KEY``): :class:`KeyAuthorizer` accepts
``Authorization: Bearer <key>`` without asking anyone (compared in constant time) and
hands every other token to the authorizer behind it, if any.
"""

from __future__ import annotations

import asyncio
import hashlib
import hmac
import json
import logging
import string
import time
from collections.abc import Collection
from pathlib import Path
from typing import TYPE_CHECKING, Any, Protocol
from urllib.parse import quote

import httpx
from starlette.concurrency import run_in_threadpool
from starlette.types import ASGIApp, Receive, Scope, Send

from ghaf.core.errors import (
    GhafError,
    InvalidInput,
    NotFound,
    PermissionDenied,
    Unauthenticated,
    Unavailable,
    error_from_problem,
)
from ghaf.serving import service
from ghaf.serving.schemas import InvokeGrant

if TYPE_CHECKING:
    from ghaf.runtime import Runtime

log = logging.getLogger("ghaf.serving")
GRANT_STATE = "ghaf_invoke"
"""Where the guard leaves the request's :class:`InvokeGrant` (``scope["state"]``)."""
MAX_CACHED = 10_000


class Authorizer(Protocol):
    async def authorize(self, authorization: str | None, *, client: str | None) -> InvokeGrant:
        """The caller's grant, or a ``GhafError`` (401, 403 or 503)."""
        ...

    async def aclose(self) -> None: ...


def _no_token() -> Unauthenticated:
    return Unauthenticated(
        "authentication required: send 'Authorization: Bearer ghaf_...' with a token that "
        "holds deployment:invoke",
        field="Authorization",
    )


def _not_allowed(project: str) -> PermissionDenied:
    # The same refusal whether the project is invisible to the token or only lacks the
    # permission, as the platform answers outsiders.
    return PermissionDenied(
        f"this token may not invoke models here: deployment:invoke in project {project!r} "
        "is required",
        permission=service.INVOKE,
    )


class PlatformAuthorizer:
    """Checks tokens against the platform database (a serving app in the platform's
    process, or a deployment worker that shares its database)."""

    def __init__(self, runtime: Runtime, project: str, model: str | None = None) -> None:
        self.runtime = runtime
        self.project = project
        self.model = model

    def _check(self, authorization: str | None, client: str | None) -> InvokeGrant:
        resolved = self.runtime.resolve_caller(
            authorization, write=False, request_id=None, client=client
        )
        ctx = self.runtime.context(write=False, caller=resolved.caller, client=client)
        if ctx.cache is not None:
            ctx.epoch = (
                resolved.epoch if resolved.epoch is not None else ctx.cache.read_epoch(ctx.database)
            )
        try:
            return service.check_invoke(ctx, self.project, self.model)
        except NotFound:
            raise _not_allowed(self.project) from None
        finally:
            ctx.close()

    async def authorize(self, authorization: str | None, *, client: str | None) -> InvokeGrant:
        if not authorization:
            raise _no_token()
        if self.runtime.database.is_sqlite:
            # A cached check is a primary-key read of a local file: cheaper than a hop.
            return self._check(authorization, client)
        return await run_in_threadpool(self._check, authorization, client)

    async def aclose(self) -> None:
        return None


class RemoteAuthorizer:
    """Checks tokens with a platform over HTTP and remembers its answers briefly."""

    def __init__(
        self,
        platform_url: str,
        project: str,
        model: str | None = None,
        *,
        ttl_s: float = 10.0,
        refusal_ttl_s: float = 2.0,
        timeout_s: float = 5.0,
        transport: httpx.AsyncBaseTransport | None = None,
    ) -> None:
        self.project = project
        self.model = model
        self.ttl_s = ttl_s
        self.refusal_ttl_s = refusal_ttl_s
        self.platform_url = platform_url.rstrip("/")
        self._path = f"/api/v1/projects/{quote(project, safe='')}/deployments:check-invoke"
        self._params = {"model": model} if model else {}
        self._http = httpx.AsyncClient(
            base_url=self.platform_url, timeout=timeout_s, transport=transport
        )
        self._answers: dict[str, tuple[float, InvokeGrant | GhafError]] = {}
        self._asking: dict[str, asyncio.Future[InvokeGrant | GhafError]] = {}
        self.platform_calls = 0

    async def authorize(self, authorization: str | None, *, client: str | None) -> InvokeGrant:
        if not authorization:
            raise _no_token()
        if not (authorization.isascii() and authorization.isprintable()):
            # No token of ours is anything else, and HTTP could not carry it onwards.
            raise Unauthenticated(
                "the Authorization header is not a bearer token (printable ASCII)",
                field="Authorization",
            )
        key = hashlib.sha256(authorization.encode("latin-1", "replace")).hexdigest()
        now = time.monotonic()
        cached = self._answers.get(key)
        if cached is not None and cached[0] > now:
            answer = cached[1]
        elif key in self._asking:  # another request is asking for this token already
            answer = await asyncio.shield(self._asking[key])
        else:
            future: asyncio.Future[InvokeGrant | GhafError] = (
                asyncio.get_running_loop().create_future()
            )
            self._asking[key] = future
            try:
                answer = await self._ask(authorization)
                future.set_result(answer)
            except BaseException as error:
                future.set_exception(error)
                future.exception()  # retrieved: waiters re-raise it themselves
                raise
            finally:
                del self._asking[key]
            self._remember(key, answer)
        if isinstance(answer, GhafError):
            raise answer
        return answer

    def _remember(self, key: str, answer: InvokeGrant | GhafError) -> None:
        if isinstance(answer, Unavailable):
            return  # the platform could not say: ask again next time
        ttl = self.ttl_s if isinstance(answer, InvokeGrant) else self.refusal_ttl_s
        now = time.monotonic()
        if len(self._answers) >= MAX_CACHED:
            self._evict(now)
        # Re-inserted, not reassigned: a dict keeps a key where it was first put, and
        # eviction takes the older half by position, so a refreshed grant moves last.
        self._answers.pop(key, None)
        self._answers[key] = (now + ttl, answer)

    def _evict(self, now: float) -> None:
        """Make room: expired answers go, then refusals, then the older half of the
        grants. Made-up tokens only ever earn refusals, so a flood of them cannot send
        the good tokens back to the platform (clearing everything would)."""
        live = {k: v for k, v in self._answers.items() if v[0] > now}
        if len(live) >= MAX_CACHED:
            live = {k: v for k, v in live.items() if isinstance(v[1], InvokeGrant)}
            if len(live) >= MAX_CACHED // 2:
                live = dict(list(live.items())[len(live) // 2 :])
        self._answers = live

    async def _ask(self, authorization: str) -> InvokeGrant | GhafError:
        self.platform_calls += 1
        try:
            response = await self._http.get(
                self._path, params=self._params, headers={"authorization": authorization}
            )
        except httpx.HTTPError as exc:
            return Unavailable(
                f"cannot check the token with the platform at {self.platform_url}: "
                f"{type(exc).__name__}"
            )
        if response.status_code == 200:
            return InvokeGrant.model_validate_json(response.content)
        problem = _problem(response)
        error = error_from_problem(problem, status=response.status_code)
        if response.status_code == 401:
            return Unauthenticated(error.detail, field="Authorization")
        if response.status_code in (403, 404):
            return _not_allowed(self.project)
        return Unavailable(
            f"the platform at {self.platform_url} could not check the token "
            f"(HTTP {response.status_code}: {error.detail})"
        )

    async def aclose(self) -> None:
        await self._http.aclose()


# --- the per-server invoke key ----------------------------------------------------------

KEY_MIN_LENGTH = 32
_KEY_CHARACTERS = frozenset(string.ascii_letters + string.digits + "-._~+/=")
KEY_PRINCIPAL = "invoke-key"
"""The caller name of requests that came with the server's invoke key (its log and
metrics name this, never the key)."""


class InvokeKey:
    """A per-server secret that callers send as ``Authorization: Bearer <key>``.

    At least 32 characters of letters, digits and ``-._~+/=`` (what
    ``secrets.token_urlsafe(32)`` writes). It is held as the expected header and never
    shown: its ``repr`` and every error say only where it came from."""

    __slots__ = ("_expected", "source")

    def __init__(self, key: str, *, source: str = "the invoke key") -> None:
        key = key.strip()
        if len(key) < KEY_MIN_LENGTH or not set(key) <= _KEY_CHARACTERS:
            raise InvalidInput(
                f"{source} must be at least {KEY_MIN_LENGTH} characters of letters, digits "
                "and -._~+/= (e.g. python -c 'import secrets; print(secrets.token_urlsafe(32))')",
                field="invoke_key",
            )
        self._expected = f"Bearer {key}".encode()
        self.source = source

    @classmethod
    def from_file(cls, path: Path) -> InvokeKey:
        """The key in ``path``, a file only its owner may read (as the master key's)."""
        try:
            if path.stat().st_mode & 0o077:
                raise InvalidInput(
                    f"{path} must not be readable by group or others (chmod 600)",
                    field="invoke_key_file",
                )
            text = path.read_text(encoding="utf-8")
        except (OSError, UnicodeDecodeError) as exc:
            why = exc.strerror if isinstance(exc, OSError) and exc.strerror else "unreadable"
            raise InvalidInput(
                f"cannot read the invoke key file {path}: {why}", field="invoke_key_file"
            ) from None
        return cls(text, source=f"the invoke key in {path}")

    def matches(self, authorization: str) -> bool:
        """Is this the key's header? (Constant time in the key; a header of another
        length is told apart at once, which reveals only the key's length.)"""
        return hmac.compare_digest(authorization.encode("latin-1", "replace"), self._expected)

    def __repr__(self) -> str:
        return f"InvokeKey(<{self.source}>)"


class KeyAuthorizer:
    """Accepts the server's invoke key; every other token goes to ``fallback`` (the
    platform's check), or is refused when the server has none (a bundle served with
    no platform)."""

    def __init__(self, key: InvokeKey, project: str, fallback: Authorizer | None = None):
        self.key = key
        self.fallback = fallback
        self._grant = InvokeGrant(project=project, principal=KEY_PRINCIPAL, kind=KEY_PRINCIPAL)

    async def authorize(self, authorization: str | None, *, client: str | None) -> InvokeGrant:
        if authorization and self.key.matches(authorization):
            return self._grant
        if self.fallback is not None:
            return await self.fallback.authorize(authorization, client=client)
        if not authorization:
            raise Unauthenticated(
                "authentication required: send 'Authorization: Bearer <this server's invoke key>'",
                field="Authorization",
            )
        raise Unauthenticated(
            "this server accepts only its invoke key, and this is not it", field="Authorization"
        )

    async def aclose(self) -> None:
        if self.fallback is not None:
            await self.fallback.aclose()


def _problem(response: httpx.Response) -> dict[str, Any]:
    try:
        found = response.json()
    except ValueError:
        return {}
    return found if isinstance(found, dict) else {}


# --- the guard -------------------------------------------------------------------------


def _authorization(scope: Scope) -> str | None:
    for name, value in scope["headers"]:
        if name == b"authorization":
            return str(value.decode("latin-1"))
    return None


async def send_error(send: Send, status: int, message: str, headers: Any = ()) -> None:
    """An OIP error answer, ``{"error": "..."}``, from pure ASGI code."""
    body = json.dumps({"error": message}).encode()
    await send(
        {
            "type": "http.response.start",
            "status": status,
            "headers": [
                (b"content-type", b"application/json"),
                (b"content-length", str(len(body)).encode()),
                *headers,
            ],
        }
    )
    await send({"type": "http.response.body", "body": body})


def error_headers(error: GhafError) -> list[tuple[bytes, bytes]]:
    if error.status == 401:
        return [(b"www-authenticate", b"Bearer")]
    if error.status == 429:
        return [(b"retry-after", str(error.extra.get("retry_after", 1)).encode())]
    return []


class Refused(Exception):
    """A request the guard turns away: its status, message and headers."""

    def __init__(self, status: int, message: str, headers: list[tuple[bytes, bytes]]) -> None:
        super().__init__(message)
        self.status = status
        self.message = message
        self.headers = headers


async def admit(
    authorizer: Authorizer, authorization: str | None, client: str | None
) -> InvokeGrant:
    """The caller's grant, or :class:`Refused` (401, 403 or 503: an authorizer's other
    errors are 401, and one that fails unexpectedly is 503, never a way in)."""
    try:
        return await authorizer.authorize(authorization, client=client)
    except GhafError as error:
        status = error.status if error.status in (401, 403, 503) else 401
        raise Refused(status, error.detail, error_headers(error)) from None
    except Exception:
        log.exception("checking an invoke token failed unexpectedly")
        raise Refused(503, "the token could not be checked; see the server log", []) from None


class InvokeGuard:
    """Refuses requests without a token that may invoke, before their body is read."""

    def __init__(self, app: ASGIApp, *, authorizer: Authorizer, open_paths: Collection[str]):
        self.app = app
        self.authorizer = authorizer
        self.open_paths = frozenset(open_paths)

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http" or scope["path"] in self.open_paths:
            await self.app(scope, receive, send)
            return
        client = scope.get("client")
        try:
            grant = await admit(
                self.authorizer, _authorization(scope), client[0] if client else None
            )
        except Refused as refused:
            await send_error(send, refused.status, refused.message, refused.headers)
            return
        scope.setdefault("state", {})[GRANT_STATE] = grant
        await self.app(scope, receive, send)
