"""Every error leaves the server as ``application/problem+json`` (RFC 9457)."""

from __future__ import annotations

import logging
from typing import Any

from fastapi import FastAPI, Request
from fastapi.exceptions import RequestValidationError
from pydantic import ValidationError
from sqlalchemy.exc import DataError
from starlette.exceptions import HTTPException
from starlette.responses import JSONResponse, Response

from ghaf.core.errors import (
    GhafError,
    InvalidInput,
    MalformedBody,
    StoredObjectCorrupt,
    TooManyRequests,
)
from ghaf.platform.calls import ServiceCall

PROBLEM_JSON = "application/problem+json"
log = logging.getLogger("ghaf.server")

PROBLEM_SCHEMA: dict[str, Any] = {
    "title": "Problem",
    "description": "An RFC 9457 problem document: every error ghaf answers has this shape. "
    "`type` names the kind of problem (`urn:ghaf:problem:<code>`, one per error class); "
    "other members are extensions some problems carry.",
    "type": "object",
    "required": ["type", "title", "status", "detail"],
    "properties": {
        "type": {
            "type": "string",
            "description": "urn:ghaf:problem:<code>, e.g. urn:ghaf:problem:not-found.",
            "examples": ["urn:ghaf:problem:not-found"],
        },
        "title": {"type": "string", "description": "The same for every problem of a type."},
        "status": {"type": "integer", "minimum": 400, "maximum": 599},
        "detail": {"type": "string", "description": "What went wrong, for a person."},
        "field": {
            "type": "string",
            "description": "The one input that was wrong (a body field such as `name`, a "
            "parameter, or `body`, `path`, `query` as a whole).",
        },
        "request_id": {
            "type": "string",
            "description": "Also in the X-Request-ID header and the server's log.",
        },
        "errors": {
            "type": "array",
            "description": "Every problem a validation found (422), the first is `field`.",
            "items": {
                "type": "object",
                "required": ["field", "message"],
                "properties": {"field": {"type": "string"}, "message": {"type": "string"}},
            },
        },
        "retry_after": {
            "type": "integer",
            "minimum": 1,
            "description": "Seconds to wait (429; also the Retry-After header).",
        },
    },
    "additionalProperties": True,
}
"""The schema of every error response, ``components/schemas/Problem`` in the OpenAPI
document (ghaf/server/openapi.py): what :meth:`GhafError.to_problem` and the handlers
below emit."""


def problem_response(error: GhafError, request: Request) -> Response:
    request_id = getattr(request.state, "request_id", None)
    headers = {"WWW-Authenticate": "Bearer"} if error.status == 401 else None
    if isinstance(error, TooManyRequests):
        headers = {"Retry-After": str(error.retry_after)}
    return JSONResponse(
        error.to_problem(request_id=request_id),
        status_code=error.status,
        media_type=PROBLEM_JSON,
        headers=headers,
    )


def unexpected_problem(error: Exception) -> GhafError:
    """The problem for an exception no service raised on purpose (FastAPI routes and hot
    routes alike). Two kinds are known not to be bugs, so are never a 500."""
    if isinstance(error, OverflowError | DataError):
        # A value past what a column holds (an integer over 64 bits, a number PostgreSQL
        # refuses) is bad input that a schema bound missed.
        log.warning("value out of range: %s", error)
        return InvalidInput(
            "a value in the request is out of the range ghaf stores (integers are "
            "64-bit: -9223372036854775808 to 9223372036854775807)",
            field="body",
        )
    if isinstance(error, ValidationError):
        # Requests are validated before any service runs (RequestValidationError), so a
        # bare ValidationError is an answer built from stored rows of the wrong shape.
        errors = error.errors()
        where = ".".join(str(p) for p in errors[0]["loc"]) if errors else ""
        message = errors[0]["msg"] if errors else "invalid"
        log.error("stored data failed validation: %s", error)
        return StoredObjectCorrupt(
            f"stored metadata failed validation ({where or error.title}: {message}): "
            "the metadata database was damaged or tampered with; restore it from a backup"
        )
    if isinstance(error, ValueError | TypeError) and _raised_reading_a_row(error):
        # A stored value the column type cannot read back (a date that does not parse):
        # damaged metadata, not a bug in the code that asked for the row.
        log.error("stored data could not be read: %s", error)
        return StoredObjectCorrupt(
            f"a stored row could not be read ({error}): the metadata database was damaged "
            "or tampered with; restore it from a backup"
        )
    log.error("unhandled error", exc_info=error)
    return GhafError("internal server error; see the server log with this request_id")


_ROW_PROCESSORS = (
    "sqlalchemy/engine/_processors",
    "sqlalchemy/engine/_py_processors",
    "sqlalchemy/engine/processors",
)


def _raised_reading_a_row(error: BaseException) -> bool:
    """Whether ``error`` came out of SQLAlchemy turning a stored value into Python."""
    tb = error.__traceback__
    last = None
    while tb is not None:
        last = tb
        tb = tb.tb_next
    if last is None:
        return False
    where = last.tb_frame.f_code.co_filename.replace("\\", "/")
    return any(marker in where for marker in _ROW_PROCESSORS)


def _field_of(location: tuple[Any, ...]) -> str:
    parts = [str(p) for p in location if p not in ("body", "query", "path", "header")]
    return ".".join(parts) or "body"


def malformed_json(reason: str) -> MalformedBody:
    """The one problem for a body that is not JSON at all (``{bad``, invalid UTF-8):
    FastAPI's parser and routes that parse their own body (a run's log) answer alike."""
    return MalformedBody.not_json(reason)


def _validation_problem(error: RequestValidationError) -> GhafError:
    undecodable = [e for e in error.errors() if e.get("type") == "json_invalid"]
    if undecodable:
        reason = str(undecodable[0].get("ctx", {}).get("error", "JSON decode error"))
        return malformed_json(reason)
    first = error.errors()[0]
    field = _field_of(tuple(first.get("loc", ())))
    message = str(first.get("msg", "invalid value")).removeprefix("Value error, ")
    count = len(error.errors())
    more = f" (and {count - 1} more problem{'s' if count > 2 else ''})" if count > 1 else ""
    errors = [
        {
            "field": _field_of(tuple(e.get("loc", ()))),
            "message": str(e.get("msg", "")).removeprefix("Value error, "),
        }
        for e in error.errors()
    ]
    return InvalidInput(f"{field}: {message}{more}", field=field, errors=errors)


def _http_problem(error: HTTPException, request: Request) -> Response:
    if error.status_code == 400 and isinstance(error.__cause__, UnicodeDecodeError):
        # FastAPI's "There was an error parsing the body": bytes that are not UTF-8.
        return problem_response(malformed_json("it is not UTF-8"), request)
    problem = GhafError(str(error.detail))
    body = problem.to_problem(request_id=getattr(request.state, "request_id", None))
    body.update(
        status=error.status_code,
        title=str(error.detail),
        type=f"urn:ghaf:problem:http-{error.status_code}",
    )
    return JSONResponse(
        body,
        status_code=error.status_code,
        media_type=PROBLEM_JSON,
        headers=getattr(error, "headers", None),
    )


def problem_for(error: Exception, request: Request) -> Response:
    """The one mapping from an exception to its problem response, for FastAPI's routes
    (the handlers :func:`install` adds) and hot routes alike."""
    if isinstance(error, GhafError):
        if error.status >= 500:
            log.error("request failed: %s", error.detail)
        return problem_response(error, request)
    if isinstance(error, RequestValidationError):
        return problem_response(_validation_problem(error), request)
    if isinstance(error, HTTPException):
        return _http_problem(error, request)
    return problem_response(unexpected_problem(error), request)


def _project_in_path(request: Request) -> str | None:
    """The project a project-scoped route names (``/api/v1/projects/{project}/...``)."""
    if not request.url.path.startswith("/api/v1/projects/"):
        return None
    value = request.path_params.get("project", request.path_params.get("name"))
    return value if isinstance(value, str) else None


async def _hidden_project(request: Request) -> GhafError | None:
    """Whether the project in the path is invisible to the caller.

    FastAPI validates a body before any service runs, so without this another tenant
    would learn "422" where everyone else outside the project learns "404": the same
    door answers first, whatever the body.
    """
    project = _project_in_path(request)
    if project is None:
        return None
    try:
        await ServiceCall(request).require_visible(project)
    except GhafError as error:
        return error
    return None


def error_status(error: RequestValidationError | HTTPException) -> int:
    """The status a request error answers before the hidden-project check: 422 for
    validation, 400 for a body FastAPI could not parse."""
    if isinstance(error, HTTPException):
        return error.status_code
    return _validation_problem(error).status


def install(app: FastAPI) -> None:
    @app.exception_handler(GhafError)
    @app.exception_handler(RequestValidationError)
    @app.exception_handler(HTTPException)
    @app.exception_handler(OverflowError)
    @app.exception_handler(DataError)
    @app.exception_handler(ValidationError)
    @app.exception_handler(Exception)
    async def _problem(request: Request, error: Exception) -> Response:
        if isinstance(error, RequestValidationError | HTTPException) and (
            error_status(error) in (400, 422)
        ):
            hidden = await _hidden_project(request)
            if hidden is not None:
                return problem_response(hidden, request)
        return problem_for(error, request)
