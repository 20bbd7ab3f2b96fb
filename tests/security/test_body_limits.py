"""Bodies are refused before they are read: unauthenticated ones with 401, oversize
ones with 413 (declared or chunked); streamed uploads may be larger than JSON bodies."""

from __future__ import annotations

import json
import os
import socket
from collections.abc import Callable, Iterator
from urllib.parse import urlsplit

import httpx
import pytest

from ghaf.client import Client
from tests.conftest import Platform, unique

MB = 1 << 20


def _send_partially(
    url: str, method: str, path: str, headers: dict[str, str], *, declared: int, send: int
) -> bytes:
    """Declare a ``declared``-byte body, send only ``send`` bytes of it, read the answer."""
    parts = urlsplit(url)
    with socket.create_connection((parts.hostname, parts.port), timeout=10) as sock:
        head = [f"{method} {path} HTTP/1.1", f"Host: {parts.netloc}"]
        head += [f"{k}: {v}" for k, v in headers.items()]
        head += [f"Content-Length: {declared}", "Content-Type: application/json", "", ""]
        sock.sendall("\r\n".join(head).encode())
        sock.sendall(b"[" + b"1," * (send // 2))
        answer = b""
        while b"\r\n\r\n" not in answer:
            chunk = sock.recv(65536)
            if not chunk:
                break
            answer += chunk
        # Whatever of the body follows the head: enough for a small problem document.
        try:
            sock.settimeout(2)
            while len(answer) < 4096:
                chunk = sock.recv(65536)
                if not chunk:
                    break
                answer += chunk
                if answer.rstrip().endswith(b"}"):
                    break
        except TimeoutError:
            pass
        return answer


def _status_and_problem(answer: bytes) -> tuple[int, dict[str, object]]:
    head, _, body = answer.partition(b"\r\n\r\n")
    status = int(head.split(b" ", 2)[1])
    assert b"application/problem+json" in head.lower()
    return status, json.loads(body[body.index(b"{") :])


def test_anonymous_100_mb_post_is_refused_before_it_is_read(platform: Platform) -> None:
    # 100 MB declared, 64 KiB sent: the answer comes while the client is still "sending".
    answer = _send_partially(
        platform.url, "POST", "/api/v1/projects", {}, declared=100_000_000, send=64 << 10
    )
    status, problem = _status_and_problem(answer)
    assert status == 401
    assert "authentication required" in str(problem["detail"])
    forged = _send_partially(
        platform.url,
        "POST",
        "/api/v1/projects",
        {"Authorization": "Bearer ghaf_" + "A" * 43},
        declared=100_000_000,
        send=64 << 10,
    )
    assert _status_and_problem(forged)[0] == 401


@pytest.fixture
def small(fresh_platform: Callable[..., Platform]) -> Platform:
    return fresh_platform(max_body_bytes=1 * MB, max_upload_bytes=8 * MB)


def test_declared_oversize_json_is_413_before_reading(small: Platform) -> None:
    auth = {"Authorization": f"Bearer {small.admin_token}"}
    answer = _send_partially(
        small.url, "POST", "/api/v1/projects", auth, declared=2 * MB, send=64 << 10
    )
    status, problem = _status_and_problem(answer)
    assert status == 413
    assert problem["type"] == "urn:ghaf:problem:payload-too-large"
    assert problem["limit"] == 1 * MB
    # Over the largest upload any route takes: refused before authentication even.
    huge = _send_partially(
        small.url, "PUT", "/api/v1/projects/p/artifacts/x", auth, declared=9 * MB, send=1024
    )
    assert _status_and_problem(huge)[0] == 413


def test_chunked_oversize_json_is_413(small: Platform) -> None:
    def chunks() -> Iterator[bytes]:
        yield b'{"name": "' + b"x" * 1000
        for _ in range(40):
            yield b"x" * (64 << 10)  # 2.5 MiB in all, no Content-Length
        yield b'"}'

    response = httpx.post(
        f"{small.url}/api/v1/projects",
        content=chunks(),
        headers={
            "Authorization": f"Bearer {small.admin_token}",
            "Content-Type": "application/json",
        },
    )
    assert response.status_code == 413
    assert response.headers["content-type"] == "application/problem+json"
    assert response.json()["type"] == "urn:ghaf:problem:payload-too-large"
    # A body within the limit still works.
    assert small.admin.projects.create(unique("p")).name


def test_streamed_uploads_may_exceed_the_json_limit(small: Platform) -> None:
    admin: Client = small.admin
    project = admin.projects.create(unique("p")).name
    content = os.urandom(3 * MB)
    stored = admin.artifacts.upload(project, "big.bin", content)
    assert stored.size == 3 * MB
    assert admin.artifacts.read(project, "big.bin") == content


def test_login_bodies_are_small(platform: Platform) -> None:
    response = httpx.post(
        f"{platform.url}/api/v1/auth/login",
        content=json.dumps({"name": "x", "password": "y" * (100 << 10)}),
        headers={"Content-Type": "application/json"},
    )
    assert response.status_code == 413
