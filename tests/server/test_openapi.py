"""The OpenAPI document is a contract (ghaf/server/openapi.py): errors, auth, names, bodies,
links and the offline docs page, checked on the document the live server serves."""

from __future__ import annotations

import re
from html.parser import HTMLParser
from typing import Any

import httpx
import jsonschema_rs
import pytest

from ghaf.core.errors import InvalidInput
from ghaf.core.names import MAX_NAME_LENGTH, NAME_PATTERN, validate_name
from ghaf.server.app import ANONYMOUS_PATHS, API_PREFIX, DOCS_URL
from ghaf.server.openapi import refs
from ghaf.server.problems import PROBLEM_JSON, PROBLEM_SCHEMA
from ghaf.tracking.batches import MEDIA_TYPE as ARROW
from tests.conftest import Platform, unique

METHODS = {"get", "put", "post", "patch", "delete"}


@pytest.fixture(scope="module")
def spec(platform: Platform) -> dict[str, Any]:
    answer = httpx.get(f"{platform.url}{API_PREFIX}/openapi.json")
    assert answer.status_code == 200
    document: dict[str, Any] = answer.json()
    return document


def _operations(spec: dict[str, Any]) -> list[tuple[str, str, dict[str, Any]]]:
    return [
        (path, method, operation)
        for path, item in spec["paths"].items()
        for method, operation in item.items()
        if method in METHODS
    ]


def _guarded(path: str) -> bool:
    return path.startswith(API_PREFIX + "/") and path not in ANONYMOUS_PATHS


def _headers(platform: Platform) -> dict[str, str]:
    return {"Authorization": f"Bearer {platform.admin_token}"}


def test_every_error_response_is_the_one_problem_schema(spec: dict[str, Any]) -> None:
    assert spec["components"]["schemas"]["Problem"] == PROBLEM_SCHEMA
    assert "HTTPValidationError" not in spec["components"]["schemas"]
    wrong = []
    for path, method, operation in _operations(spec):
        for status, response in operation["responses"].items():
            if int(status) >= 400 and response.get("content") != {
                PROBLEM_JSON: {"schema": {"$ref": "#/components/schemas/Problem"}}
            }:
                wrong.append((method, path, status))
    assert wrong == []


def test_operations_declare_the_statuses_they_answer(spec: dict[str, Any]) -> None:
    missing = []
    for path, method, operation in _operations(spec):
        statuses = {int(s) for s in operation["responses"]}
        expected = {400}
        if _guarded(path):
            expected |= {401, 403}
        if operation.get("parameters") or "requestBody" in operation:
            expected.add(422)
        if "requestBody" in operation:
            expected.add(413)
        if _guarded(path) and any(p["in"] == "path" for p in operation.get("parameters", [])):
            expected.add(404)
        if _guarded(path) and method != "get":
            expected.add(409)
        if not expected <= statuses:
            missing.append((method, path, sorted(expected - statuses)))
    assert missing == []
    login = spec["paths"][f"{API_PREFIX}/auth/login"]["post"]["responses"]
    assert {"401", "429"} <= set(login) and "Retry-After" in login["429"]["headers"]
    assert "503" in spec["paths"]["/readyz"]["get"]["responses"]
    artifact = spec["paths"][f"{API_PREFIX}/projects/{{project}}/artifacts/{{path}}"]["get"]
    assert {"206", "416"} <= set(artifact["responses"])


def test_bearer_on_every_operation_but_the_anonymous_ones(spec: dict[str, Any]) -> None:
    scheme = spec["components"]["securitySchemes"]["bearer"]
    assert scheme == scheme | {"type": "http", "scheme": "bearer"}
    assert spec["security"] == [{"bearer": []}]
    anonymous = sorted(
        (m, p) for p, m, op in _operations(spec) if op.get("security", spec["security"]) == []
    )
    assert anonymous == [
        ("get", "/healthz"),
        ("get", "/metrics"),
        ("get", "/readyz"),
        ("post", f"{API_PREFIX}/auth/login"),
    ]
    assert all(
        op.get("security", spec["security"]) == [{"bearer": []}]
        for p, _, op in _operations(spec)
        if _guarded(p)
    )


def test_no_reference_dangles(spec: dict[str, Any]) -> None:
    schemas = spec["components"]["schemas"]
    found = list(refs(spec))
    assert len(found) > 100
    dangling = [r for r in found if r.removeprefix("#/components/schemas/") not in schemas]
    assert dangling == []


def test_operation_ids_are_short_and_unique(spec: dict[str, Any]) -> None:
    ids = [op["operationId"] for _, _, op in _operations(spec)]
    assert len(ids) == len(set(ids))
    assert "create_project" in ids and "log_batch" in ids
    assert {"datasets_get_version", "registry_get_version"} <= set(ids)


def test_bodies_parsed_by_hand_have_their_schemas(spec: dict[str, Any]) -> None:
    log = spec["paths"][f"{API_PREFIX}/projects/{{project}}/runs/{{run}}:log"]["post"]
    content = log["requestBody"]["content"]
    assert content["application/json"]["schema"] == {"$ref": "#/components/schemas/LogRequest"}
    assert content[ARROW]["schema"]["format"] == "binary"
    assert "LogRequest" in spec["components"]["schemas"]
    assert "MetricColumns" in spec["components"]["schemas"]
    for path, method, operation in _operations(spec):
        assert all(
            c.get("schema") for c in operation.get("requestBody", {}).get("content", {}).values()
        ), (method, path)


def test_downloads_document_their_media_types(spec: dict[str, Any]) -> None:
    def content(path: str) -> set[str]:
        return set(spec["paths"][path]["get"]["responses"]["200"]["content"])

    p = f"{API_PREFIX}/projects/{{project}}"
    assert content(f"{p}/blobs/{{sha256}}") == {"application/octet-stream"}
    assert content(f"{p}/artifacts/{{path}}") == {"application/json", "application/octet-stream"}
    assert content(f"{p}/models/{{model}}/versions/{{version}}/file") == {
        "application/octet-stream"
    }
    assert content(f"{API_PREFIX}/audit:export") == {"application/x-ndjson"}


def test_name_rules_are_in_bodies_and_paths(spec: dict[str, Any]) -> None:
    name = spec["components"]["schemas"]["ProjectCreate"]["properties"]["name"]
    assert name["pattern"] == NAME_PATTERN and name["maxLength"] == MAX_NAME_LENGTH
    for path, method, operation in _operations(spec):
        for parameter in operation.get("parameters", []):
            if parameter["in"] == "path" and parameter["name"] in ("project", "model", "user"):
                assert parameter["schema"]["pattern"] == NAME_PATTERN, (method, path)


@pytest.mark.parametrize(
    "value",
    ["a", "A-1.b_c", "9" * MAX_NAME_LENGTH, "", "-a", "a/b", "a..b", "a b", "é", "a\x00", "9" * 65],
)
def test_the_pattern_says_what_validate_name_does(value: str) -> None:
    """The documented rule and the enforced one agree (a client can check before it sends)."""
    documented = re.fullmatch(NAME_PATTERN.removeprefix("^").removesuffix("$"), value) is not None
    documented = documented and len(value) <= MAX_NAME_LENGTH
    try:
        validate_name(value)
        enforced = True
    except InvalidInput:
        enforced = False
    assert documented == enforced


def test_links_lead_from_creates_to_the_next_calls(spec: dict[str, Any]) -> None:
    by_id = {op["operationId"]: op for _, _, op in _operations(spec)}
    links = {
        op["operationId"]: link
        for _, _, op in _operations(spec)
        for response in op["responses"].values()
        for link in [response.get("links")]
        if link
    }
    for source in ("create_project", "create_experiment", "create_run", "create_model"):
        assert source in links, source
    assert links["create_run"]["LogBatch"]["operationId"] == "log_batch"
    assert links["create_model"]["RegisterVersion"]["operationId"] == "register_version"
    for source, named in links.items():
        for name, link in named.items():
            target = by_id[link["operationId"]]
            parameters = {p["name"] for p in target.get("parameters", []) if p["in"] == "path"}
            assert set(link["parameters"]) == parameters, (source, name)


class _Urls(HTMLParser):
    def __init__(self) -> None:
        super().__init__()
        self.urls: list[str] = []

    def handle_starttag(self, tag: str, attrs: list[tuple[str, str | None]]) -> None:
        self.urls += [v for k, v in attrs if k in ("src", "href") and v is not None]


def test_docs_are_served_offline(platform: Platform) -> None:
    with httpx.Client(base_url=platform.url) as http:  # no token: the docs are anonymous
        page = http.get(DOCS_URL)
        assert page.status_code == 200 and page.headers["content-type"].startswith("text/html")
        parser = _Urls()
        parser.feed(page.text)
        assert len(parser.urls) >= 3
        for url in parser.urls:
            # Same origin: an absolute path, never another host (nor a scheme-relative //).
            assert url.startswith("/") and not url.startswith("//"), url
            asset = http.get(url)
            assert asset.status_code == 200 and asset.content, url
        assert not re.search(r"(https?:)?//[a-z0-9.-]+\.[a-z]{2,}", page.text), page.text
        assert '"validatorUrl": null' in page.text  # no badge fetched from swagger.io
        assert f"'{API_PREFIX}/openapi.json'" in page.text
        js = http.get(f"{DOCS_URL}/swagger-ui-bundle.js")
        assert js.headers["content-type"].startswith("text/javascript")
        assert http.get(f"{DOCS_URL}/oauth2-redirect").status_code == 200


@pytest.mark.parametrize(
    "body", [b"{bad", b'{"name": "\xff"}', b"\xff\xfe"], ids=["not-json", "not-utf8", "bom"]
)
def test_a_malformed_body_is_one_documented_problem(
    platform: Platform, project: str, body: bytes
) -> None:
    run = httpx.post(
        f"{platform.url}{API_PREFIX}/projects/{project}/experiments/{unique('e')}/runs",
        json={},
        headers=_headers(platform),
    ).json()["id"]
    for path in ("/projects", f"/projects/{project}/runs/{run}:log", f"/projects/{project}/models"):
        answer = httpx.post(
            f"{platform.url}{API_PREFIX}{path}",
            content=body,
            headers={**_headers(platform), "Content-Type": "application/json"},
        )
        assert answer.status_code == 400, (path, answer.text)
        assert answer.headers["content-type"] == PROBLEM_JSON
        problem = answer.json()
        assert problem["type"] == "urn:ghaf:problem:malformed-body", problem
        assert problem["title"] == "Malformed request body" and problem["field"] == "body"
        jsonschema_rs.validate(PROBLEM_SCHEMA, problem)


def test_problems_validate_against_the_schema(platform: Platform, project: str) -> None:
    with httpx.Client(base_url=platform.url + API_PREFIX, headers=_headers(platform)) as http:
        answers = [
            httpx.get(f"{platform.url}{API_PREFIX}/projects"),  # 401
            http.get(f"/projects/{unique('missing')}"),  # 404
            http.post("/projects", json={"name": "a..b"}),  # 422
            http.post("/projects", json={"name": project}),  # 409
            http.get(f"/projects/{project}/artifacts/x%ff"),  # 400 invalid-encoding
        ]
    assert [a.status_code for a in answers] == [401, 404, 422, 409, 400]
    for answer in answers:
        assert answer.headers["content-type"] == PROBLEM_JSON
        jsonschema_rs.validate(PROBLEM_SCHEMA, answer.json())
