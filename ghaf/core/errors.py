"""Typed errors. Each maps once to an HTTP problem (RFC 9457) and to a CLI exit code."""

from __future__ import annotations

from typing import Any, ClassVar


class GhafError(Exception):
    """Base of every error ghaf raises on purpose."""

    status: ClassVar[int] = 500
    code: ClassVar[str] = "internal-error"
    title: ClassVar[str] = "Internal error"

    def __init__(self, detail: str, *, field: str | None = None, **extra: Any) -> None:
        super().__init__(detail)
        self.detail = detail
        self.field = field
        self.extra = extra

    def __str__(self) -> str:
        return self.detail

    def to_problem(self, *, request_id: str | None = None) -> dict[str, Any]:
        """The RFC 9457 problem document for this error."""
        problem: dict[str, Any] = {
            "type": f"urn:ghaf:problem:{self.code}",
            "title": self.title,
            "status": self.status,
            "detail": self.detail,
        }
        if self.field is not None:
            problem["field"] = self.field
        if request_id is not None:
            problem["request_id"] = request_id
        problem.update(self.extra)
        return problem


class InvalidInput(GhafError):
    status = 422
    code = "invalid-input"
    title = "Invalid input"


class InvalidEncoding(InvalidInput):
    """Bytes that do not decode (invalid UTF-8 in a path or query): refused, never
    replaced, since a replacement character would make two names one."""

    status = 400
    code = "invalid-encoding"
    title = "Invalid encoding"


class MalformedBody(InvalidInput):
    """A request body that cannot be parsed at all (not UTF-8, not JSON, not an Arrow
    stream): one answer, 400, whichever parser found it, before any field is looked at."""

    status = 400
    code = "malformed-body"
    title = "Malformed request body"

    @classmethod
    def not_json(cls, reason: str) -> MalformedBody:
        """The problem for a JSON body that does not parse (``{bad``, bytes not UTF-8)."""
        return cls(f"the request body is not valid JSON in UTF-8 ({reason})", field="body")


class Unauthenticated(GhafError):
    status = 401
    code = "unauthenticated"
    title = "Authentication required"


class PermissionDenied(GhafError):
    status = 403
    code = "permission-denied"
    title = "Permission denied"


class NotFound(GhafError):
    status = 404
    code = "not-found"
    title = "Not found"


class Conflict(GhafError):
    status = 409
    code = "conflict"
    title = "Conflict"


class PayloadTooLarge(GhafError):
    status = 413
    code = "payload-too-large"
    title = "Request body too large"


class TooManyRequests(GhafError):
    """Slow down: try again after ``retry_after`` seconds (sent as ``Retry-After``)."""

    status = 429
    code = "too-many-requests"
    title = "Too many requests"

    def __init__(
        self, detail: str, *, retry_after: int = 1, field: str | None = None, **extra: Any
    ) -> None:
        super().__init__(detail, field=field, retry_after=max(1, int(retry_after)), **extra)

    @property
    def retry_after(self) -> int:
        return int(self.extra["retry_after"])


class SchemaOutdated(GhafError):
    status = 503
    code = "schema-outdated"
    title = "Database schema is out of date"


class IntegrityFailure(GhafError):
    """Stored data failed an integrity check (audit chain, ciphertext, hash)."""

    status = 500
    code = "integrity-failure"
    title = "Integrity check failed"


class StoredObjectCorrupt(IntegrityFailure):
    """A stored object failed its integrity check on its way out (tampered with or
    damaged at rest). Neither the caller's fault nor a bug: answered as 502, like a bad
    answer from an upstream (the object store). Same problem type as its parent, so the
    SDK raises ``IntegrityFailure``."""

    status = 502


class Unavailable(GhafError):
    status = 503
    code = "unavailable"
    title = "Service unavailable"


ERRORS_BY_CODE: dict[str, type[GhafError]] = {
    cls.code: cls
    for cls in (
        GhafError,
        InvalidInput,
        InvalidEncoding,
        MalformedBody,
        Unauthenticated,
        PermissionDenied,
        NotFound,
        Conflict,
        PayloadTooLarge,
        TooManyRequests,
        SchemaOutdated,
        IntegrityFailure,
        Unavailable,
    )
}


def error_from_problem(problem: dict[str, Any], *, status: int) -> GhafError:
    """Rebuild a typed error from a problem document (used by the SDK)."""
    type_uri = str(problem.get("type", ""))
    code = type_uri.rsplit(":", 1)[-1]
    cls = ERRORS_BY_CODE.get(code)
    if cls is None:
        cls = {
            401: Unauthenticated,
            403: PermissionDenied,
            404: NotFound,
            409: Conflict,
            413: PayloadTooLarge,
            429: TooManyRequests,
        }.get(status, InvalidInput if 400 <= status < 500 else GhafError)
    known = {"type", "title", "status", "detail", "field"}
    extra = {k: v for k, v in problem.items() if k not in known}
    return cls(str(problem.get("detail", f"HTTP {status}")), field=problem.get("field"), **extra)


class ObjectExists(Exception):
    """An append-only object already exists under the key (an object store reports it;
    here, below ``storage`` and ``security``, so the audit witness can catch it)."""
