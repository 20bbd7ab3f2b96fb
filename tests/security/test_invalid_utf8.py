"""Invalid UTF-8 in a name is refused everywhere it can arrive, never replaced: otherwise
``name%ff.txt`` and ``name%fe.txt`` both decode to ``name\ufffd.txt``, one object."""

from __future__ import annotations

import hashlib
import json

import httpx
import pytest

from ghaf.client import Client
from ghaf.core.errors import InvalidInput
from ghaf.server.encoding import encoding_problem
from tests.conftest import Platform


def _headers(platform: Platform, **extra: str) -> dict[str, str]:
    return {"Authorization": f"Bearer {platform.admin_token}", **extra}


def test_ff_and_fe_never_reach_the_same_object(
    platform: Platform, admin: Client, project: str
) -> None:
    base = f"{platform.url}/api/v1/projects/{project}/artifacts"
    put = httpx.put(
        f"{base}/name%ff.txt",
        content=b"secret",
        headers=_headers(platform, **{"X-Ghaf-SHA256": hashlib.sha256(b"secret").hexdigest()}),
    )
    assert put.status_code == 400
    problem = put.json()
    assert put.headers["content-type"].startswith("application/problem+json")
    assert problem["type"] == "urn:ghaf:problem:invalid-encoding" and problem["field"] == "path"
    assert problem["request_id"] == put.headers["x-request-id"]
    get = httpx.get(f"{base}/name%fe.txt", headers=_headers(platform))
    assert get.status_code == 400 and b"secret" not in get.content
    assert admin.artifacts.list(project) == []


@pytest.mark.parametrize(
    "url",
    [
        "/api/v1/projects/{p}/artifacts/a%ff",
        "/api/v1/projects/{p}/artifacts/%c3%28.txt",  # a broken two-byte sequence
        "/api/v1/projects/{p}/artifacts/%ed%a0%80.txt",  # an encoded surrogate
        "/api/v1/projects/{p}/artifacts/%c0%af.txt",  # an overlong '/'
        "/api/v1/projects/{p}/models/m%ff/versions/1",  # a hot route
        "/api/v1/projects/{p}/datasets/d%fe/versions/latest",
        "/api/v1/projects/{p}/artifacts?prefix=%ff",
        "/api/v1/projects/{p}/datasets/d/diff?before=1&after=%fe",
        "/api/v1/projects/%ff/artifacts",
    ],
)
def test_invalid_utf8_in_paths_and_queries_is_refused(
    platform: Platform, project: str, url: str
) -> None:
    response = httpx.get(platform.url + url.format(p=project), headers=_headers(platform))
    assert response.status_code == 400, response.text
    assert response.json()["type"] == "urn:ghaf:problem:invalid-encoding"


def test_invalid_utf8_is_refused_before_authentication(platform: Platform) -> None:
    response = httpx.get(f"{platform.url}/api/v1/projects/x/artifacts/%ff")
    assert response.status_code == 400


def test_valid_utf8_names_still_work(platform: Platform, admin: Client, project: str) -> None:
    admin.artifacts.upload(project, "données/é.txt", b"ok")
    assert admin.artifacts.read(project, "données/é.txt") == b"ok"
    response = httpx.get(
        f"{platform.url}/api/v1/projects/{project}/artifacts/donn%C3%A9es/%C3%A9.txt",
        headers=_headers(platform),
    )
    assert response.status_code == 200 and response.content == b"ok"


@pytest.mark.parametrize("value", ["name\ufffd.txt", "x\udcff.txt", "x\ud800"])
def test_replacement_characters_and_surrogates_in_json_bodies(
    admin: Client, project: str, value: str
) -> None:
    digest, _ = admin.artifacts.put_blob(project, b"content")
    body = json.dumps({"path": value, "sha256": digest})  # \uXXXX escapes
    with pytest.raises(InvalidInput) as info:
        admin.request(
            "POST",
            f"/api/v1/projects/{project}/artifacts:link",
            content=body.encode(),
            headers={"Content-Type": "application/json"},
        )
    # U+FFFD is refused by the name rule; a lone surrogate already by the JSON parser.
    assert info.value.field in ("path", "body")
    assert admin.artifacts.list(project) == []


def test_raw_invalid_utf8_json_body_is_a_client_error(platform: Platform, project: str) -> None:
    response = httpx.post(
        f"{platform.url}/api/v1/projects/{project}/artifacts:link",
        content=b'{"path": "a\xff.txt", "sha256": "' + b"0" * 64 + b'"}',
        headers=_headers(platform, **{"Content-Type": "application/json"}),
    )
    assert 400 <= response.status_code < 500, response.text


def test_the_check_itself() -> None:
    def scope(raw: bytes, query: bytes = b"") -> dict[str, object]:
        return {
            "type": "http",
            "path": raw.decode("latin-1"),
            "raw_path": raw,
            "query_string": query,
        }

    assert encoding_problem(scope(b"/a/%C3%A9")) is None
    assert encoding_problem(scope(b"/a", b"q=%C3%A9&x=1+2")) is None
    assert encoding_problem(scope(b"/a%ff")) is not None
    assert encoding_problem(scope(b"/a", b"q=%ff")) is not None
    assert encoding_problem(scope(b"/a\xff")) is not None  # raw, not even encoded
    assert encoding_problem({"type": "http", "path": "/a\ufffd"}) is not None
