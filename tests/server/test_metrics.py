"""/metrics: process and GC collectors, build info, the database pool, the security
cache, the domain counters (each moved by its action through the REST API), and the
Grafana dashboard shipped in docs/grafana/ querying only series that exist."""

from __future__ import annotations

import hashlib
import json
import re
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import httpx
from prometheus_client.parser import text_string_to_metric_families

from ghaf.client import Client
from ghaf.core.version import __version__
from tests.conftest import Platform, TrainedModel, unique

DASHBOARD = Path(__file__).parents[2] / "docs" / "grafana" / "ghaf.json"
Samples = dict[tuple[str, tuple[tuple[str, str], ...]], float]


def scrape(platform: Platform) -> Samples:
    response = httpx.get(f"{platform.url}/metrics")
    assert response.status_code == 200
    assert response.headers["content-type"].startswith("text/plain")
    return {
        (sample.name, tuple(sorted(sample.labels.items()))): sample.value
        for family in text_string_to_metric_families(response.text)
        for sample in family.samples
    }


def value(samples: Samples, name: str, **labels: str) -> float:
    return samples.get((name, tuple(sorted(labels.items()))), 0.0)


def moved(platform: Platform, name: str, by: float, before: Samples, **labels: str) -> float:
    """How much ``name{labels}`` grew since ``before``, waiting briefly for ``by``: a
    streamed body is counted when the server's iterator ends, a moment after the client
    has read the last byte."""
    deadline = time.monotonic() + 5
    while True:
        grown = value(scrape(platform), name, **labels) - value(before, name, **labels)
        if grown >= by or time.monotonic() > deadline:
            return grown
        time.sleep(0.02)


def test_every_family_is_exported(platform: Platform) -> None:
    httpx.get(f"{platform.url}/api/v1/whoami", headers={"Authorization": "Bearer nope"})
    samples = scrape(platform)
    names = {name for name, _ in samples}
    for name in (
        "process_resident_memory_bytes",
        "process_cpu_seconds_total",
        "process_open_fds",
        "python_gc_collections_total",
        "python_gc_objects_collected_total",
        "python_info",
        "ghaf_db_pool_size",
        "ghaf_db_pool_max_overflow",
        "ghaf_db_pool_checked_out",
        "ghaf_db_pool_checked_in",
        "ghaf_db_pool_overflow",
        "ghaf_security_cache_hits_total",
        "ghaf_security_cache_misses_total",
        "ghaf_security_cache_invalidations_total",
        "ghaf_metric_points_logged_total",
        "ghaf_runs_created_total",
        "ghaf_model_registrations_total",
        "ghaf_http_requests_total",
        "ghaf_http_request_duration_seconds_bucket",
    ):
        assert name in names, name
    assert value(samples, "ghaf_build_info", version=__version__) == 1
    # Every labelled series exists from the start, at zero if nothing happened yet.
    for outcome in ("success", "failure", "locked", "throttled"):
        assert ("ghaf_logins_total", (("outcome", outcome),)) in samples
    for decision in ("approve", "reject"):
        assert ("ghaf_model_reviews_total", (("decision", decision),)) in samples
    for direction in ("in", "out"):
        assert ("ghaf_artifact_bytes_total", (("direction", direction),)) in samples
    for kind in ("token", "grant", "view"):
        assert ("ghaf_security_cache_hits_total", (("kind", kind),)) in samples


def test_pool_gauges_follow_the_settings(fresh_platform: Callable[..., Platform]) -> None:
    live = fresh_platform(database_pool_size=3, database_max_overflow=2)
    dialect = live.runtime.database.engine.dialect.name
    samples = scrape(live)
    size = value(samples, "ghaf_db_pool_size", dialect=dialect)
    most = value(samples, "ghaf_db_pool_max_overflow", dialect=dialect)
    if dialect == "postgresql":
        assert (size, most) == (3, 2)  # GHAF_DATABASE_POOL_SIZE / _MAX_OVERFLOW
    else:
        assert size >= 1  # SQLite keeps SQLAlchemy's own pool for a local file
    checked_out = value(samples, "ghaf_db_pool_checked_out", dialect=dialect)
    idle = value(samples, "ghaf_db_pool_checked_in", dialect=dialect)
    assert checked_out >= 0 and idle >= 0
    assert checked_out + idle <= size + most
    assert value(samples, "ghaf_db_pool_overflow", dialect=dialect) >= 0


def test_security_cache_counts_hits_and_misses(platform: Platform, project: str) -> None:
    headers = {"Authorization": f"Bearer {platform.admin_token}"}
    httpx.get(f"{platform.url}/api/v1/projects/{project}", headers=headers)
    before = scrape(platform)
    for _ in range(5):
        assert httpx.get(f"{platform.url}/api/v1/projects/{project}", headers=headers).is_success
    after = scrape(platform)
    hits = value(after, "ghaf_security_cache_hits_total", kind="token") - value(
        before, "ghaf_security_cache_hits_total", kind="token"
    )
    # The same token, read five times (a background task auditing meanwhile may cost one).
    assert hits >= 4


def test_login_counters(platform: Platform) -> None:
    user, _ = platform.new_user(password="correct horse battery")
    before = scrape(platform)
    login = f"{platform.url}/api/v1/auth/login"
    assert httpx.post(login, json={"name": user.name, "password": "correct horse battery"})
    assert httpx.post(login, json={"name": user.name, "password": "wrong!"}).status_code == 401
    assert httpx.post(login, json={"name": unique("ghost"), "password": "x"}).status_code == 401
    assert moved(platform, "ghaf_logins_total", 1, before, outcome="success") == 1
    assert moved(platform, "ghaf_logins_total", 2, before, outcome="failure") == 2


def test_login_throttled_counter(fresh_platform: Callable[..., Platform]) -> None:
    live = fresh_platform(login_rate_per_address="2/minute")
    before = scrape(live)
    login = f"{live.url}/api/v1/auth/login"
    codes = [httpx.post(login, json={"name": "nobody", "password": "x"}).status_code]
    codes += [httpx.post(login, json={"name": "nobody", "password": "x"}).status_code]
    codes += [httpx.post(login, json={"name": "nobody", "password": "x"}).status_code]
    assert codes == [401, 401, 429]
    assert moved(live, "ghaf_logins_total", 1, before, outcome="throttled") == 1


def test_run_and_points_counters(platform: Platform, project: str) -> None:
    headers = {"Authorization": f"Bearer {platform.admin_token}"}
    api = f"{platform.url}/api/v1/projects/{project}"
    before = scrape(platform)
    run = httpx.post(
        f"{api}/experiments/churn/runs", headers=headers, json={"create_experiment": True}
    )
    assert run.status_code == 201, run.text
    run_id = run.json()["id"]
    batch = {
        "seq": 0,
        "metrics": {
            "key": ["loss", "loss", "auc"],
            "value": [0.5, 0.4, 0.8],
            "step": [0, 1, 1],
            "timestamp": [1, 2, 2],
        },
    }
    logged = httpx.post(f"{api}/runs/{run_id}:log", headers=headers, json=batch)
    assert logged.status_code == 200, logged.text
    # The same batch again is not applied twice, and not counted twice.
    assert httpx.post(f"{api}/runs/{run_id}:log", headers=headers, json=batch).is_success
    assert moved(platform, "ghaf_runs_created_total", 1, before) == 1
    assert moved(platform, "ghaf_metric_points_logged_total", 3, before) == 3


def test_registration_and_review_counters(
    platform: Platform,
    project: str,
    trained: TrainedModel,
    reviewer: tuple[str, Client],
) -> None:
    sample = trained.X[:5]  # type: ignore[index]
    before = scrape(platform)
    platform.admin.models.register(project, "churn", path=trained.path, sample=sample)
    platform.admin.models.register(project, "churn", path=trained.path, sample=sample)
    _, client = reviewer
    client.models.approve(project, "churn", 1, comment="fine")
    client.models.reject(project, "churn", 2, comment="not this one")
    assert moved(platform, "ghaf_model_registrations_total", 2, before) == 2
    assert moved(platform, "ghaf_model_reviews_total", 1, before, decision="approve") == 1
    assert moved(platform, "ghaf_model_reviews_total", 1, before, decision="reject") == 1


def test_artifact_byte_counters(platform: Platform, project: str) -> None:
    headers = {"Authorization": f"Bearer {platform.admin_token}"}
    content = b"0123456789" * 3000
    before = scrape(platform)
    put = httpx.put(
        f"{platform.url}/api/v1/projects/{project}/artifacts/data/a.bin",
        headers={**headers, "X-Ghaf-SHA256": hashlib.sha256(content).hexdigest()},
        content=content,
    )
    assert put.status_code == 201, put.text
    got = httpx.get(
        f"{platform.url}/api/v1/projects/{project}/artifacts/data/a.bin", headers=headers
    )
    assert got.content == content
    part = httpx.get(
        f"{platform.url}/api/v1/projects/{project}/artifacts/data/a.bin",
        headers={**headers, "Range": "bytes=0-99"},
    )
    assert part.status_code == 206 and len(part.content) == 100
    size = len(content)
    assert moved(platform, "ghaf_artifact_bytes_total", size, before, direction="in") == size
    out = moved(platform, "ghaf_artifact_bytes_total", size + 100, before, direction="out")
    assert out == size + 100


# --- the Grafana dashboard ---------------------------------------------------------

_METRIC = re.compile(r"\b((?:ghaf|process|python)_[a-z0-9_]+)\b")


def _panels(dashboard: dict[str, Any]) -> list[dict[str, Any]]:
    found = []
    for panel in dashboard["panels"]:
        found.append(panel)
        found += panel.get("panels", [])  # a collapsed row holds its panels
    return found


def test_dashboard_is_a_grafana_dashboard() -> None:
    dashboard = json.loads(DASHBOARD.read_text())
    assert {"title", "uid", "schemaVersion", "panels", "templating", "time"} <= set(dashboard)
    assert isinstance(dashboard["schemaVersion"], int) and dashboard["schemaVersion"] >= 36
    variables = {v["name"]: v for v in dashboard["templating"]["list"]}
    assert variables["datasource"]["type"] == "datasource"
    assert variables["datasource"]["query"] == "prometheus"
    panels = _panels(dashboard)
    ids = [p["id"] for p in panels]
    assert len(ids) == len(set(ids)), "panel ids must be unique"
    cells: set[tuple[int, int]] = set()
    for panel in panels:
        assert panel["type"] in {"row", "timeseries", "stat", "gauge", "table", "bargauge"}
        grid = panel["gridPos"]
        assert grid["x"] >= 0 and grid["x"] + grid["w"] <= 24 and grid["h"] >= 1
        mine = {
            (grid["x"] + dx, grid["y"] + dy) for dx in range(grid["w"]) for dy in range(grid["h"])
        }
        assert not mine & cells, f"panel {panel['title']!r} overlaps another"
        cells |= mine
        if panel["type"] == "row":
            continue
        assert panel["datasource"] == {"type": "prometheus", "uid": "${datasource}"}
        refs = [t["refId"] for t in panel["targets"]]
        assert refs and len(refs) == len(set(refs))
        for target in panel["targets"]:
            assert target["expr"].count("(") == target["expr"].count(")"), target["expr"]


def test_dashboard_queries_only_exported_series(platform: Platform) -> None:
    headers = {"Authorization": f"Bearer {platform.admin_token}"}
    httpx.get(f"{platform.url}/api/v1/whoami", headers=headers)  # a request series exists
    exported = {name for name, _ in scrape(platform)}
    dashboard = json.loads(DASHBOARD.read_text())
    queried = {
        name
        for panel in _panels(dashboard)
        for target in panel.get("targets", [])
        for name in _METRIC.findall(target["expr"])
    }
    variable = dashboard["templating"]["list"][1]["query"]["query"]
    queried |= set(_METRIC.findall(variable))
    assert len(queried) >= 20
    missing = sorted(queried - exported)
    assert not missing, f"the dashboard queries series /metrics does not export: {missing}"


def test_dashboard_is_linked_from_the_operations_guide() -> None:
    guide = (DASHBOARD.parents[1] / "operations.md").read_text()
    assert "grafana/ghaf.json" in guide
