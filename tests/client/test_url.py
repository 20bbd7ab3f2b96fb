"""The server URL as people paste it: ``/api/v1`` and a trailing ``/`` are accepted, and
a URL that points at something that is not ghaf is named as the problem."""

from __future__ import annotations

import json
import threading
from collections.abc import Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

import pytest

from ghaf.client import Client
from ghaf.client.credentials import load, normalise_url
from ghaf.core.errors import GhafError, InvalidInput, NotFound, Unauthenticated
from tests.conftest import Platform

TOKEN = "ghaf_" + "x" * 43


@pytest.mark.parametrize(
    ("given", "root"),
    [
        ("http://127.0.0.1:8080", "http://127.0.0.1:8080"),
        ("http://127.0.0.1:8080/", "http://127.0.0.1:8080"),
        ("http://127.0.0.1:8080/api/v1", "http://127.0.0.1:8080"),
        ("http://127.0.0.1:8080/api/v1/", "http://127.0.0.1:8080"),
        ("  https://ghaf.example/ml/api/v1/ ", "https://ghaf.example/ml"),
    ],
)
def test_pasted_urls_become_the_server_root(given: str, root: str) -> None:
    assert normalise_url(given) == root


@pytest.mark.parametrize("given", ["127.0.0.1:8080", "ftp://host", "http://", "http://h/?x=1"])
def test_urls_that_cannot_be_a_server_are_refused_by_name(given: str) -> None:
    with pytest.raises(InvalidInput) as refused:
        normalise_url(given, what="GHAF_URL")
    assert refused.value.field == "url"
    assert "GHAF_URL" in refused.value.detail and repr(given) in refused.value.detail


def test_ghaf_url_from_the_environment_is_normalised(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("GHAF_CREDENTIALS", "/nonexistent/credentials.json")
    monkeypatch.setenv("GHAF_URL", "http://127.0.0.1:8080/api/v1/")
    monkeypatch.setenv("GHAF_TOKEN", TOKEN)
    assert load().url == "http://127.0.0.1:8080"
    monkeypatch.setenv("GHAF_URL", "127.0.0.1:8080")
    with pytest.raises(InvalidInput, match=r"GHAF_URL '127\.0\.0\.1:8080'"):
        load()


def test_a_url_ending_in_api_v1_works(platform: Platform) -> None:
    with Client(url=platform.url + "/api/v1/", token=platform.admin_token) as client:
        assert client.url == platform.url
        assert client.whoami().name == "admin"
    # The login reached ghaf's login route (and was refused), not /api/v1/api/v1/...
    with pytest.raises(Unauthenticated):
        Client.login(platform.url + "/api/v1", "nobody", "wrong-password-123")


class _NotGhaf(BaseHTTPRequestHandler):
    """Another web server: an HTML 404, a JSON 404 like any FastAPI app's, an HTML page."""

    def do_GET(self) -> None:
        if self.path.startswith("/page"):
            self._answer(200, "text/html", b"<html><body>hello</body></html>")
        elif self.path.startswith("/other"):
            self._answer(404, "application/json", json.dumps({"detail": "Not Found"}).encode())
        elif self.path.startswith("/proxy"):
            self._answer(502, "text/html", b"<html><h1>502 Bad Gateway</h1></html>")
        else:
            self._answer(404, "text/html", b"<html><h1>Not Found</h1></html>")

    def _answer(self, status: int, kind: str, body: bytes) -> None:
        self.send_response(status)
        self.send_header("Content-Type", kind)
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)

    def log_message(self, *_args: object) -> None:
        pass


@pytest.fixture(scope="module")
def not_ghaf() -> Iterator[str]:
    server = ThreadingHTTPServer(("127.0.0.1", 0), _NotGhaf)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    yield f"http://127.0.0.1:{server.server_address[1]}"
    server.shutdown()
    server.server_close()


@pytest.mark.parametrize("prefix", ["", "/other", "/page"])
def test_a_url_that_is_not_ghaf_is_named(not_ghaf: str, prefix: str) -> None:
    with Client(url=not_ghaf + prefix, token=TOKEN) as client, pytest.raises(InvalidInput) as e:
        client.whoami()
    detail = e.value.detail
    assert e.value.field == "url"
    assert f"GET {not_ghaf}{prefix}/api/v1/whoami" in detail
    assert "not as a ghaf server would" in detail and f"e.g. {not_ghaf}{prefix}" in detail
    assert "\n" not in detail and detail != "Not Found"


def test_lists_from_something_else_are_named_too(not_ghaf: str) -> None:
    with Client(url=not_ghaf + "/page", token=TOKEN) as client, pytest.raises(InvalidInput):
        client.projects.page()


def test_a_proxy_error_keeps_its_status_and_names_the_url(not_ghaf: str) -> None:
    with Client(url=not_ghaf + "/proxy", token=TOKEN) as client, pytest.raises(GhafError) as e:
        client.whoami()
    assert not isinstance(e.value, InvalidInput)  # a server-side failure: exit 1, not 2
    assert f"GET {not_ghaf}/proxy/api/v1/whoami answered HTTP 502" in e.value.detail
    assert "502 Bad Gateway" in e.value.detail


def test_a_ghaf_route_that_does_not_exist_names_the_url(platform: Platform) -> None:
    with (
        Client(url=platform.url + "/ml", token=platform.admin_token) as client,
        pytest.raises(NotFound) as e,
    ):
        client.whoami()
    assert e.value.field == "url"
    assert f"has no route GET {platform.url}/ml/api/v1/whoami" in e.value.detail
    assert f"e.g. {platform.url}/ml" in e.value.detail
