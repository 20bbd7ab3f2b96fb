"""A slowloris-style client cannot hold the server: slow headers, slow bodies and idle
connections are cut off within their configured bound, and while many of them hang a
normal request still answers at once. Against ``ghaf server`` itself (a child process),
so the listener's real protocol and settings are what is tested."""

from __future__ import annotations

import hashlib
import socket
import threading
import time
from collections.abc import Iterator
from dataclasses import dataclass

import httpx
import pytest

from ghaf.core.settings import Settings
from ghaf.server.install import initialise
from ghaf.server.process import ServerProcess
from tests.conftest import Databases

HEADER_TIMEOUT_S = 1.0
BODY_TIMEOUT_S = 1.0
KEEP_ALIVE_S = 1.0
SLACK_S = 1.5  # scheduling on a busy 2-core machine


@dataclass
class Server:
    url: str
    port: int
    token: str


@pytest.fixture(scope="module")
def server(databases: Databases, tmp_path_factory: pytest.TempPathFactory) -> Iterator[Server]:
    home, url = tmp_path_factory.mktemp("slow-home"), databases.new_url()
    created = initialise(Settings(home=home, database_url=url, master_key=None)).token
    assert created is not None
    env = {
        "GHAF_HOME": str(home),
        "GHAF_DATABASE_URL": url,
        "GHAF_HEADER_TIMEOUT_S": str(HEADER_TIMEOUT_S),
        "GHAF_BODY_TIMEOUT_S": str(BODY_TIMEOUT_S),
        "GHAF_BODY_MIN_RATE": "1000",
        "GHAF_KEEP_ALIVE_TIMEOUT_S": str(KEEP_ALIVE_S),
        "GHAF_MAX_HEADER_BYTES": "8192",
    }
    log = tmp_path_factory.mktemp("slow-log") / "server.log"
    with ServerProcess(env=env, log_path=log) as process:
        yield Server(process.url, process.port, created.token)


def _connect(server: Server) -> socket.socket:
    sock = socket.create_connection(("127.0.0.1", server.port), timeout=30)
    sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
    return sock


@dataclass
class Trickle:
    """Sends ``head`` at once, then ``tail`` one byte every ``interval`` seconds, until the
    server closes the connection; records how long that took and what came back."""

    head: bytes
    tail: bytes
    interval: float = 0.2
    closed_after: float | None = None
    answer: bytes = b""

    def run(self, server: Server, limit: float = 15.0) -> Trickle:
        started = time.monotonic()
        with _connect(server) as sock:
            sock.settimeout(self.interval)
            if self.head:
                sock.sendall(self.head)
            for byte in self.tail:
                if time.monotonic() - started > limit:
                    return self  # never cut off: closed_after stays None
                try:
                    sock.sendall(bytes([byte]))
                    chunk = sock.recv(65536)
                except TimeoutError:
                    continue  # nothing to read yet: the connection is still open
                except OSError:  # reset or broken pipe: the server closed it
                    break
                self.answer += chunk
                if not chunk:
                    break
            else:
                return self
            self.closed_after = time.monotonic() - started
        return self

    def start(self, server: Server) -> threading.Thread:
        thread = threading.Thread(target=self.run, args=(server,), daemon=True)
        thread.start()
        return thread


def _slow_headers() -> Trickle:
    return Trickle(b"GET /healthz HTTP/1.1\r\nHost: 127.0.0.1\r\n", b"X-Slow: " + b"a" * 400)


def _slow_body(path: str, headers: str = "") -> Trickle:
    head = (
        f"POST {path} HTTP/1.1\r\nHost: 127.0.0.1\r\nContent-Type: application/json\r\n"
        f"Content-Length: 1000\r\n{headers}\r\n"
    ).encode()
    return Trickle(head, b'{"name": "' + b"a" * 900)


def test_slow_headers_are_cut_off(server: Server) -> None:
    slow = _slow_headers().run(server)
    assert slow.closed_after is not None, "a header byte every 0.2 s held the connection"
    assert slow.closed_after < HEADER_TIMEOUT_S + SLACK_S


def test_a_connection_that_sends_nothing_is_closed(server: Server) -> None:
    started = time.monotonic()
    with _connect(server) as sock:
        sock.settimeout(10)
        assert sock.recv(1024) == b""
    assert time.monotonic() - started < HEADER_TIMEOUT_S + SLACK_S


def test_huge_headers_are_refused(server: Server) -> None:
    with _connect(server) as sock:
        sock.sendall(b"GET /healthz HTTP/1.1\r\nHost: 127.0.0.1\r\nX-Big: " + b"a" * 20_000)
        sock.settimeout(10)
        answer = b""
        while chunk := sock.recv(65536):
            answer += chunk
    assert answer.startswith(b"HTTP/1.1 431")


@pytest.mark.parametrize(
    "route", ["login", "authenticated route"], ids=["anonymous login", "authenticated"]
)
def test_slow_bodies_are_answered_408_and_closed(server: Server, route: str) -> None:
    if route == "login":
        slow = _slow_body("/api/v1/auth/login")
    else:
        slow = _slow_body("/api/v1/projects", f"Authorization: Bearer {server.token}\r\n")
    slow.run(server)
    assert slow.closed_after is not None, "a body byte every 0.2 s held the connection"
    assert slow.closed_after < BODY_TIMEOUT_S + SLACK_S
    status, _, rest = slow.answer.partition(b"\r\n")
    assert status == b"HTTP/1.1 408 Request Timeout", slow.answer[:200]
    headers = rest.lower()
    assert b"content-type: application/problem+json" in headers
    assert b"connection: close" in headers
    assert b"urn:ghaf:problem:request-timeout" in slow.answer


def test_a_large_upload_on_a_working_link_is_not_cut_off(server: Server) -> None:
    """Four times the body timeout, at 100 kB/s: the bound grows with what arrives."""
    piece = b"x" * 20_000

    def body() -> Iterator[bytes]:
        for _ in range(20):
            time.sleep(BODY_TIMEOUT_S / 5)
            yield piece

    headers = {"Authorization": f"Bearer {server.token}"}
    with httpx.Client(base_url=server.url, headers=headers, timeout=30) as http:
        assert http.post("/api/v1/projects", json={"name": "uploads"}).status_code == 201
        started = time.monotonic()
        answer = http.put(
            "/api/v1/projects/uploads/artifacts/big.bin",
            content=body(),
            headers={
                "Content-Type": "application/octet-stream",
                "X-Ghaf-SHA256": hashlib.sha256(piece * 20).hexdigest(),
            },
        )
    assert answer.status_code == 201, answer.text
    assert answer.json()["size"] == 20 * len(piece)
    assert time.monotonic() - started > 3 * BODY_TIMEOUT_S


def test_an_idle_keep_alive_connection_is_closed(server: Server) -> None:
    with _connect(server) as sock:
        sock.sendall(b"GET /healthz HTTP/1.1\r\nHost: 127.0.0.1\r\n\r\n")
        sock.settimeout(10)
        answer = b""
        while b"}" not in answer:  # the whole response: headers, then its JSON body
            answer += sock.recv(65536)
        assert answer.startswith(b"HTTP/1.1 200")
        started = time.monotonic()
        assert sock.recv(65536) == b""
    assert time.monotonic() - started < max(KEEP_ALIVE_S, HEADER_TIMEOUT_S) + SLACK_S


def test_after_a_response_a_trickled_next_request_is_cut_off(server: Server) -> None:
    """uvicorn's keep-alive timer stops at the first byte of the next request: the header
    deadline, restarted when the response ends, still bounds it."""
    slow = Trickle(b"GET /healthz HTTP/1.1\r\nHost: 127.0.0.1\r\n\r\n", b"GET /healthz" * 40)
    slow.run(server)
    assert slow.answer.startswith(b"HTTP/1.1 200")
    assert slow.closed_after is not None
    assert slow.closed_after < HEADER_TIMEOUT_S + SLACK_S


def test_normal_requests_answer_while_slow_clients_hang(server: Server) -> None:
    hanging = [_slow_headers() for _ in range(15)] + [
        _slow_body("/api/v1/auth/login") for _ in range(15)
    ]
    threads = [t.start(server) for t in hanging]
    time.sleep(0.5)  # every slow client is connected and trickling
    with httpx.Client(base_url=server.url, timeout=10) as http:
        for _ in range(5):
            started = time.monotonic()
            assert http.get("/healthz").status_code == 200
            whoami = http.get("/api/v1/whoami", headers={"Authorization": f"Bearer {server.token}"})
            assert whoami.status_code == 200
            assert time.monotonic() - started < 1.0
    for thread in threads:
        thread.join(timeout=HEADER_TIMEOUT_S + BODY_TIMEOUT_S + 10)
    assert all(t.closed_after is not None for t in hanging), "a slow client was never cut off"
