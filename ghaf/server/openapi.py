"""The OpenAPI document as a contract that generated clients and fuzzers can trust.

FastAPI derives the paths, parameters and bodies from the routes; this module adds what
it cannot know, once, for every route alike (so a new route is documented correctly
without a line here):

* every error response of every operation: ``application/problem+json`` with the one
  RFC 9457 schema ``components/schemas/Problem`` (what ghaf/server/problems.py emits), for
  each status the operation can answer, by the rules in :func:`_error_statuses`; a route
  adds a status of its own (416 for a bad ``Range``) with ``responses={416: {...}}`` and
  gets the same problem content;
* the ``bearer`` HTTP security scheme, on every operation but the anonymous ones;
* the name rule (ghaf/core/names.py) on the path parameters that are names, as request
  bodies already carry it through ``Name``;
* schemas that routes parsing their own body refer to (``x-ghaf-components``, see
  :func:`ghaf.platform.calls.body_components`);
* ``links`` from what a create returns to the calls that take it next (stateful
  testing follows them);
* short operation ids (the endpoint's name, with its tag where two domains share one).

Any ``$ref`` left pointing nowhere is a bug: ``tests/server/test_openapi.py`` checks.
"""

from __future__ import annotations

import copy
import re
from collections import Counter
from collections.abc import Collection, Iterator
from typing import Any

from fastapi import FastAPI
from fastapi.openapi.utils import get_openapi

from ghaf.core.names import MAX_NAME_LENGTH, NAME_PATTERN, NAME_SCHEMA
from ghaf.server.problems import PROBLEM_JSON, PROBLEM_SCHEMA

__all__ = ["contract", "install"]

PROBLEM_REF = {"$ref": "#/components/schemas/Problem"}
SECURITY_SCHEME = "bearer"
COMPONENTS_KEY = "x-ghaf-components"
_WRITE_METHODS = frozenset({"post", "put", "patch", "delete"})

ERROR_DESCRIPTIONS: dict[int, str] = {
    400: "Malformed request: the body is not valid JSON in UTF-8 or not the declared "
    "binary format (`malformed-body`), or the path or query is not valid UTF-8 once "
    "percent-decoded (`invalid-encoding`).",
    401: "No token, or one that is unknown, expired or revoked (`unauthenticated`).",
    403: "The caller's role lacks the permission, the token is read-only or limited to "
    "another project, or the data may not live in that region (`permission-denied`).",
    404: "No such resource, or one the caller may not see (`not-found`): a project "
    "outside the caller's memberships answers exactly like one that does not exist.",
    409: "It exists already, or its state does not allow the change (`conflict`).",
    408: "The body arrived too slowly: the connection is closed (`request-timeout`).",
    413: "The body is larger than this route accepts (`payload-too-large`).",
    416: "The Range header is not one satisfiable `bytes=a-b` (`range-not-satisfiable`).",
    422: "A parameter or body field failed validation (`invalid-input`): `field` names "
    "the first, `errors` lists every one.",
    429: "Too many attempts: retry after `Retry-After` seconds (`too-many-requests`).",
    502: "Stored data failed an integrity check on its way out: damaged or tampered with "
    "at rest (`integrity-failure`).",
    503: "Not ready: the database is unreachable or its schema outdated (`unavailable`, "
    "`schema-outdated`).",
}
_HEADERS: dict[int, dict[str, Any]] = {
    401: {"WWW-Authenticate": {"schema": {"type": "string"}, "description": "`Bearer`."}},
    429: {
        "Retry-After": {
            "schema": {"type": "integer", "minimum": 1},
            "description": "Seconds to wait before trying again.",
        }
    },
}

# Path parameters named by convention (docs/conventions.md) whose values are names.
_NAME_PARAMETERS = frozenset(
    {"project", "user", "group", "experiment", "dataset", "model", "account", "alias", "token"}
)
_MEMBER_SCHEMA = {
    "type": "string",
    "minLength": 1,
    "maxLength": len("group:") + MAX_NAME_LENGTH,
    "pattern": "^(group:)?" + NAME_PATTERN.removeprefix("^"),
    "description": "A principal's name, or `group:NAME` for a group.",
}
_PATH_SCHEMAS: dict[str, dict[str, Any]] = {
    "version": {
        **NAME_SCHEMA,
        "description": "A version number, `latest` or an alias.",
    },
    "sha256": {"type": "string", "pattern": "^[0-9a-f]{64}$", "description": "Hex SHA-256."},
}


def install(app: FastAPI, *, prefix: str, anonymous: Collection[str]) -> None:
    """Serve :func:`contract` as the app's OpenAPI document (built once, on first use)."""

    def openapi() -> dict[str, Any]:
        if app.openapi_schema is None:
            app.openapi_schema = contract(app, prefix=prefix, anonymous=anonymous)
        return app.openapi_schema

    app.openapi = openapi  # type: ignore[method-assign]


def contract(app: FastAPI, *, prefix: str, anonymous: Collection[str]) -> dict[str, Any]:
    """The app's OpenAPI document with the additions the module docstring lists."""
    doc = get_openapi(
        title=app.title,
        version=app.version,
        openapi_version=app.openapi_version,
        description=app.description,
        routes=app.routes,
        tags=app.openapi_tags,
        servers=app.servers,
        separate_input_output_schemas=app.separate_input_output_schemas,
    )
    schemas: dict[str, Any] = doc.setdefault("components", {}).setdefault("schemas", {})
    _hoist_declared_components(doc, schemas)
    _readable_component_names(doc)
    schemas["Problem"] = copy.deepcopy(PROBLEM_SCHEMA)
    # FastAPI's own 422 shape is never answered (the handlers render a Problem instead).
    for unused in ("HTTPValidationError", "ValidationError"):
        schemas.pop(unused, None)
    doc["components"]["securitySchemes"] = {
        SECURITY_SCHEME: {
            "type": "http",
            "scheme": "bearer",
            "description": "An API token: `ghaf tokens create`, or `POST "
            f"{prefix}/auth/login` with a user name and password.",
        }
    }
    doc["security"] = [{SECURITY_SCHEME: []}]
    ids = _operation_ids(doc)
    for path, method, operation in _operations(doc):
        guarded = path.startswith(prefix + "/") and path not in anonymous
        if not guarded:
            operation["security"] = []  # health, metrics, login: no token
        if (path, method) in ids:
            operation["operationId"] = ids[(path, method)]
        _name_rules(operation)
        _drop_placeholder_content(operation)
        _document_errors(operation, _error_statuses(path, method, operation, guarded=guarded))
    _add_links(doc, prefix)
    return doc


# --- the pieces --------------------------------------------------------------------------


def _operations(doc: dict[str, Any]) -> Iterator[tuple[str, str, dict[str, Any]]]:
    for path, item in doc.get("paths", {}).items():
        for method, operation in item.items():
            if method in {"get", "put", "post", "delete", "patch", "head", "options"}:
                yield path, method, operation


def _hoist_declared_components(doc: dict[str, Any], schemas: dict[str, Any]) -> None:
    """Move the schemas routes declare for bodies they parse themselves into components
    (their ``$defs`` too, as siblings), so their ``$ref`` resolves."""
    for _path, _method, operation in _operations(doc):
        for name, schema in operation.pop(COMPONENTS_KEY, {}).items():
            schema = copy.deepcopy(schema)
            for sub_name, sub_schema in schema.pop("$defs", {}).items():
                schemas.setdefault(sub_name, sub_schema)
            schemas[name] = schema


_QUALIFIED = re.compile(r"ghaf__(?P<domain>\w+?)__schemas__(?P<name>\w+)")
_QUALIFIED_PAGE = re.compile(r"ghaf__core__paging__Page_\w+?___\d+")


def _readable_component_names(doc: dict[str, Any]) -> None:
    """Two domains' models of one name (``VersionOut`` of datasets and of the registry)
    come out of FastAPI as ``ghaf__datasets__schemas__VersionOut`` with the same title,
    on which generators make one class of two. Name them by domain instead
    (``DatasetsVersionOut``, ``Page_RegistryVersionOut_``), titles included."""
    schemas: dict[str, Any] = doc["components"]["schemas"]
    renamed: dict[str, str] = {}
    titles: dict[str, str] = {}
    for key in list(schemas):
        match = _QUALIFIED.fullmatch(key)
        if match:
            domain = "".join(p.capitalize() for p in match["domain"].split("__"))
            renamed[key] = titles[key] = f"{domain}{match['name']}"
    for key in list(schemas):
        if _QUALIFIED_PAGE.fullmatch(key):
            item = schemas[key].get("properties", {}).get("items", {}).get("items", {})
            inner = str(item.get("$ref", "")).rsplit("/", 1)[-1]
            if inner:
                inner = renamed.get(inner, inner)
                renamed[key], titles[key] = f"Page_{inner}_", f"Page[{inner}]"
    if len(set(renamed.values())) != len(renamed) or set(renamed.values()) & set(schemas):
        return  # would collide: keep FastAPI's names
    for old, new in renamed.items():
        schemas[new] = schemas.pop(old)
        schemas[new]["title"] = titles[old]
    targets = {f"#/components/schemas/{o}": f"#/components/schemas/{n}" for o, n in renamed.items()}
    _rewrite_refs(doc, targets)


def _rewrite_refs(node: Any, targets: dict[str, str]) -> None:
    if isinstance(node, dict):
        ref = node.get("$ref")
        if isinstance(ref, str) and ref in targets:
            node["$ref"] = targets[ref]
        for value in node.values():
            _rewrite_refs(value, targets)
    elif isinstance(node, list):
        for item in node:
            _rewrite_refs(item, targets)


def _operation_ids(doc: dict[str, Any]) -> dict[tuple[str, str], str]:
    """The endpoint's name; prefixed with its first tag where domains share a name
    (``datasets_get_version``, ``registry_get_version``).

    FastAPI's ids are ``<name><path>_<method>`` with non-word characters as ``_``: the
    name is what precedes that suffix. An id of another form is left as it is.
    """
    names: dict[tuple[str, str], tuple[str, str]] = {}
    for path, method, operation in _operations(doc):
        generated = str(operation.get("operationId", ""))
        suffix = re.sub(r"\W", "_", path) + "_" + method
        if generated.endswith(suffix) and len(generated) > len(suffix):
            tag = str((operation.get("tags") or ["api"])[0])
            names[(path, method)] = (generated.removesuffix(suffix), tag)
    counts = Counter(name for name, _ in names.values())
    ids = {
        key: name if counts[name] == 1 else f"{re.sub(r'[^a-z0-9]+', '_', tag.lower())}_{name}"
        for key, (name, tag) in names.items()
    }
    if len(set(ids.values())) != len(ids):  # a tag does not tell two apart: keep FastAPI's
        return {}
    return ids


def _name_rules(operation: dict[str, Any]) -> None:
    for parameter in operation.get("parameters", []):
        if parameter.get("in") != "path":
            continue
        name = parameter["name"]
        rule: dict[str, Any] | None = None
        if name in _NAME_PARAMETERS:
            rule = dict(NAME_SCHEMA)
        elif name == "member":
            rule = dict(_MEMBER_SCHEMA)
        elif name in _PATH_SCHEMAS:
            rule = dict(_PATH_SCHEMAS[name])
        if rule is None:
            continue
        title = parameter.get("schema", {}).get("title")
        parameter["schema"] = {**rule, **({"title": title} if title else {})}
        parameter.setdefault("description", rule.get("description", ""))


def _drop_placeholder_content(operation: dict[str, Any]) -> None:
    """An endpoint that returns a ``Response`` gets FastAPI's ``application/json`` with an
    empty schema; where the route documents its real media types, that one is false."""
    for status, response in operation.get("responses", {}).items():
        content = response.get("content", {})
        placeholder = content.get("application/json", {}).get("schema")
        if status.startswith("2") and len(content) > 1 and placeholder in ({}, {"type": "string"}):
            del content["application/json"]


def _error_statuses(
    path: str, method: str, operation: dict[str, Any], *, guarded: bool
) -> set[int]:
    """What an operation can answer besides its successes, from what guards it:

    * 400 anywhere (a path or query that is not UTF-8 is refused before routing);
    * 408, 413 and 400 where there is a body; 422 where there are parameters or a body;
    * behind a token: 401, 403, 502 (stored data failing its check on the way out); 404
      where a parameter or the body may name something that does not exist; 409 on
      writes;
    * the login: 401 and 429; readiness: 503.
    """
    statuses = {400}
    if operation.get("parameters") or "requestBody" in operation:
        statuses.add(422)
    if "requestBody" in operation:
        statuses |= {408, 413}
    if guarded:
        statuses |= {401, 403, 502}
        if operation.get("parameters") or "requestBody" in operation:
            statuses.add(404)  # whatever names a project, a run, a user... may not exist
        if method in _WRITE_METHODS:
            statuses.add(409)
    elif path.endswith("/auth/login"):
        statuses |= {401, 429, 502}
    elif path == "/readyz":
        statuses.add(503)
    return statuses


def _document_errors(operation: dict[str, Any], statuses: set[int]) -> None:
    responses: dict[str, Any] = operation.setdefault("responses", {})
    declared = {int(s) for s in responses if s.isdigit() and int(s) >= 400}
    for status in sorted(statuses | declared):
        response = responses.setdefault(str(status), {})
        response["description"] = ERROR_DESCRIPTIONS.get(
            status, response.get("description") or "A problem."
        )
        response["content"] = {PROBLEM_JSON: {"schema": dict(PROBLEM_REF)}}
        if status in _HEADERS:
            response["headers"] = copy.deepcopy(_HEADERS[status])
    operation["responses"] = dict(sorted(responses.items()))


# --- links ---------------------------------------------------------------------------------

_P = "$request.path.project"
_Link = tuple[str, str, str, dict[str, str]]  # name, method, path (below the prefix), params
_LINKS: dict[tuple[str, str], list[_Link]] = {
    ("post", "/projects"): [
        ("GetProject", "get", "/projects/{project}", {"project": "$response.body#/name"}),
        ("UpdateProject", "patch", "/projects/{project}", {"project": "$response.body#/name"}),
        ("ListMembers", "get", "/projects/{project}/members", {"project": "$response.body#/name"}),
        (
            "CreateExperiment",
            "post",
            "/projects/{project}/experiments",
            {"project": "$response.body#/name"},
        ),
        ("CreateModel", "post", "/projects/{project}/models", {"project": "$response.body#/name"}),
        (
            "CreateDataset",
            "post",
            "/projects/{project}/datasets",
            {"project": "$response.body#/name"},
        ),
    ],
    ("post", "/projects/{project}/experiments"): [
        (
            "GetExperiment",
            "get",
            "/projects/{project}/experiments/{experiment}",
            {"project": _P, "experiment": "$response.body#/name"},
        ),
        (
            "CreateRun",
            "post",
            "/projects/{project}/experiments/{experiment}/runs",
            {"project": _P, "experiment": "$response.body#/name"},
        ),
    ],
    ("post", "/projects/{project}/experiments/{experiment}/runs"): [
        (
            name,
            method,
            "/projects/{project}/runs/{run}" + tail,
            {"project": _P, "run": "$response.body#/id"},
        )
        for name, method, tail in (
            ("GetRun", "get", ""),
            ("UpdateRun", "patch", ""),
            ("LogBatch", "post", ":log"),
            ("MetricHistory", "get", "/metrics"),
            ("AddArtifact", "post", "/artifacts"),
            ("ListArtifacts", "get", "/artifacts"),
            ("AddInput", "post", "/inputs"),
        )
    ],
    ("post", "/projects/{project}/models"): [
        (
            name,
            method,
            "/projects/{project}/models/{model}" + tail,
            {"project": _P, "model": "$response.body#/name"},
        )
        for name, method, tail in (
            ("GetModel", "get", ""),
            ("RegisterVersion", "post", "/versions"),
            ("ListVersions", "get", "/versions"),
        )
    ],
    ("post", "/projects/{project}/models/{model}/versions"): [
        (
            name,
            method,
            "/projects/{project}/models/{model}/versions/{version}" + tail,
            {"project": _P, "model": "$request.path.model", "version": "$response.body#/version"},
        )
        for name, method, tail in (
            ("GetVersion", "get", ""),
            ("UpdateVersion", "patch", ""),
            ("GetCard", "get", "/card"),
            ("RequestApproval", "post", ":request-approval"),
            ("Lineage", "get", "/lineage"),
        )
    ],
    ("post", "/projects/{project}/datasets"): [
        (
            name,
            method,
            "/projects/{project}/datasets/{dataset}" + tail,
            {"project": _P, "dataset": "$response.body#/name"},
        )
        for name, method, tail in (
            ("GetDataset", "get", ""),
            ("CreateVersion", "post", "/versions"),
            ("ListVersions", "get", "/versions"),
        )
    ],
    ("post", "/projects/{project}/datasets/{dataset}/versions"): [
        (
            name,
            "get",
            "/projects/{project}/datasets/{dataset}/versions/{version}" + tail,
            {
                "project": _P,
                "dataset": "$request.path.dataset",
                "version": "$response.body#/version",
            },
        )
        for name, tail in (("GetVersion", ""), ("ListFiles", "/files"), ("Lineage", "/lineage"))
    ],
    ("post", "/projects/{project}/service-accounts"): [
        (
            name,
            method,
            "/projects/{project}/service-accounts/{account}/tokens",
            {"project": _P, "account": "$response.body#/name"},
        )
        for name, method in (("CreateToken", "post"), ("ListTokens", "get"))
    ],
    ("put", "/projects/{project}/blobs/{sha256}"): [
        (
            "GetBlob",
            "get",
            "/projects/{project}/blobs/{sha256}",
            {"project": _P, "sha256": "$response.body#/sha256"},
        )
    ],
    ("post", "/users"): [
        ("GetUser", "get", "/users/{user}", {"user": "$response.body#/name"}),
        ("CreateUserToken", "post", "/users/{user}/tokens", {"user": "$response.body#/name"}),
    ],
    ("post", "/groups"): [
        ("GetGroup", "get", "/groups/{group}", {"group": "$response.body#/name"}),
        ("AddGroupMember", "post", "/groups/{group}/members", {"group": "$response.body#/name"}),
    ],
}


def _add_links(doc: dict[str, Any], prefix: str) -> None:
    """``links`` on each create's success response, naming operations by id. A link to an
    operation the app does not have (a domain left out) is left out too."""
    paths = doc.get("paths", {})

    def operation_id(method: str, path: str) -> str | None:
        found = paths.get(prefix + path, {}).get(method)
        return found.get("operationId") if found else None

    for (method, path), links in _LINKS.items():
        source = paths.get(prefix + path, {}).get(method)
        if source is None:
            continue
        success = next((s for s in sorted(source["responses"]) if s.startswith("2")), None)
        if success is None:
            continue
        documented: dict[str, Any] = {}
        for name, target_method, target_path, parameters in links:
            target = operation_id(target_method, target_path)
            if target is not None:
                documented[name] = {"operationId": target, "parameters": dict(parameters)}
        if documented:
            source["responses"][success]["links"] = documented


def refs(node: Any) -> Iterator[str]:
    """Every ``$ref`` in ``node`` (for checking that none dangles)."""
    if isinstance(node, dict):
        for key, value in node.items():
            if key == "$ref" and isinstance(value, str):
                yield value
            else:
                yield from refs(value)
    elif isinstance(node, list):
        for item in node:
            yield from refs(item)
