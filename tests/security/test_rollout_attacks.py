"""Canary rollouts, traffic tallies, deployment metrics and shadow logs under attack.

- every project role against the rollout routes and ``deployments:metrics``: exactly the
  documented permissions (deployment:write to start or abort, deployment:read to read),
  refusals a 403 naming the permission, nothing changed by a refusal;
- hostile names and hostile bodies: a clear 4xx naming the field, never a 500, nothing
  stored;
- damaged and deleted rows (the rollout's own, the traffic tallies, the deployment's
  current revision): a clear answer (502 for damage) or the junk ignored, never a 500;
  the scheduler's ``advance_rollouts`` never raises and never holds other rollouts up,
  and never writes a damaged revision itself;
- the anonymous ``/metrics`` carries no tenant's names; another project's member cannot
  read a project's metrics (404, as for a missing project); shadow logs land only in the
  deployment's own project, under ``deployments/<deployment>/shadow/<variant>/``.

Rollout steps use ``min_duration_s`` 0 and the scheduler's step is called directly.
"""

from __future__ import annotations

import contextlib
import io
import json
import threading
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from typing import Any
from urllib.parse import quote

import httpx
import pyarrow.parquet as pq
import pytest
from sqlalchemy import text
from sqlalchemy.orm import Session

from ghaf.client import Client
from ghaf.core.clock import utcnow
from ghaf.core.ids import new_id
from ghaf.deployments import rollouts
from ghaf.deployments.gateway import NAME, Gateway
from ghaf.deployments.models import VariantTraffic
from ghaf.deployments.schemas import MAX_ROLLOUT_STEPS, MAX_VARIANTS
from ghaf.security.permissions import PROJECT_ROLES, ROLE_PERMISSIONS
from tests.conftest import Platform, TrainedModel, unique
from tests.security.test_deployments import HOSTILE_NAMES

API = "/api/v1/projects"
STABLE = {"name": "stable", "model": "churn", "version": 1, "weight": 100}
CANARY = {"name": "canary", "model": "churn", "version": 2}
# Two steps that pass at once (no time, no requests needed): each scheduler call moves on.
QUICK = [
    {"weight": 50, "min_duration_s": 0, "min_requests": 0},
    {"weight": 100, "min_duration_s": 0, "min_requests": 0},
]
# Two steps that never pass on their own (they wait for canary answers).
HELD = [
    {"weight": 50, "min_duration_s": 0, "min_requests": 1000},
    {"weight": 100, "min_duration_s": 0, "min_requests": 1000},
]
ONE_STEP = [{"weight": 100, "min_duration_s": 0, "min_requests": 0}]

# More than the security suite's: also a leading dash, a space, a newline, a dot only.
HOSTILE = [*HOSTILE_NAMES, "-lead", "a b", "a\nb", "."]


# --- fixtures and helpers ----------------------------------------------------------------


@dataclass
class Home:
    """A project with model churn v1 and v2, a user of every role in it, and an
    outsider who owns another project (with churn v1) and has no role in this one."""

    project: str
    admin: Client
    tokens: dict[str, str] = field(repr=False)  # role -> token
    users: dict[str, str] = field(repr=False)  # role -> user name
    other: str = ""  # the outsider's own project
    outsider: str = field(default="", repr=False)  # the outsider's token


@pytest.fixture(scope="module")
def home(platform: Platform, trained: TrainedModel) -> Iterator[Home]:
    admin = platform.client()
    project = admin.projects.create(unique("ro")).name
    for _ in range(2):
        admin.models.register(project, "churn", path=trained.path, sample=trained.X[:5])  # type: ignore[index]
    tokens, users = {}, {}
    for role in PROJECT_ROLES:
        user = admin.users.create(unique("u"))
        tokens[role] = admin.users.create_token(user.name, token_name="t").token
        users[role] = user.name
        admin.members.add(project, principal=user.name, role=role)
    outsider = admin.users.create(unique("u"))
    other = admin.projects.create(unique("ro")).name
    admin.members.add(other, principal=outsider.name, role="owner")
    admin.models.register(other, "churn", path=trained.path, sample=trained.X[:5])  # type: ignore[index]
    yield Home(
        project=project,
        admin=admin,
        tokens=tokens,
        users=users,
        other=other,
        outsider=admin.users.create_token(outsider.name, token_name="t").token,
    )
    for name in (project, other):
        for deployment in admin.deployments.list(name):
            with contextlib.suppress(Exception):  # best effort: replicas stop with them
                admin.deployments.delete(name, deployment.name)


@pytest.fixture
def deploy(platform: Platform, home: Home) -> Iterator[Callable[..., str]]:
    """``deploy(variants=None, project=None)`` -> the name of a new deployment (serving
    ``STABLE`` by default), removed after the test with whatever rollout it has (so a
    damaged rollout left behind never meets a later test's scheduler call)."""
    made: list[tuple[str, str]] = []

    def make(
        variants: list[dict[str, Any]] | None = None,
        project: str | None = None,
        name: str | None = None,
    ) -> str:
        name = name or unique("d")
        where = project or home.project
        home.admin.deployments.create(where, name, variants=variants or [STABLE])
        made.append((where, name))
        return name

    yield make
    for where, name in made:
        _sql(
            platform,
            "DELETE FROM deployments WHERE name = :n AND project_id = "
            "(SELECT id FROM projects WHERE name = :p)",
            n=name,
            p=where,
        )


def _url(platform: Platform, project: str, name: str | None = None, tail: str = "") -> str:
    base = f"{platform.url}{API}/{project}/deployments"
    return base + tail if name is None else f"{base}/{name}{tail}"


def _call(
    platform: Platform,
    token: str | None,
    method: str,
    url: str,
    body: Any = None,
    *,
    content: bytes | None = None,
) -> httpx.Response:
    headers = {} if token is None else {"authorization": f"Bearer {token}"}
    if content is not None:
        headers["content-type"] = "application/json"
        return httpx.request(method, url, content=content, headers=headers, timeout=60)
    return httpx.request(method, url, json=body, headers=headers, timeout=60)


def _admin(platform: Platform, method: str, url: str, body: Any = None) -> httpx.Response:
    return _call(platform, platform.admin_token, method, url, body)


def _start(platform: Platform, project: str, name: str, steps: list[dict[str, Any]]) -> None:
    started = _admin(
        platform,
        "POST",
        _url(platform, project, name, "/rollout"),
        {"canary": CANARY, "steps": steps},
    )
    assert started.status_code == 201, started.text
    assert started.json()["state"] == "running"


def _revision(platform: Platform, project: str, name: str) -> int:
    with platform.runtime.database.engine.connect() as connection:
        return int(
            connection.execute(
                text(
                    "SELECT revision FROM deployments WHERE name = :n AND project_id = "
                    "(SELECT id FROM projects WHERE name = :p)"
                ),
                {"n": name, "p": project},
            ).scalar_one()
        )


def _id(platform: Platform, project: str, name: str) -> str:
    with platform.runtime.database.engine.connect() as connection:
        return str(
            connection.execute(
                text(
                    "SELECT id FROM deployments WHERE name = :n AND project_id = "
                    "(SELECT id FROM projects WHERE name = :p)"
                ),
                {"n": name, "p": project},
            ).scalar_one()
        )


def _sql(platform: Platform, statement: str, **params: Any) -> None:
    with platform.runtime.database.engine.begin() as connection:
        connection.execute(text(statement), params)


def _rollout_rows(platform: Platform, deployment_id: str) -> list[Any]:
    with platform.runtime.database.engine.connect() as connection:
        return list(
            connection.execute(
                text("SELECT state, step FROM deployment_rollouts WHERE deployment_id = :d"),
                {"d": deployment_id},
            ).all()
        )


def _advance(platform: Platform) -> list[str]:
    with platform.runtime.acting_as("system:rollouts", request_id=new_id()) as ctx:
        return rollouts.advance_rollouts(ctx)


def _is_problem(response: httpx.Response) -> bool:
    return str(response.headers.get("content-type", "")).startswith("application/problem+json")


def _clear(response: httpx.Response, *allowed: int) -> None:
    """A problem answer of one of ``allowed`` (never a 500)."""
    assert response.status_code != 500, f"a 500: {response.text}"
    assert response.status_code in allowed, (response.status_code, response.text)
    assert _is_problem(response), response.text


def _weights(platform: Platform, project: str, name: str) -> dict[str, float]:
    answer = _admin(platform, "GET", _url(platform, project, name))
    assert answer.status_code == 200, f"the deployment no longer reads: {answer.text}"
    return {v["name"]: v["weight"] for v in answer.json()["spec"]["variants"]}


# --- 1. roles ----------------------------------------------------------------------------


@pytest.mark.parametrize("role", PROJECT_ROLES)
def test_each_role_gets_exactly_the_documented_rollout_permissions(
    platform: Platform, home: Home, deploy: Callable[..., str], role: str
) -> None:
    held = ROLE_PERMISSIONS[role]
    may_write, may_read = "deployment:write" in held, "deployment:read" in held
    assert may_read  # every project role reads deployments (permissions.py)
    assert may_write == (role in ("maintainer", "owner"))
    token, project = home.tokens[role], home.project
    name = deploy()
    rollout = _url(platform, project, name, "/rollout")
    abort = _url(platform, project, name, "/rollout:abort")

    none_yet = _call(platform, token, "GET", rollout)
    assert none_yet.status_code == 404 and "has had no rollout" in none_yet.json()["detail"]

    started = _call(platform, token, "POST", rollout, {"canary": CANARY, "steps": HELD})
    if may_write:
        assert started.status_code == 201, started.text
        assert started.json()["started_by"] == home.users[role]
        assert _revision(platform, project, name) == 2
    else:
        assert started.status_code == 403, started.text
        problem = started.json()
        assert "deployment:write" in problem["detail"] and problem["permission"] == (
            "deployment:write"
        )
        assert _revision(platform, project, name) == 1, "a refused start changed the deployment"
        assert _rollout_rows(platform, _id(platform, project, name)) == []
        assert _weights(platform, project, name) == {"stable": 100}
        _start(platform, project, name, HELD)

    read = _call(platform, token, "GET", rollout)
    assert read.status_code == 200, read.text
    assert read.json()["state"] == "running" and read.json()["weight"] == 50
    metrics = _call(platform, token, "GET", _url(platform, project, tail=":metrics"))
    assert metrics.status_code == 200, metrics.text
    assert metrics.headers["content-type"].startswith("text/plain")
    assert "ghaf_deployment_requests" in metrics.text

    aborted = _call(platform, token, "POST", abort, {"reason": f"{role} says no"})
    if may_write:
        assert aborted.status_code == 200, aborted.text
        assert aborted.json()["state"] == "aborted"
        assert _weights(platform, project, name) == {"stable": 100}
    else:
        assert aborted.status_code == 403, aborted.text
        assert aborted.json()["permission"] == "deployment:write"
        assert "deployment:write" in aborted.json()["detail"]
        assert _revision(platform, project, name) == 2, "a refused abort changed the deployment"
        still = _admin(platform, "GET", rollout).json()
        assert still["state"] == "running" and still["weight"] == 50


def test_outsiders_and_anonymous_callers_learn_nothing(
    platform: Platform, home: Home, deploy: Callable[..., str]
) -> None:
    project, name = home.project, deploy()
    _start(platform, project, name, HELD)
    missing = unique("nope")
    routes = [
        ("GET", "/rollout", None),
        ("POST", "/rollout", {"canary": CANARY}),
        ("POST", "/rollout", {"canary": "not a variant", "steps": 7}),  # invalid body too
        ("POST", "/rollout:abort", {}),
        ("POST", "/rollout:abort", {"bogus": 1}),
    ]
    for method, tail, body in routes:
        for target in (project, missing):
            answer = _call(
                platform, home.outsider, method, _url(platform, target, name, tail), body
            )
            assert answer.status_code == 404, (method, tail, target, answer.text)
            assert answer.json()["detail"] == f"project {target!r} not found"
        anonymous = _call(platform, None, method, _url(platform, project, name, tail), body)
        assert anonymous.status_code == 401, (method, tail, anonymous.text)
    for target in (project, missing):
        metrics = _call(platform, home.outsider, "GET", _url(platform, target, tail=":metrics"))
        assert metrics.status_code == 404, metrics.text
        assert metrics.json()["detail"] == f"project {target!r} not found"
    assert _call(platform, None, "GET", _url(platform, project, tail=":metrics")).status_code == 401
    # Nothing the outsider sent changed anything.
    assert _revision(platform, project, name) == 2
    assert _admin(platform, "GET", _url(platform, project, name, "/rollout")).json()["state"] == (
        "running"
    )


def test_read_only_and_other_project_tokens_cannot_start_or_abort(
    platform: Platform, home: Home, deploy: Callable[..., str]
) -> None:
    """A maintainer's read-only token, and a token of a maintainer of both projects that
    is scoped to the other one: reads at most, never a change."""
    admin, project, name = home.admin, home.project, deploy()
    user = admin.users.create(unique("u"))
    admin.members.add(project, principal=user.name, role="maintainer")
    admin.members.add(home.other, principal=user.name, role="maintainer")
    read_only = admin.users.create_token(user.name, token_name="ro", read_only=True).token
    scoped = admin.users.create_token(user.name, token_name="sc", project=home.other).token
    rollout = _url(platform, project, name, "/rollout")
    abort = _url(platform, project, name, "/rollout:abort")

    def refused(token: str, answer: httpx.Response) -> None:
        if token == read_only:  # a member of the project, whose token cannot write
            assert answer.status_code == 403, answer.text
            assert answer.json()["permission"] == "deployment:write", answer.text
            assert "read-only" in answer.json()["detail"], answer.text
        else:  # a token for another project: this one is invisible to it
            assert answer.status_code == 404, answer.text
            assert answer.json()["detail"] == f"project {project!r} not found", answer.text

    for token in (read_only, scoped):
        refused(token, _call(platform, token, "POST", rollout, {"canary": CANARY, "steps": HELD}))
        assert _revision(platform, project, name) == 1
    _start(platform, project, name, HELD)
    for token in (read_only, scoped):
        refused(token, _call(platform, token, "POST", abort, {}))
        assert _revision(platform, project, name) == 2
    read = _call(platform, read_only, "GET", rollout)
    assert read.status_code == 200 and read.json()["state"] == "running", read.text
    refused(scoped, _call(platform, scoped, "GET", rollout))
    refused(scoped, _call(platform, scoped, "GET", _url(platform, project, tail=":metrics")))
    metrics = _call(platform, read_only, "GET", _url(platform, project, tail=":metrics"))
    assert metrics.status_code == 200, metrics.text


def test_concurrent_starts_make_one_rollout_and_clear_409s(
    platform: Platform, home: Home, deploy: Callable[..., str]
) -> None:
    project, name = home.project, deploy()
    rollout = _url(platform, project, name, "/rollout")
    answers: list[httpx.Response] = []

    def start(i: int) -> None:
        answers.append(
            _admin(
                platform,
                "POST",
                rollout,
                {"canary": {**CANARY, "name": f"c{i}"}, "steps": HELD},
            )
        )

    threads = [threading.Thread(target=start, args=(i,)) for i in range(6)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    statuses = sorted(a.status_code for a in answers)
    assert statuses == [201, 409, 409, 409, 409, 409], [a.text for a in answers]
    assert _revision(platform, project, name) == 2
    (winner,) = [a.json()["canary"] for a in answers if a.status_code == 201]
    assert _weights(platform, project, name) == {"stable": 50, winner: 50}
    assert _rollout_rows(platform, _id(platform, project, name))[0].state == "running"


def test_an_unknown_canary_version_is_refused_naming_the_canarys_field(
    platform: Platform, home: Home, deploy: Callable[..., str]
) -> None:
    project, name = home.project, deploy()
    for version in (9, "nosuchalias"):
        answer = _admin(
            platform,
            "POST",
            _url(platform, project, name, "/rollout"),
            {"canary": {**CANARY, "version": version}},
        )
        _clear(answer, 404, 422)
        assert answer.json()["field"] in ("canary.version", "version"), answer.text
        assert str(version) in answer.json()["detail"], answer.text
        assert _revision(platform, project, name) == 1


# --- 2. hostile names --------------------------------------------------------------------


def _segment(value: str) -> str:
    """``value`` as one path segment, dots encoded too (no client collapses them)."""
    return quote(value, safe="").replace(".", "%2E")


@pytest.mark.parametrize("value", HOSTILE, ids=repr)
def test_hostile_names_in_rollout_routes_are_refused_naming_the_field(
    platform: Platform, home: Home, deploy: Callable[..., str], value: str
) -> None:
    project, name = home.project, deploy()
    rollout = _url(platform, project, name, "/rollout")
    attempts: list[tuple[str, dict[str, Any]]] = [
        ("canary.name", {"canary": {**CANARY, "name": value}}),
        ("canary.model", {"canary": {**CANARY, "model": value}}),
        ("stable", {"canary": CANARY, "stable": value}),
    ]
    for named, body in attempts:
        answer = _admin(platform, "POST", rollout, body)
        _clear(answer, 422)
        assert answer.json()["field"] == named, (named, answer.text)
    # a hostile version is looked up as an alias: refused, never a 500
    answer = _admin(platform, "POST", rollout, {"canary": {**CANARY, "version": value}})
    _clear(answer, 404, 422)
    # as the deployment's name in the path
    hostile = _url(platform, project, _segment(value))
    routes: list[tuple[str, str, Any]] = [
        ("POST", "/rollout", {"canary": CANARY, "steps": QUICK}),
        ("GET", "/rollout", None),
        ("POST", "/rollout:abort", {}),
    ]
    for method, tail, sent in routes:
        answer = _admin(platform, method, hostile + tail, sent)
        _clear(answer, 400, 404, 422)
        if answer.status_code == 422:
            assert answer.json()["field"] == "deployment", answer.text
    # as the project's name in the metrics path
    answer = _admin(platform, "GET", f"{platform.url}{API}/{_segment(value)}/deployments:metrics")
    _clear(answer, 400, 404, 422)
    # nothing stored
    assert _revision(platform, project, name) == 1
    assert _rollout_rows(platform, _id(platform, project, name)) == []
    assert value not in [d.name for d in home.admin.deployments.list(project)]


# --- 4. bodies ---------------------------------------------------------------------------

_STEPS_21 = [
    {"weight": round(100 * (i + 1) / (MAX_ROLLOUT_STEPS + 1), 3), "min_duration_s": 0}
    for i in range(MAX_ROLLOUT_STEPS + 1)
]
_NAN, _INF = float("nan"), float("inf")


def _steps(*steps: dict[str, Any]) -> dict[str, Any]:
    return {"canary": CANARY, "steps": list(steps)}


# label: (body, sent as JSON with NaN and Infinity written as such; the field named; a
# word the message holds)
BAD_BODIES: dict[str, tuple[Any, str, str]] = {
    "21 steps": ({"canary": CANARY, "steps": _STEPS_21}, "steps", "20"),
    "no steps": (_steps(), "steps", "at least 1"),
    "steps not a list": ({"canary": CANARY, "steps": 7}, "steps", "list"),
    "NaN failure margin": (
        {"canary": CANARY, "max_failure_rate_increase": _NAN},
        "max_failure_rate_increase",
        "",
    ),
    "infinite p99 margin": ({"canary": CANARY, "max_p99_increase": _INF}, "max_p99_increase", ""),
    "NaN p99 slack": ({"canary": CANARY, "p99_slack_ms": _NAN}, "p99_slack_ms", ""),
    "negative infinite p99 slack": ({"canary": CANARY, "p99_slack_ms": -_INF}, "p99_slack_ms", ""),
    "failure margin above 1": (
        {"canary": CANARY, "max_failure_rate_increase": 2},
        "max_failure_rate_increase",
        "1",
    ),
    "NaN step weight": (_steps({"weight": _NAN}, {"weight": 100}), "steps.0.weight", ""),
    "weight above 100": (_steps({"weight": 50}, {"weight": 150}), "steps.1.weight", "100"),
    "weight 0": (_steps({"weight": 0}, {"weight": 100}), "steps.0.weight", "greater than 0"),
    "negative weight": (_steps({"weight": -5}, {"weight": 100}), "steps.0.weight", ""),
    "negative duration": (
        _steps({"weight": 100, "min_duration_s": -1}),
        "steps.0.min_duration_s",
        "0",
    ),
    "infinite duration": (
        _steps({"weight": 100, "min_duration_s": _INF}),
        "steps.0.min_duration_s",
        "",
    ),
    "NaN duration": (_steps({"weight": 100, "min_duration_s": _NAN}), "steps.0.min_duration_s", ""),
    "negative requests": (_steps({"weight": 100, "min_requests": -1}), "steps.0.min_requests", ""),
    "fractional requests": (
        _steps({"weight": 100, "min_requests": 1.5}),
        "steps.0.min_requests",
        "",
    ),
    "requests past 64 bits": (
        _steps({"weight": 100, "min_requests": 10**30}),
        "steps.0.min_requests",
        "",
    ),
    "extra field": ({"canary": CANARY, "bogus": 1}, "bogus", "not permitted"),
    "extra step field": (_steps({"weight": 100, "bogus": 1}), "steps.0.bogus", "not permitted"),
    "extra canary field": ({"canary": {**CANARY, "bogus": 1}}, "canary.bogus", "not permitted"),
    "canary weight above 100": ({"canary": {**CANARY, "weight": 500}}, "canary.weight", "100"),
    "canary not an object": ({"canary": "churn:2"}, "canary", ""),
    "no canary": ({"steps": [{"weight": 100}]}, "canary", "required"),
    "shadow canary": ({"canary": {**CANARY, "shadow": True}}, "body", "shadow"),
    "reason too long": ({"canary": CANARY, "reason": "x" * 401}, "reason", "400"),
    "stable not a name": ({"canary": CANARY, "stable": 5}, "stable", ""),
    "body not an object": ([CANARY], "body", ""),
}


@pytest.mark.parametrize("label", sorted(BAD_BODIES))
def test_bad_rollout_bodies_are_a_422_naming_what_was_wrong(
    platform: Platform, home: Home, deploy: Callable[..., str], label: str
) -> None:
    body, named, word = BAD_BODIES[label]
    project, name = home.project, deploy()
    token = home.tokens["maintainer"]
    raw = json.dumps(body).encode()  # NaN and Infinity as Python's json writes them
    assert (b"NaN" in raw or b"Infinity" in raw) == ("NaN" in label or "infinite" in label)
    answer = _call(platform, token, "POST", _url(platform, project, name, "/rollout"), content=raw)
    _clear(answer, 422)
    problem = answer.json()
    assert problem["field"] == named, (label, problem)
    assert word in problem["detail"], (label, problem)
    assert _revision(platform, project, name) == 1
    assert _rollout_rows(platform, _id(platform, project, name)) == []


def test_bad_abort_bodies_are_a_422_and_leave_the_rollout_running(
    platform: Platform, home: Home, deploy: Callable[..., str]
) -> None:
    project, name = home.project, deploy()
    _start(platform, project, name, HELD)
    abort = _url(platform, project, name, "/rollout:abort")
    for body, named in (
        ('{"bogus": 1}', "bogus"),
        ('{"reason": "%s"}' % ("x" * 401), "reason"),
        ('{"reason": 5}', "reason"),
        ("[]", "body"),
    ):
        answer = _call(platform, home.tokens["owner"], "POST", abort, content=body.encode())
        _clear(answer, 422)
        assert answer.json()["field"] == named, answer.text
    broken = _call(platform, home.tokens["owner"], "POST", abort, content=b"{not json")
    _clear(broken, 400)
    assert _revision(platform, project, name) == 2
    assert _rollout_rows(platform, _id(platform, project, name))[0].state == "running"


def test_a_rollout_on_a_deployment_with_the_most_variants_is_refused_not_stored_broken(
    platform: Platform, home: Home, deploy: Callable[..., str]
) -> None:
    """The canary is one variant more: past MAX_VARIANTS it must be refused, or every
    read of the deployment afterwards meets a revision its own schema refuses."""
    shadows = [
        {"name": f"s{i}", "model": "churn", "version": 1, "shadow": True}
        for i in range(MAX_VARIANTS - 1)
    ]
    project, name = home.project, deploy([STABLE, *shadows])
    answer = _admin(
        platform,
        "POST",
        _url(platform, project, name, "/rollout"),
        {"canary": CANARY, "steps": QUICK},
    )
    read = _admin(platform, "GET", _url(platform, project, name))
    if read.status_code != 200:  # how stuck it is: neither abort nor rollback gets through
        abort = _admin(platform, "POST", _url(platform, project, name, "/rollout:abort"), {})
        back = _admin(
            platform, "POST", _url(platform, project, name, tail=":rollback"), {"revision": 1}
        )
        pytest.fail(
            f"DEFECT: start_rollout answered {answer.status_code} and stored a revision with "
            f"{MAX_VARIANTS + 1} variants (over MAX_VARIANTS): the deployment no longer reads "
            f"({read.status_code}: {read.json().get('detail')}); abort answers "
            f"{abort.status_code}, rollback to 1 answers {back.status_code} "
            f"({back.json().get('detail')})"
        )
    _clear(answer, 409, 422)
    assert "variants" in answer.json()["detail"]
    assert _revision(platform, project, name) == 1


# --- 3. damaged and deleted rows ---------------------------------------------------------


def _witness(platform: Platform, home: Home, deploy: Callable[..., str]) -> str:
    """A healthy one-step rollout, created after the damaged one (ids are time-ordered:
    the scheduler reaches it after the damage), that the next scheduler call completes."""
    name = deploy()
    _start(platform, home.project, name, ONE_STEP)
    return name


def _check_after_damage(
    platform: Platform, home: Home, name: str, witness: str, label: str
) -> list[str]:
    """What went wrong (as DEFECT lines) with a damaged rollout of deployment ``name``:
    its GET, the scheduler's call, the witness rollout after it, the deployment itself."""
    project, problems = home.project, []
    read = _admin(platform, "GET", _url(platform, project, name, "/rollout"))
    if read.status_code == 500 or (not _is_problem(read) and read.status_code != 200):
        problems.append(f"DEFECT: GET rollout answers {read.status_code} ({label}): {read.text}")
    elif read.status_code != 200 and (
        read.status_code != 502 or "damaged" not in read.json()["detail"]
    ):
        problems.append(f"GET rollout answers {read.status_code}, not 502 ({label}): {read.text}")
    elif read.status_code == 200:
        evidence = read.json()["canary_evidence"]
        for key in ("requests", "errors", "refused"):
            if not (isinstance(evidence[key], int) and evidence[key] >= 0):
                problems.append(f"DEFECT: GET rollout shows {key} {evidence[key]!r} ({label})")
    try:
        _advance(platform)
    except Exception as error:
        problems.append(
            f"DEFECT: advance_rollouts raised {type(error).__name__}: {error} ({label}): one "
            "damaged rollout stops the scheduler for every rollout after it"
        )
    state = _admin(platform, "GET", _url(platform, project, witness, "/rollout")).json()
    if state.get("state") != "completed":
        problems.append(f"DEFECT: the damage held another rollout up ({label}): {state}")
    # The scheduler never turns damage in the rollout into damage in the deployment: its
    # current revision still reads and its live weights still sum to 100.
    answer = _admin(platform, "GET", _url(platform, project, name))
    if answer.status_code != 200:
        problems.append(
            f"DEFECT: after the scheduler's call the deployment no longer reads ({label}): "
            f"{answer.status_code} {answer.text}"
        )
    else:
        weights = {v["name"]: v["weight"] for v in answer.json()["spec"]["variants"]}
        if abs(sum(weights.values()) - 100) > 0.01:
            problems.append(f"DEFECT: the scheduler wrote weights {weights} ({label})")
    return problems


def _witness_completed(platform: Platform, home: Home, name: str) -> None:
    state = _admin(platform, "GET", _url(platform, home.project, name, "/rollout")).json()
    assert state["state"] == "completed", f"the damage held another rollout up: {state}"
    assert _weights(platform, home.project, name) == {"canary": 100}


def _advance_survives(platform: Platform) -> list[str]:
    try:
        return _advance(platform)
    except Exception as error:
        pytest.fail(
            f"DEFECT: advance_rollouts raised {type(error).__name__}: {error} (one damaged "
            "rollout stops the scheduler for every rollout after it)"
        )


_ROLLOUT_CONFIG = (
    '{"canary": {"name": "canary", "model": "churn", "version": 2}, "steps": [{"weight": 50, '
    '"min_duration_s": 0, "min_requests": 0}, {"weight": 100, "min_duration_s": 0, '
    '"min_requests": 0}]}'
)

# label: (SET clause on deployment_rollouts, SQLite only)
TAMPERED_ROLLOUTS: dict[str, tuple[str, bool]] = {
    "config is a JSON string": ("config = '\"garbage\"'", False),
    "config is not JSON": ("config = 'garbage{'", True),
    "config has the wrong shape": ('config = \'{"steps": "all"}\'', False),
    "config has no steps": ('config = \'{"canary": {"name": "x"}, "steps": []}\'', False),
    "state is unknown": ("state = 'exploded'", False),
    "step is huge": ("step = 2147483647", False),
    "step is -1": ("step = -1", False),
    "step is very negative": ("step = -1000", False),
    "step is text": ("step = 'two'", True),
    "step_started_at is not a date": ("step_started_at = 'yesterday'", True),
    "share is negative": ("share = -50", False),
    "share is infinite": ("share = 9e999", True),
    "share is zero": ("share = 0", False),
    "canary and stable are someone else": ("canary = 'ghost', stable = 'phantom'", False),
    "revisions are huge": ("base_revision = 2147483647, step_revision = 2147483647", False),
}


@pytest.mark.parametrize("label", sorted(TAMPERED_ROLLOUTS))
def test_a_tampered_rollout_row_is_a_clear_answer_and_holds_no_other_rollout_up(
    platform: Platform,
    home: Home,
    deploy: Callable[..., str],
    label: str,
) -> None:
    change, sqlite_only = TAMPERED_ROLLOUTS[label]
    if sqlite_only and not platform.runtime.database.is_sqlite:
        pytest.skip("SQLite keeps any value in any column; PostgreSQL refuses this write")
    project, name = home.project, deploy()
    _start(platform, project, name, QUICK)
    deployment_id = _id(platform, project, name)
    _sql(
        platform,
        f"UPDATE deployment_rollouts SET {change} WHERE deployment_id = :d",
        d=deployment_id,
    )
    witness = _witness(platform, home, deploy)
    problems = _check_after_damage(platform, home, name, witness, label)
    listed = _admin(platform, "GET", _url(platform, project, name, "/revisions"))
    if listed.status_code != 200:
        problems.append(f"DEFECT: the revisions no longer read ({label}): {listed.text}")
    assert not problems, "\n".join(problems)


# label: (SET clause on one of the canary's deployment_traffic rows, SQLite only)
TAMPERED_TRAFFIC: dict[str, tuple[str, bool]] = {
    "latency is a list": ("latency = '[1, 2, 3]'", False),
    "latency is a string": ("latency = '\"fast\"'", False),
    "latency is not JSON": ("latency = 'garbage{'", True),
    "latency buckets are junk": (
        'latency = \'{"abc": 3, "-4": 2, "99999": 1, "5": -7, "6": "x", '
        '"7": 1.5, "8": null, "9": true, "1e3": 4}\'',
        False,
    ),
    "latency count is huge": ("latency = '{\"10\": 100000000000000000000000000000}'", False),
    "counts are negative": ("requests = -5, errors = -9, refused = -100", False),
    "more failures than requests": ("requests = 1, errors = 1000, refused = 1000", False),
    "counts at 64 bits": (
        "requests = 9223372036854775807, errors = 9223372036854775807, "
        "refused = 9223372036854775807",
        True,
    ),
    "counts past 64 bits": ("requests = 1e300, errors = 1e300", True),
    "counts infinite": ("requests = 9e999, errors = 9e999", True),
    "counts are text": ("requests = 'many', errors = 'few'", True),
    "latency sum is text": ("latency_sum_s = 'slow'", True),
    "latency sum is negative infinity": ("latency_sum_s = -9e999", True),
}


def _add_tally(platform: Platform, deployment_id: str, variant: str, revision: int) -> str:
    row = VariantTraffic(
        deployment_id=deployment_id,
        variant=variant,
        revision=revision,
        shadow=False,
        requests=10,
        errors=0,
        refused=0,
        latency={"20": 10},
        latency_sum_s=0.05,
        at=utcnow(),
    )
    with Session(platform.runtime.database.engine) as session:
        session.add(row)
        session.commit()
        return row.id


@pytest.mark.parametrize("label", sorted(TAMPERED_TRAFFIC))
def test_junk_traffic_tallies_are_a_clear_answer_or_ignored_never_a_500(
    platform: Platform, home: Home, deploy: Callable[..., str], label: str
) -> None:
    change, sqlite_only = TAMPERED_TRAFFIC[label]
    if sqlite_only and not platform.runtime.database.is_sqlite:
        pytest.skip("SQLite keeps any value in any column; PostgreSQL refuses this write")
    project, name = home.project, deploy()
    _start(platform, project, name, HELD)
    deployment_id = _id(platform, project, name)
    # Honest tallies for both variants at the step's revision, then one canary row junked.
    _add_tally(platform, deployment_id, "stable", 2)
    _add_tally(platform, deployment_id, "canary", 2)
    junk = _add_tally(platform, deployment_id, "canary", 2)
    _sql(platform, f"UPDATE deployment_traffic SET {change} WHERE id = :i", i=junk)
    witness = _witness(platform, home, deploy)
    read = _admin(platform, "GET", _url(platform, project, name, "/rollout"))
    if read.status_code == 200:  # the junk ignored: the honest row still counts
        assert read.json()["canary_evidence"]["requests"] >= 10, read.text
    problems = _check_after_damage(platform, home, name, witness, label)
    # The honest evidence (20 canary answers) is far from the 1000 each step needs: junk
    # may stop the rollout (rolled back, or held), never promote the canary a step.
    ((state, step),) = _rollout_rows(platform, deployment_id)
    if step != 0 or state not in ("running", "rolled_back"):
        problems.append(
            f"DEFECT: junk evidence moved the canary on ({label}): the rollout is {state!r} "
            f"at step {step + 1} though the step needs 1000 canary answers and 20 are real"
        )
    assert not problems, "\n".join(problems)


def test_abort_answers_what_it_did_when_the_evidence_is_damaged(
    platform: Platform, home: Home, deploy: Callable[..., str]
) -> None:
    """A rollout whose traffic tallies (or config) are damaged can still be aborted (the
    damage message says so), and the answer says whether it was: an error answer for an
    abort that went through sends the caller to retry into a 409."""
    problems: list[str] = []
    for damage in ("traffic", "config"):
        project, name = home.project, deploy()
        _start(platform, project, name, HELD)
        deployment_id = _id(platform, project, name)
        if damage == "traffic":
            junk = _add_tally(platform, deployment_id, "canary", 2)
            _sql(platform, "UPDATE deployment_traffic SET latency = '[1]' WHERE id = :i", i=junk)
        else:
            _sql(
                platform,
                "UPDATE deployment_rollouts SET config = '{\"steps\": 1}' WHERE deployment_id = :d",
                d=deployment_id,
            )
        answer = _admin(platform, "POST", _url(platform, project, name, "/rollout:abort"), {})
        state = _rollout_rows(platform, deployment_id)[0].state
        revision = _revision(platform, project, name)
        if answer.status_code == 500:
            problems.append(f"DEFECT ({damage} damaged): abort answered 500: {answer.text}")
        elif answer.status_code != 200 and (state, revision) != ("running", 2):
            problems.append(
                f"DEFECT ({damage} damaged): abort answered {answer.status_code} "
                f"({answer.json().get('detail')}) but it went through: the rollout is "
                f"{state!r} at revision {revision}"
            )
        elif answer.status_code != 200:
            problems.append(
                f"DEFECT ({damage} damaged): the damage message says to abort, but abort "
                f"answers {answer.status_code}: {answer.text}"
            )
        elif state != "aborted" or _weights(platform, project, name) != {"stable": 100}:
            problems.append(f"DEFECT ({damage} damaged): abort answered 200 but left {state}")
    assert not problems, "\n".join(problems)


def test_a_deleted_current_revision_mid_rollout_is_reported_and_leaves_a_way_out(
    platform: Platform, home: Home, deploy: Callable[..., str]
) -> None:
    project, name = home.project, deploy()
    _start(platform, project, name, QUICK)  # revision 2: the canary at 50%
    deployment_id = _id(platform, project, name)
    # The current one (the server's own scheduler may have taken a step meanwhile).
    _sql(
        platform,
        "DELETE FROM deployment_revisions WHERE deployment_id = :d AND revision = "
        "(SELECT revision FROM deployments WHERE id = :d)",
        d=deployment_id,
    )
    current = _revision(platform, project, name)
    witness = _witness(platform, home, deploy)
    read = _admin(platform, "GET", _url(platform, project, name, "/rollout"))
    _clear(read, 502)
    assert "missing" in read.json()["detail"]
    _advance_survives(platform)
    _witness_completed(platform, home, witness)
    assert _rollout_rows(platform, deployment_id)[0].state == "running"
    assert _revision(platform, project, name) == current  # nothing written over the gap
    # The way out: the message says to roll back to a revision that exists (1); a
    # running rollout refuses rollbacks, so abort (or the rollback) must get through.
    aborted = _admin(platform, "POST", _url(platform, project, name, "/rollout:abort"), {})
    assert aborted.status_code != 500, aborted.text
    rolled_back = None
    if aborted.status_code != 200:
        rolled_back = _admin(
            platform, "POST", _url(platform, project, name, tail=":rollback"), {"revision": 1}
        )
    assert aborted.status_code == 200 or (rolled_back is not None and rolled_back.is_success), (
        "DEFECT: with the current revision missing mid-rollout there is no way out but "
        "deleting the deployment (update and rollback are refused while it rolls out): "
        f"abort answers {aborted.status_code} "
        f"({aborted.json().get('detail')}), rollback answers "
        f"{rolled_back.status_code if rolled_back else '-'} "
        f"({rolled_back.json().get('detail') if rolled_back else ''})"
    )


def test_a_deleted_rollout_row_leaves_the_deployment_usable(
    platform: Platform, home: Home, deploy: Callable[..., str]
) -> None:
    project, name = home.project, deploy()
    _start(platform, project, name, HELD)
    deployment_id = _id(platform, project, name)
    _sql(platform, "DELETE FROM deployment_rollouts WHERE deployment_id = :d", d=deployment_id)
    witness = _witness(platform, home, deploy)
    read = _admin(platform, "GET", _url(platform, project, name, "/rollout"))
    _clear(read, 404)
    assert "has had no rollout" in read.json()["detail"]
    _advance_survives(platform)
    _witness_completed(platform, home, witness)
    assert _revision(platform, project, name) == 2  # the scheduler forgot it: no new step
    abort = _admin(platform, "POST", _url(platform, project, name, "/rollout:abort"), {})
    _clear(abort, 409)
    # The deployment is no longer held: it can be changed, or rolled out afresh.
    assert _weights(platform, project, name) == {"stable": 50, "canary": 50}
    back = _admin(
        platform, "POST", _url(platform, project, name, tail=":rollback"), {"revision": 1}
    )
    assert back.status_code == 200, back.text
    assert _weights(platform, project, name) == {"stable": 100}


# --- 5 and 6. metrics and shadow logs ----------------------------------------------------


def _gateway(platform: Platform) -> Gateway:
    found = platform.runtime.backends[NAME]
    assert isinstance(found, Gateway)
    return found


def _until(condition: Callable[[], bool], what: str, seconds: float = 30) -> None:
    deadline = time.monotonic() + seconds
    while not condition():
        assert time.monotonic() < deadline, f"timed out waiting for {what}"
        time.sleep(0.1)


def test_names_stay_out_of_anonymous_metrics_and_shadow_logs_stay_in_their_project(
    platform: Platform, home: Home, deploy: Callable[..., str], trained: TrainedModel
) -> None:
    # The same deployment and variant names in two projects: only the project tells the
    # series (and the shadow logs) apart.
    suffix = new_id()[-8:]
    live, twin = f"zqlive{suffix}", f"zqtwin{suffix}"
    variants = [
        {"name": live, "model": "churn", "version": 1, "weight": 100},
        {"name": twin, "model": "churn", "version": 1, "shadow": True},
    ]
    victim, other = home.project, home.other
    name = deploy(variants)
    deploy(variants, project=other, name=name)
    rows = trained.X[:2].tolist()  # type: ignore[index]
    sent = {victim: 5, other: 3}
    with httpx.Client(timeout=60) as http:
        for project, count in sent.items():
            for i in range(count):
                answer = http.post(
                    _url(platform, project, name, "/predict"),
                    json=rows,
                    headers={
                        "authorization": f"Bearer {platform.admin_token}",
                        "x-request-id": f"{project}-{i}",
                    },
                )
                assert answer.status_code == 200, answer.text
                assert answer.headers["x-ghaf-variant"] == live
    gateway = _gateway(platform)
    _until(lambda: gateway.mirror.idle, "the shadow copies")

    # The anonymous scrape: the totals, never a name.
    anonymous = httpx.get(f"{platform.url}/metrics", timeout=30).text
    assert "ghaf_deployment_requests_total" in anonymous
    for secret in (victim, other, name, live, twin, "churn"):
        assert secret not in anonymous, f"LEAK: {secret!r} is on the anonymous /metrics"
    assert 'deployment="' not in anonymous and 'variant="' not in anonymous

    # Each project's own scrape: its counts only, though every name is the same.
    def ok_count(text_: str, shadow: str, variant: str) -> str:
        prefix = (
            f'ghaf_deployment_requests_total{{deployment="{name}",outcome="ok",'
            f'shadow="{shadow}",variant="{variant}"}} '
        )
        found = [line for line in text_.splitlines() if line.startswith(prefix)]
        assert len(found) == 1, (prefix, text_)
        return found[0].removeprefix(prefix)

    viewer = _call(platform, home.tokens["viewer"], "GET", _url(platform, victim, tail=":metrics"))
    assert viewer.status_code == 200, viewer.text
    assert ok_count(viewer.text, "false", live) == "5.0"
    assert ok_count(viewer.text, "true", twin) == "5.0"
    outsider_own = _call(platform, home.outsider, "GET", _url(platform, other, tail=":metrics"))
    assert outsider_own.status_code == 200, outsider_own.text
    assert ok_count(outsider_own.text, "false", live) == "3.0"
    assert ok_count(outsider_own.text, "true", twin) == "3.0"
    assert victim not in outsider_own.text
    # The outsider reading the victim's: as for a project that does not exist.
    stolen = _call(platform, home.outsider, "GET", _url(platform, victim, tail=":metrics"))
    missing = _call(platform, home.outsider, "GET", _url(platform, "zqnope", tail=":metrics"))
    assert stolen.status_code == missing.status_code == 404
    assert stolen.json()["detail"] == f"project {victim!r} not found"
    assert stolen.json()["type"] == missing.json()["type"]
    assert name not in stolen.text and live not in stolen.text

    # The shadow logs: each project's own copies, only under its deployment's folder.
    prefix = f"deployments/{name}/shadow/{twin}/"

    def logged(project: str) -> list[Any]:
        return home.admin.artifacts.list(project, prefix=prefix)

    _until(lambda: bool(logged(victim)) and bool(logged(other)), "the shadow logs", 20)
    for project in (victim, other):
        everything = home.admin.artifacts.list(project, prefix="deployments/")
        assert everything, project
        for artifact in everything:
            assert artifact.path.startswith(prefix), (project, artifact.path)
            assert artifact.path.endswith(".parquet"), artifact.path
        ids: list[str] = []
        for artifact in logged(project):
            table = pq.read_table(io.BytesIO(home.admin.artifacts.read(project, artifact.path)))
            for row in table.to_pylist():
                assert row["variant"] == twin and row["primary"] == live, row
                ids.append(row["request_id"])
        assert ids, project
        mine = {f"{project}-{i}" for i in range(sent[project])}
        assert all(any(m in logged_id for m in mine) for logged_id in ids), (
            f"LEAK: {project}'s shadow log holds another project's requests: {ids}"
        )
