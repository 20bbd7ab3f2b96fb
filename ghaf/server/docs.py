"""``/api/v1/docs``: Swagger UI served by this server, so the docs work offline.

FastAPI's default page loads Swagger UI from a CDN, so an air-gapped site saw a blank
page. The assets come from the ``swagger-ui-bundle-v2`` package (Swagger UI 5, which
reads OpenAPI 3.1) and are served from the package's folder; the page names only
same-origin URLs (``tests/server/test_openapi.py`` checks), and Swagger UI's online
validator badge, which would send the document's URL to a third party, is off.
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable
from pathlib import Path

from fastapi import FastAPI, Request
from fastapi.openapi.docs import get_swagger_ui_html, get_swagger_ui_oauth2_redirect_html
from starlette.responses import FileResponse, HTMLResponse, Response

__all__ = ["ASSETS", "install", "paths"]

ASSETS: dict[str, str] = {
    "swagger-ui-bundle.js": "text/javascript; charset=utf-8",
    "swagger-ui.css": "text/css; charset=utf-8",
    "favicon-32x32.png": "image/png",
}
"""The files of the bundle the page loads, and their media types."""
_CACHE = "public, max-age=86400"  # versioned with the package: a day is safe


def paths(docs_url: str) -> tuple[str, ...]:
    """Every path the docs answer: all of them are served without a token."""
    return (docs_url, f"{docs_url}/oauth2-redirect", *(f"{docs_url}/{a}" for a in ASSETS))


def _bundle() -> Path:
    from swagger_ui_bundle import swagger_ui_path  # type: ignore[import-untyped]

    return Path(str(swagger_ui_path))


def install(app: FastAPI, *, docs_url: str, openapi_url: str, title: str) -> None:
    """Add the page, the OAuth2 redirect and the assets under ``docs_url`` (none of them
    in the OpenAPI document)."""
    bundle = _bundle()
    missing = [a for a in ASSETS if not (bundle / a).is_file()]
    if missing:  # a broken install: fail at start-up, not with a blank page later
        raise RuntimeError(f"swagger-ui-bundle-v2 lacks {', '.join(missing)} in {bundle}")
    redirect = f"{docs_url}/oauth2-redirect"

    async def page(_request: Request) -> HTMLResponse:
        return get_swagger_ui_html(
            openapi_url=openapi_url,
            title=f"{title} API",
            swagger_js_url=f"{docs_url}/swagger-ui-bundle.js",
            swagger_css_url=f"{docs_url}/swagger-ui.css",
            swagger_favicon_url=f"{docs_url}/favicon-32x32.png",
            oauth2_redirect_url=redirect,
            swagger_ui_parameters={"validatorUrl": None, "persistAuthorization": False},
        )

    async def oauth2_redirect(_request: Request) -> HTMLResponse:
        return get_swagger_ui_oauth2_redirect_html()

    app.add_route(docs_url, page, include_in_schema=False)
    app.add_route(redirect, oauth2_redirect, include_in_schema=False)
    for name, media_type in ASSETS.items():
        app.add_route(
            f"{docs_url}/{name}", _asset(bundle / name, media_type), include_in_schema=False
        )


def _asset(path: Path, media_type: str) -> Callable[[Request], Awaitable[Response]]:
    async def serve(_request: Request) -> Response:
        return FileResponse(path, media_type=media_type, headers={"Cache-Control": _CACHE})

    return serve
