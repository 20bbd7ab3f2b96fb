"""Every error leaves the server as ``application/problem+json`` (RFC 9457)."""

from __future__ import annotations

import logging
from typing import Any

from fastapi import FastAPI, Request
from fastapi.exceptions import RequestValidationError
from starlette.exceptions import HTTPException
from starlette.responses import JSONResponse, Response

from ghaf.core.errors import GhafError, InvalidInput, TooManyRequests

PROBLEM_JSON = "application/problem+json"
log = logging.getLogger("ghaf.server")


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


def _field_of(location: tuple[Any, ...]) -> str:
    parts = [str(p) for p in location if p not in ("body", "query", "path", "header")]
    return ".".join(parts) or "body"


def install(app: FastAPI) -> None:
    @app.exception_handler(GhafError)
    async def _ghaf(request: Request, error: GhafError) -> Response:
        if error.status >= 500:
            log.error("request failed: %s", error.detail)
        return problem_response(error, request)

    @app.exception_handler(RequestValidationError)
    async def _validation(request: Request, error: RequestValidationError) -> Response:
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
        return problem_response(
            InvalidInput(f"{field}: {message}{more}", field=field, errors=errors), request
        )

    @app.exception_handler(HTTPException)
    async def _http(request: Request, error: HTTPException) -> Response:
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

    @app.exception_handler(Exception)
    async def _unexpected(request: Request, error: Exception) -> Response:
        log.exception("unhandled error")
        return problem_response(
            GhafError("internal server error; see the server log with this request_id"), request
        )
