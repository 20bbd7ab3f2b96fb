"""Every route of the app enforces authentication and tenancy: proven from the app itself.

The routes are read from the running app (``app.routes`` through FastAPI's route
contexts, mounts included, and the hot routes served before FastAPI's routing), never
from a hand-written list, and every method of every route is probed over HTTP:

- without a token, and with a forged one, it answers 401;
- with a valid token of a principal that belongs to *another* project only (a user who
  owns a project of their own, and a service account of that project), a route under a
  project answers 404, exactly what a project that does not exist answers; the path
  names real things of the victim project (its run, model, dataset, member, token, ...),
  so the 404 cannot come from "no such run";
- the platform-wide routes (users, groups, audit, admin, ...) answer a non-admin 403 or
  404, except the few that act on the caller itself (``SELF``), which must not mention
  anything of the victim project.

A route served without a token is allowed only when it is in ``ANONYMOUS``, with its
reason; a route that acts on the caller itself only when it is in ``SELF``. So a new route
is held to the strictest rule the moment it exists: it fails here until it enforces it,
or until a reviewed entry says why not. A new path parameter fails until the victim
project has a real value for it (``Victim.names``).
"""

from __future__ import annotations

import json
import re
from collections.abc import Iterator, Mapping
from dataclasses import dataclass, field
from typing import Any

import httpx
import pandas as pd
import pytest
from fastapi.routing import iter_route_contexts
from pydantic import TypeAdapter, ValidationError
from starlette.routing import Mount, Route

from ghaf.client import Client
from ghaf.deployments.flows import PROJECT_HEADER
from ghaf.security.tokens import generate_token
from ghaf.server.hot_routes import HotRoutes
from tests.conftest import Platform, TrainedModel, unique

Pair = tuple[str, str]  # (method, path template)

PROJECT_PREFIX = "/api/v1/projects/{project}"
OIP_MODELS = "/v2/models/"  # root OIP routes: the project is the x-ghaf-project header

ANONYMOUS: Mapping[Pair, tuple[int, str]] = {
    ("GET", "/"): (307, "redirects to the API docs page (names no resource)"),
    ("GET", "/docs"): (307, "redirects to the API docs page (names no resource)"),
    ("GET", "/healthz"): (200, "liveness probe for load balancers and supervisors"),
    ("GET", "/readyz"): (200, "readiness probe: names the database kind, nothing else"),
    ("GET", "/metrics"): (
        200,
        "Prometheus scrape target (route templates and counts only, no names or ids)",
    ),
    ("GET", "/api/v1/openapi.json"): (200, "the public API contract, the same for everyone"),
    ("HEAD", "/api/v1/openapi.json"): (200, "HEAD of the public API contract"),
    ("GET", "/api/v1/docs"): (200, "Swagger UI page; every call it makes needs a token"),
    ("HEAD", "/api/v1/docs"): (200, "HEAD of the Swagger UI page"),
    ("GET", "/api/v1/docs/oauth2-redirect"): (200, "Swagger UI's static OAuth2 redirect page"),
    ("HEAD", "/api/v1/docs/oauth2-redirect"): (200, "HEAD of the OAuth2 redirect page"),
    ("GET", "/api/v1/docs/swagger-ui-bundle.js"): (200, "Swagger UI's script (a static file)"),
    ("HEAD", "/api/v1/docs/swagger-ui-bundle.js"): (200, "HEAD of Swagger UI's script"),
    ("GET", "/api/v1/docs/swagger-ui.css"): (200, "Swagger UI's style sheet (a static file)"),
    ("HEAD", "/api/v1/docs/swagger-ui.css"): (200, "HEAD of Swagger UI's style sheet"),
    ("GET", "/api/v1/docs/favicon-32x32.png"): (200, "Swagger UI's icon (a static file)"),
    ("HEAD", "/api/v1/docs/favicon-32x32.png"): (200, "HEAD of Swagger UI's icon"),
    ("GET", "/v2"): (200, "OIP server metadata: ghaf's name, version and extensions only"),
    ("GET", "/v2/health/live"): (200, "OIP liveness probe (names no resource)"),
    ("GET", "/v2/health/ready"): (200, "OIP readiness probe (names no resource)"),
    ("POST", "/api/v1/auth/login"): (
        422,
        "exchanges a name and password for a token (as in OAuth): rate-limited per "
        "address and locked out per user; an empty body is the 422 of its schema",
    ),
}
"""Routes answered without a token: (the status a bare request gets, why it is public)."""

SELF: Mapping[Pair, tuple[frozenset[int], str]] = {
    ("GET", "/api/v1/whoami"): (frozenset({200}), "the caller reads itself"),
    ("GET", "/api/v1/tokens"): (frozenset({200}), "the caller's own tokens"),
    ("POST", "/api/v1/tokens"): (
        frozenset({201, 422}),
        "mints a token for the caller itself; a project-limited token (a service "
        "account's) must name its project, so this body is refused",
    ),
    ("DELETE", "/api/v1/tokens/{token}"): (
        frozenset({404}),
        "revokes one of the caller's own tokens: another principal's token name is unknown",
    ),
    ("GET", "/api/v1/projects"): (frozenset({200}), "lists only the projects the caller sees"),
    ("POST", "/api/v1/projects"): (
        frozenset({201, 403}),
        "any user may create a project and owns it; service accounts may not (403)",
    ),
}
"""Platform-wide routes that act on the caller itself: (what another project's member
may get, why). Their answers must not mention the victim project."""


@dataclass(frozen=True)
class Probe:
    """One (method, path template) of the app, and where it came from."""

    method: str
    path: str
    source: str  # "route", "mount" or "hot route"


def app_routes(app: Any) -> list[Probe]:
    """Every (method, path) the app routes, read from the app: FastAPI's included routers
    (through their route contexts), plain Starlette routes and mounts."""
    found: list[Probe] = []
    for context in iter_route_contexts(app.routes):
        route = context.original_route
        if isinstance(route, Mount):
            # A mounted app answers below its prefix, whatever its own routes are.
            found += [Probe(m, f"{route.path}/{{path:path}}", "mount") for m in ("GET", "HEAD")]
            continue
        if not isinstance(route, Route) or not context.methods:
            raise AssertionError(
                f"route {context.path!r} is a {type(route).__name__}: teach this test to probe it"
            )
        found += [Probe(method, str(context.path), "route") for method in sorted(context.methods)]
    return found


def hot_routes(app: Any) -> list[Probe]:
    """The routes served by the ``HotRoutes`` middleware of the running app."""
    layer = app.middleware_stack
    while layer is not None and not isinstance(layer, HotRoutes):
        layer = getattr(layer, "app", None)
    assert layer is not None, "the app has no HotRoutes middleware"
    return [Probe(route.method, route.path, "hot route") for route, _ in layer.routes]


@dataclass
class Victim:
    """A project with one of everything, owned by the platform admin."""

    project: str
    names: dict[str, str]  # path parameter -> a real value in the project
    query: dict[str, str]  # query parameter -> a value that makes the request valid
    fields: dict[str, object]  # body field -> a real value in the project
    words: tuple[str, ...]  # what an outsider's answer must never contain


@pytest.fixture(scope="module")
def victim(platform: Platform, trained: TrainedModel) -> Victim:
    admin = platform.admin
    project = admin.projects.create(unique("victim")).name
    member, _ = platform.new_user()
    admin.members.add(project, principal=member.name, role="member")
    user_token = admin.users.create_token(member.name, token_name=unique("tok")).name
    account = admin.service_accounts.create(project, unique("sa"), role="member").name
    account_token = admin.service_accounts.create_token(
        project, account, token_name=unique("tok")
    ).name
    artifact = admin.artifacts.upload(project, "docs/readme.txt", b"victim's notes")
    dataset = admin.datasets.create(project, unique("ds")).name
    admin.datasets.add_version(project, dataset, pd.DataFrame({"amount": [1.0, 2.0, 3.0]}))
    admin.datasets.set_alias(project, dataset, "champion", 1)
    experiment = admin.experiments.create(project, unique("exp")).name
    run = admin.runs.create(project, experiment).id
    admin.runs.log_artifact(project, run, b"run notes", path="notes.txt")
    model = unique("model")
    sample: Any = trained.X
    admin.models.register(project, model, path=trained.path, sample=sample[:3])
    admin.models.set_alias(project, model, "champion", 1)
    group = admin.groups.create(unique("grp")).name
    admin.groups.members.add(group, member.name)
    deployment = unique("dep")
    admin.deployments.create(project, deployment, variants=[_variant(model)])
    # A rollout that ended (its status is readable), then the A/B test (its report is).
    admin.deployments.start_rollout(
        project, deployment, {"name": "canary", "model": model, "version": 1}
    )
    admin.deployments.abort_rollout(project, deployment)
    admin.deployments.update(project, deployment, abtest={"kind": "binary", "control": "main"})
    names = {
        "project": project,
        "member": member.name,
        "user": member.name,
        "account": account,
        "token": account_token,
        "path": artifact.path,
        "sha256": artifact.sha256,
        "artifact_id": artifact.id,
        "dataset": dataset,
        "version": "1",
        "alias": "champion",
        "column": "amount",
        "experiment": experiment,
        "run": run,
        "model": model,
        "group": group,
        "deployment": deployment,
        "variant": "main",
        "revision": "1",
    }
    fields: dict[str, object] = {
        "principal": member.name,
        "member": member.name,
        "run": run,
        "dataset": dataset,
        "path": artifact.path,
        "sha256": artifact.sha256,
        "size": artifact.size,
        "version": 1,
        "password": unique("password-"),
    }
    words = (
        project,
        member.name,
        account,
        account_token,
        user_token,
        dataset,
        model,
        run,
        deployment,
    )
    query = {"before": "1", "after": "1", "project": project}
    return Victim(project, names, query, fields, words)


_PARAMETER = re.compile(r"\{(\w+)(?::\w+)?\}")


def fill(path: str, names: Mapping[str, str], *, project: str | None = None) -> str:
    """``path`` with each parameter replaced by the victim's real value (``project``
    overrides the project's)."""
    values = {**names, **({"project": project} if project else {})}

    def value(match: re.Match[str]) -> str:
        name = match.group(1)
        assert name in values, f"{path}: no real value for {{{name}}}; add one to Victim.names"
        return values[name]

    return _PARAMETER.sub(value, path)


def _variant(model: str) -> dict[str, object]:
    return {"name": "main", "model": model, "version": "@champion", "weight": 100}


BODIES: Mapping[Pair, object] = {
    ("PUT", PROJECT_PREFIX + "/model-policy"): {"text": "allow_pickle: false\n"},
    # A generated example cannot know that live weights must sum to 100.
    ("POST", PROJECT_PREFIX + "/deployments"): {
        "name": "probe",
        "variants": [_variant("m")],
    },
    ("PATCH", PROJECT_PREFIX + "/deployments/{deployment}"): {
        "variants": [_variant("m")],
    },
}
"""Hand-written valid bodies, for a route whose body :func:`example` cannot build (or
builds one that passes the schema but not the route's own parsing)."""


def send(
    http: httpx.Client,
    probe: Probe,
    url: str,
    shot: Shot | None = None,
    headers: Mapping[str, str] | None = None,
) -> httpx.Response:
    shot = shot or Shot({}, None)
    sent = {**shot.headers, **(headers or {})}
    return http.request(probe.method, url, params=shot.query, json=shot.body, headers=sent)


@dataclass(frozen=True)
class Shot:
    """What a probe sends besides its path: a valid query and a valid body."""

    query: dict[str, str]
    body: object  # JSON, None for none
    headers: dict[str, str] = field(default_factory=dict)


def shots(app: Any, victim: Victim) -> dict[Pair, Shot]:
    """For each route, a query and a body that pass its declared validation, with the
    victim's real names where a field is named like one. A request that FastAPI would
    refuse as invalid is answered by the problem handler's hidden-project check, not by
    the route's own door: a valid request is what proves the door."""
    found: dict[Pair, Shot] = {}
    for context in iter_route_contexts(app.routes):
        dependant = getattr(context, "dependant", None)
        if dependant is None:
            continue
        path = str(context.path)
        query: dict[str, str] = {}
        for param in _query_params(dependant):
            if param.name in victim.query:
                query[param.name] = victim.query[param.name]
            else:
                assert not param.field_info.is_required(), (
                    f"{path}: no value for its required query parameter "
                    f"{param.name!r}; add one to Victim.query"
                )
        assert len(dependant.body_params) <= 1, f"{path}: teach this test embedded bodies"
        for method in context.methods or ():
            body: object = None
            if dependant.body_params:
                annotation = dependant.body_params[0].field_info.annotation
                body = BODIES.get((method, path)) or _valid_example(annotation, victim, path)
            # The root OIP routes name their project in a header, not the path.
            headers = {PROJECT_HEADER: victim.project} if path.startswith(OIP_MODELS) else {}
            found[(method, path)] = Shot(query, body, headers)
    return found


def _valid_example(annotation: Any, victim: Victim, path: str) -> object:
    adapter = TypeAdapter(annotation)
    schema = adapter.json_schema()
    body = example(schema, schema.get("$defs", {}), victim.fields)
    try:
        adapter.validate_python(body)
    except ValidationError as error:
        raise AssertionError(
            f"{path}: the example body {body!r} is invalid ({error}); add one to BODIES"
        ) from None
    return body


def _resolve(schema: Mapping[str, Any], defs: Mapping[str, Any]) -> Mapping[str, Any]:
    if "$ref" in schema:
        return _resolve(defs[schema["$ref"].rsplit("/", 1)[-1]], defs)
    for key in ("anyOf", "oneOf", "allOf"):
        if key in schema:
            return _resolve(next(s for s in schema[key] if s.get("type") != "null"), defs)
    return schema


def _field(
    key: str, schema: Mapping[str, Any], defs: Mapping[str, Any], fields: Mapping[str, Any]
) -> object:
    """The value of property ``key``: the victim's, shaped as ``schema`` wants it (a list
    of it where a list is wanted), or an example where an object is wanted."""
    kind = _resolve(schema, defs).get("type")
    if key not in fields or kind == "object":
        return example(schema, defs, fields)
    return [fields[key]] if kind == "array" else fields[key]


def example(schema: Mapping[str, Any], defs: Mapping[str, Any], fields: Mapping[str, Any]) -> Any:
    """A small value that satisfies ``schema``: its required properties, and the optional
    ones named in ``fields`` (with the value given there)."""
    schema = _resolve(schema, defs)
    if "const" in schema:
        return schema["const"]
    if "enum" in schema:
        return schema["enum"][0]
    kind = schema.get("type")
    if kind == "object":
        properties = schema.get("properties", {})
        wanted = [*schema.get("required", ()), *(k for k in properties if k in fields)]
        return {key: _field(key, properties[key], defs, fields) for key in dict.fromkeys(wanted)}
    if kind == "array":
        return [example(schema["items"], defs, fields) for _ in range(schema.get("minItems", 0))]
    if kind == "string":
        text = unique("x")
        return (text + "a" * schema.get("minLength", 0))[: schema.get("maxLength", 64)]
    if kind in {"integer", "number"}:
        return schema.get("minimum", schema.get("exclusiveMinimum", 0) + 1)
    if kind == "boolean":
        return False
    return {}


def _query_params(dependant: Any) -> Iterator[Any]:
    yield from dependant.query_params
    for sub in dependant.dependencies:
        yield from _query_params(sub)


def _same_problem(answer: httpx.Response, missing: httpx.Response, victim: str, ghost: str) -> bool:
    """The two answers are one problem, up to the project name the caller typed (and the
    request id)."""

    def shape(response: httpx.Response, name: str) -> object:
        body = response.json() if response.content else {}
        if isinstance(body, dict):
            body.pop("request_id", None)
        return response.status_code, json.dumps(body, sort_keys=True).replace(name, "<project>")

    return shape(answer, victim) == shape(missing, ghost)


@pytest.fixture(scope="module")
def probes(platform: Platform) -> list[Probe]:
    routes = app_routes(platform.app)
    pairs = {(p.method, p.path) for p in routes}
    loose = [p for p in hot_routes(platform.app) if (p.method, p.path) not in pairs]
    assert loose == [], "hot routes must be routes of a router too (the same endpoint)"
    return routes


def test_the_reviewed_lists_name_routes_that_exist(probes: list[Probe]) -> None:
    pairs = {(p.method, p.path) for p in probes}
    assert set(ANONYMOUS) - pairs == set(), "stale ANONYMOUS entries"
    assert set(SELF) - pairs == set(), "stale SELF entries"
    assert set(ANONYMOUS) & set(SELF) == set()


def test_every_route_refuses_a_missing_or_forged_token(
    platform: Platform, victim: Victim, probes: list[Probe]
) -> None:
    shot = shots(platform.app, victim)
    wrong = []
    covered = 0
    with httpx.Client(base_url=platform.url) as http:
        for probe in probes:
            pair = (probe.method, probe.path)
            url = fill(probe.path, victim.names)
            expected = ANONYMOUS.get(pair)
            if expected is not None:
                # Public: a bare request is served (not refused for want of a token).
                answer = send(http, probe, url)
                if answer.status_code != expected[0]:
                    wrong.append((probe, "anonymous", answer.status_code, answer.text[:120]))
                continue
            covered += 1
            for label, headers in (
                ("no token", None),
                ("forged token", {"Authorization": f"Bearer {generate_token()}"}),
                ("not a bearer token", {"Authorization": "Basic YWRtaW46YWRtaW4="}),
            ):
                answer = send(http, probe, url, shot.get(pair), headers)
                if answer.status_code != 401 or not answer.headers["content-type"].startswith(
                    "application/problem+json"
                ):
                    wrong.append((probe, label, answer.status_code, answer.text[:120]))
    assert not wrong, "\n".join(map(str, wrong))
    print(f"\nroute coverage: {covered} (route, method) pairs answer 401 without a token")
    assert covered == len(probes) - len(ANONYMOUS)


def _outsiders(platform: Platform) -> dict[str, Client]:
    """A user who owns a project of their own and nothing else, and a service account of
    that project."""
    _, user = platform.new_user()
    own = user.projects.create(unique("own")).name
    account = user.service_accounts.create(own, unique("sa"), role="maintainer").name
    token = user.service_accounts.create_token(own, account, token_name="t").token
    return {"user": user, "service account": platform.client(token)}


@pytest.mark.parametrize("outsider_kind", ["user", "service account"])
def test_another_projects_member_learns_nothing(
    platform: Platform, victim: Victim, probes: list[Probe], outsider_kind: str
) -> None:
    outsider = _outsiders(platform)[outsider_kind]
    token = outsider._http.headers["Authorization"]
    shot = shots(platform.app, victim)
    ghost = unique("ghost")  # a project that does not exist
    wrong = []
    counts = {"project": 0, "platform": 0, "self": 0}
    with httpx.Client(base_url=platform.url, headers={"Authorization": token}) as http:
        for probe in probes:
            pair = (probe.method, probe.path)
            if pair in ANONYMOUS:
                continue
            url = fill(probe.path, victim.names)
            answer = send(http, probe, url, shot.get(pair))
            if probe.path.startswith(OIP_MODELS):
                # As a project route: the victim's project in the header answers exactly
                # as one that does not exist.
                counts["project"] += 1
                missing = send(http, probe, url, shot.get(pair), {PROJECT_HEADER: ghost})
                if answer.status_code != 404 or not _same_problem(
                    answer, missing, victim.project, ghost
                ):
                    wrong.append((probe, answer.status_code, answer.text[:160]))
            elif probe.path.startswith(PROJECT_PREFIX):
                counts["project"] += 1
                ghost_url = fill(probe.path, victim.names, project=ghost)
                missing = send(http, probe, ghost_url, shot.get(pair))
                if answer.status_code != 404 or not _same_problem(
                    answer, missing, victim.project, ghost
                ):
                    wrong.append((probe, answer.status_code, answer.text[:160]))
            elif pair in SELF:
                counts["self"] += 1
                sent = str(answer.request.url) + answer.request.content.decode()
                leaked = [w for w in victim.words if w in answer.text and w not in sent]
                if answer.status_code not in SELF[pair][0] or leaked:
                    wrong.append((probe, answer.status_code, answer.text[:160]))
            else:
                # Platform-wide and not about the caller: platform admins only.
                counts["platform"] += 1
                if answer.status_code not in {403, 404}:
                    wrong.append((probe, answer.status_code, answer.text[:160]))
    assert not wrong, "\n".join(map(str, wrong))
    print(f"\nroute coverage ({outsider_kind}): {counts}")
    assert counts["project"] > 60 and counts["platform"] > 15


def test_the_probed_paths_name_real_things(
    platform: Platform, victim: Victim, probes: list[Probe]
) -> None:
    """The control: the victim's owner reads every probed path successfully, so an
    outsider's 404 is about the outsider, not about a name that does not exist."""
    shot = shots(platform.app, victim)
    wrong = []
    headers = {"Authorization": f"Bearer {platform.admin_token}"}
    with httpx.Client(base_url=platform.url, headers=headers, timeout=60) as http:
        for probe in probes:
            pair = (probe.method, probe.path)
            if probe.method != "GET" or pair in ANONYMOUS:
                continue
            answer = send(http, probe, fill(probe.path, victim.names), shot.get(pair))
            if not answer.is_success:
                wrong.append((probe, answer.status_code, answer.text[:160]))
    assert not wrong, "\n".join(map(str, wrong))
