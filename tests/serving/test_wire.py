"""Prediction requests answered off the connection (ghaf/serving/wire.py): the same
answers as uvicorn's ASGI path, in order, within the body limit, and never a crash."""

from __future__ import annotations

import gzip
import json
import socket
import time
from collections.abc import Iterator
from typing import Any

import httpx
import numpy as np
import pytest
from prometheus_client import generate_latest
from prometheus_client.parser import text_string_to_metric_families
from starlette.types import Receive, Scope, Send

from ghaf.serving.app import ServingOptions, create_serving_app
from ghaf.serving.fastpath import ServingApp
from ghaf.serving.wire import protocol_for
from tests.serving.conftest import running
from tests.serving.test_fastpath import AUTH, OneToken

Array = np.ndarray[Any, Any]
LIMIT = 64 * 1024
INFER = "/v2/models/forest/infer"


class Counting:
    """The serving app behind a door that counts the requests uvicorn hands it as ASGI
    (the wire answers hot requests without one)."""

    def __init__(self, app: ServingApp) -> None:
        self.app = app
        self.asgi_requests = 0

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] == "http":
            self.asgi_requests += 1
        await self.app(scope, receive, send)


@pytest.fixture(scope="module")
def servers(loaded_forest: tuple[Any, Array]) -> Iterator[tuple[str, str, Counting]]:
    """(the wire's URL, plain uvicorn's URL, the wire server's counting door)."""
    options = ServingOptions(max_body_bytes=LIMIT)
    wired = create_serving_app([loaded_forest[0]], authorizer=OneToken(), options=options)
    plain = create_serving_app([loaded_forest[0]], authorizer=OneToken(), options=options)
    door = Counting(wired)
    with running(door, http=protocol_for(wired)) as wire_url, running(plain) as plain_url:
        yield wire_url, plain_url, door


def _body(x: Array, **extra: Any) -> bytes:
    tensor = {"name": "X", "shape": list(x.shape), "datatype": "FP32", "data": x.ravel().tolist()}
    return json.dumps({"inputs": [tensor], **extra}).encode()


def _port(url: str) -> int:
    return int(url.rsplit(":", 1)[1])


def _raw(url: str, data: bytes, *, until_closed: bool = False, answers: int = 1) -> bytes:
    """Send ``data`` on one connection; read ``answers`` answers (or until it closes)."""
    with socket.create_connection(("127.0.0.1", _port(url)), timeout=10) as conn:
        conn.sendall(data)
        received = b""
        deadline = time.monotonic() + 10
        while time.monotonic() < deadline:
            if not until_closed and received.count(b"HTTP/1.1 ") >= answers:
                _, _, rest = received.rpartition(b"HTTP/1.1 ")
                header, _, body = rest.partition(b"\r\n\r\n")
                length = next(
                    int(line.split(b":")[1])
                    for line in header.split(b"\r\n")
                    if line.lower().startswith(b"content-length:")
                )
                if len(body) >= length:
                    return received
            chunk = conn.recv(65536)
            if not chunk:
                return received
            received += chunk
        return received


def _request(path: str, body: bytes, headers: dict[str, str] | None = None) -> bytes:
    lines = [f"POST {path} HTTP/1.1", "host: test", f"content-length: {len(body)}"]
    lines += [f"{k}: {v}" for k, v in (headers or {}).items()]
    return ("\r\n".join(lines) + "\r\n\r\n").encode() + body


@pytest.mark.parametrize(
    "case",
    ["good", "id", "bad datatype", "not json", "no token", "unknown model", "predict", "gzip"],
)
def test_the_wire_answers_as_uvicorn_does(
    servers: tuple[str, str, Counting], loaded_forest: tuple[Any, Array], case: str
) -> None:
    wire_url, plain_url, door = servers
    X = loaded_forest[1]
    path, headers, content = INFER, dict(AUTH), _body(X[:3])
    if case == "id":
        content = _body(X[:2], id="req-7", outputs=[{"name": "label"}])
    elif case == "bad datatype":
        content = b'{"inputs": [{"name": "X", "shape": [1, 20], "datatype": "FP64", "data": []}]}'
    elif case == "not json":
        content = b"{nope"
    elif case == "no token":
        headers = {}
    elif case == "unknown model":
        path = "/v2/models/nope/infer"
    elif case == "predict":
        path, content = "/predict?model=forest", json.dumps(X[:2].tolist()).encode()
    elif case == "gzip":
        content, headers = gzip.compress(content), {**headers, "content-encoding": "gzip"}
    before = door.asgi_requests
    wire = httpx.post(wire_url + path, content=content, headers=headers)
    plain = httpx.post(plain_url + path, content=content, headers=headers)
    assert (wire.status_code, wire.content) == (plain.status_code, plain.content)
    for name in ("content-type", "content-length", "www-authenticate"):
        assert wire.headers.get(name) == plain.headers.get(name)
    assert "x-request-id" in wire.headers
    # Known paths never became an ASGI request; an unknown model goes FastAPI's way.
    assert door.asgi_requests == before + (case == "unknown model")


def test_a_safe_request_id_is_echoed(servers: tuple[str, str, Counting]) -> None:
    wire_url = servers[0]
    answer = httpx.post(wire_url + INFER, content=b"{}", headers={**AUTH, "x-request-id": "abc-1"})
    assert answer.headers["x-request-id"] == "abc-1"
    hostile = httpx.post(wire_url + INFER, content=b"{}", headers={**AUTH, "x-request-id": "a b"})
    assert hostile.headers["x-request-id"] != "a b"


def test_pipelined_requests_are_answered_in_order(
    servers: tuple[str, str, Counting], loaded_forest: tuple[Any, Array]
) -> None:
    X = loaded_forest[1]
    sent = [
        _request(INFER, _body(X[:1], id="one"), AUTH),
        (
            "GET /v2 HTTP/1.1\r\nhost: t\r\nauthorization: " + AUTH["authorization"] + "\r\n\r\n"
        ).encode(),
        _request(INFER, _body(X[:2], id="two"), AUTH),
        _request(INFER, _body(X[:3], id="three"), AUTH),
    ]
    received = _raw(servers[0], b"".join(sent), answers=4)
    answers = received.split(b"HTTP/1.1 ")[1:]
    assert [a[:3] for a in answers] == [b"200"] * 4
    ids = [json.loads(a.partition(b"\r\n\r\n")[2]).get("id") for a in answers]
    assert ids == ["one", None, "two", "three"]


def test_a_body_over_the_limit_is_refused_and_the_connection_closed(
    servers: tuple[str, str, Counting],
) -> None:
    wire_url = servers[0]
    declared = _request(INFER, b"x" * 10, AUTH).replace(
        b"content-length: 10", b"content-length: 99999999"
    )
    answer = _raw(wire_url, declared, until_closed=True)
    assert answer.startswith(b"HTTP/1.1 413") and b"connection: close" in answer
    # Chunked, with no length declared: refused once it passes the limit.
    head = f"POST {INFER} HTTP/1.1\r\nhost: t\r\ntransfer-encoding: chunked\r\n"
    head += f"authorization: {AUTH['authorization']}\r\n\r\n"
    chunk = b"x" * 16384
    chunks = b"".join(b"%x\r\n%s\r\n" % (len(chunk), chunk) for _ in range(6))
    answer = _raw(wire_url, head.encode() + chunks, until_closed=True)
    assert answer.startswith(b"HTTP/1.1 413")
    assert b"larger than this server accepts (65,536 bytes)" in answer
    assert httpx.post(wire_url + INFER, content=b"{}", headers=AUTH).status_code == 400


def test_no_token_is_refused_before_the_body_is_read(servers: tuple[str, str, Counting]) -> None:
    wire_url = servers[0]
    head = f"POST {INFER} HTTP/1.1\r\nhost: t\r\ncontent-length: {LIMIT}\r\n\r\n".encode()
    # Half the body only: the answer comes anyway, and the connection is not reused.
    answer = _raw(wire_url, head + b"x" * (LIMIT // 2), until_closed=True)
    assert answer.startswith(b"HTTP/1.1 401") and b"connection: close" in answer


def test_http_1_0_and_expect_continue(
    servers: tuple[str, str, Counting], loaded_forest: tuple[Any, Array]
) -> None:
    wire_url = servers[0]
    body = _body(loaded_forest[1][:1])
    old = _request(INFER, body, AUTH).replace(b"HTTP/1.1\r\n", b"HTTP/1.0\r\n", 1)
    answer = _raw(wire_url, old, until_closed=True)
    assert answer.startswith(b"HTTP/1.1 200") and b"connection: close" in answer
    expecting = httpx.post(
        wire_url + INFER, content=body, headers={**AUTH, "expect": "100-continue"}
    )
    assert expecting.status_code == 200


def test_a_caller_that_goes_away_does_not_hurt_the_server(
    servers: tuple[str, str, Counting], loaded_forest: tuple[Any, Array]
) -> None:
    wire_url = servers[0]
    body = _body(loaded_forest[1][:1])
    for cut in (10, len(body) // 2):
        head = _request(INFER, body, AUTH)
        with socket.create_connection(("127.0.0.1", _port(wire_url)), timeout=5) as conn:
            conn.sendall(head[: head.index(b"\r\n\r\n") + 4 + cut])
    with httpx.Client(base_url=wire_url) as client:  # one kept-alive connection
        for _ in range(5):
            assert client.post(INFER, content=body, headers=AUTH).status_code == 200


def test_malformed_http_is_refused(servers: tuple[str, str, Counting]) -> None:
    answer = _raw(servers[0], b"POST /v2/models/forest/infer HTTP/1.1\r\ncontent-length: x\r\n\r\n")
    assert answer.startswith(b"HTTP/1.1 400")


def test_a_slow_body_is_cut_off(loaded_forest: tuple[Any, Array]) -> None:
    app = create_serving_app([loaded_forest[0]], authorizer=OneToken())
    protocol = protocol_for(app, body_timeout_s=0.3, body_min_rate=1024)
    with running(app, http=protocol) as url:
        head = _request(INFER, b"x" * 5000, AUTH)
        started = time.monotonic()
        answer = _raw(url, head[: head.index(b"\r\n\r\n") + 4 + 100], until_closed=True)
        assert answer.startswith(b"HTTP/1.1 408") and b"connection: close" in answer
        assert b"arrived too slowly" in answer
        assert time.monotonic() - started < 5


def test_slow_headers_are_cut_off(loaded_forest: tuple[Any, Array]) -> None:
    app = create_serving_app([loaded_forest[0]], authorizer=OneToken())
    with running(app, http=protocol_for(app, header_timeout_s=0.3)) as url:
        started = time.monotonic()
        # The line and half the headers, then nothing: closed, nothing answered.
        answer = _raw(url, f"POST {INFER} HTTP/1.1\r\nhost: t\r\n".encode(), until_closed=True)
        assert answer == b"" and time.monotonic() - started < 5
        # A connection that answered once is held to the same deadline for the next.
        body = _body(loaded_forest[1][:1])
        with socket.create_connection(("127.0.0.1", _port(url)), timeout=5) as conn:
            conn.sendall(_request(INFER, body, AUTH))
            time.sleep(0.2)
            assert conn.recv(65536).startswith(b"HTTP/1.1 200")
            conn.sendall(b"POST /predict HTTP/1.1\r\n")
            assert conn.recv(65536) == b""  # closed after the deadline


def test_a_steady_body_earns_time_as_it_arrives(loaded_forest: tuple[Any, Array]) -> None:
    # 0.3 s plus a second per 10,000 bytes: 3,000 bytes every 0.1 s earn 0.3 s each. The
    # deadline was computed once, for the bytes that had come when reading began, so a
    # body sent at three times the minimum rate was cut off after about 0.6 s (408).
    app = create_serving_app([loaded_forest[0]], authorizer=OneToken())
    protocol = protocol_for(app, body_timeout_s=0.3, body_min_rate=10_000)
    body = _body(np.tile(loaded_forest[1][:1], (80, 1)))
    assert len(body) > 30_000
    head = _request(INFER, body, AUTH)
    with (
        running(app, http=protocol) as url,
        socket.create_connection(("127.0.0.1", _port(url)), timeout=10) as conn,
    ):
        conn.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        for start in range(0, len(head), 3000):
            conn.sendall(head[start : start + 3000])
            time.sleep(0.1)
        answer = conn.recv(65536)
    assert answer.startswith(b"HTTP/1.1 200"), answer[:200]


def _broken(*args: Any) -> None:
    raise RuntimeError("counting or logging the answer failed (a bug)")


def test_a_failure_to_count_an_answer_is_a_500_on_both_doors(
    loaded_forest: tuple[Any, Array], monkeypatch: pytest.MonkeyPatch
) -> None:
    # The wire counted and logged the answer outside the hot path's try: when that
    # raised, it closed the connection with no answer at all; uvicorn's ASGI path
    # answers an app's error with its 500 (and closes), so the wire does the same.
    wired = create_serving_app([loaded_forest[0]], authorizer=OneToken())
    plain = create_serving_app([loaded_forest[0]], authorizer=OneToken())
    for app in (wired, plain):
        monkeypatch.setattr(app.state.metrics, "observe", _broken)
    request = _request(INFER, _body(loaded_forest[1][:1]), AUTH)
    with running(wired, http=protocol_for(wired)) as wire_url, running(plain) as plain_url:
        wire = _raw(wire_url, request, until_closed=True)
        asgi = _raw(plain_url, request, until_closed=True)
    assert wire.startswith(b"HTTP/1.1 500") and asgi.startswith(b"HTTP/1.1 500")
    assert wire.partition(b"\r\n\r\n")[2] == asgi.partition(b"\r\n\r\n")[2]
    assert b"connection: close" in wire


def _requests_by_status(app: ServingApp) -> dict[str, float]:
    counts: dict[str, float] = {}
    text = generate_latest(app.state.metrics.registry).decode()
    for family in text_string_to_metric_families(text):
        for sample in family.samples:
            if sample.name == "ghaf_serving_requests_total":
                status = sample.labels["status"]
                counts[status] = counts.get(status, 0) + sample.value
    return counts


def test_a_caller_that_goes_away_is_counted_the_same_on_both_doors(
    loaded_forest: tuple[Any, Array],
) -> None:
    # The hot path counted nothing for a caller that vanished mid-body, while the
    # observer counted it (as a 500); both count it now, as 499.
    wired = create_serving_app([loaded_forest[0]], authorizer=OneToken())
    plain = create_serving_app([loaded_forest[0]], authorizer=OneToken())
    head = _request(INFER, _body(loaded_forest[1][:2]), AUTH)
    cut = head[: head.index(b"\r\n\r\n") + 14]
    with running(wired, http=protocol_for(wired)) as wire_url, running(plain) as plain_url:
        for url in (wire_url, plain_url):
            with socket.create_connection(("127.0.0.1", _port(url)), timeout=5) as conn:
                conn.sendall(cut)
        deadline = time.monotonic() + 5
        while time.monotonic() < deadline:
            counted = [_requests_by_status(app) for app in (wired, plain)]
            if all(counted):
                break
            time.sleep(0.02)
    assert counted == [{"499": 1.0}, {"499": 1.0}]


def test_a_header_block_past_the_limit_in_one_read_is_refused(
    loaded_forest: tuple[Any, Array],
) -> None:
    # Header bytes were counted only when a read left the headers incomplete: 20 KB of
    # them in one write, against a limit of 8 KB, were answered 200.
    app = create_serving_app([loaded_forest[0]], authorizer=OneToken())
    junk = {f"x-junk-{i}": "x" * 1000 for i in range(20)}
    request = _request(INFER, _body(loaded_forest[1][:1]), {**AUTH, **junk})
    with running(app, http=protocol_for(app, max_header_bytes=8192)) as url:
        answer = _raw(url, request, until_closed=True)
        assert answer.startswith(b"HTTP/1.1 431")
        assert httpx.post(url + INFER, content=b"{}", headers=AUTH).status_code == 400
