"""Autoscaling on the embedded host: a variant grows under load to what its policy wants
(up to max_replicas), shrinks back once the load has been gone for its downscale window,
keeps min_replicas once started, and spreads requests to the least busy replica."""

from __future__ import annotations

import threading
import time

import httpx
import pytest

from ghaf.client import Client
from tests.conftest import Platform, TrainedModel


def _count(platform: Platform, variant: str) -> int:
    return sum(n for key, n in platform.gateway.fleet.replicas().items() if key[1] == variant)


def _deploy(admin: Client, project: str, trained: TrainedModel, scaling: dict[str, object]) -> str:
    admin.models.register(project, "churn", path=trained.path, sample=trained.X[:5])
    admin.deployments.create(
        project,
        "api",
        variants=[{"name": "a", "model": "churn", "version": 1, "weight": 100, "scaling": scaling}],
    )
    return f"/api/v1/projects/{project}/deployments/api/predict"


@pytest.mark.timeout(180)
def test_a_variant_scales_up_under_load_and_down_after_idle(
    platform: Platform, admin: Client, project: str, trained: TrainedModel
) -> None:
    path = _deploy(
        admin,
        project,
        trained,
        {"min_replicas": 1, "max_replicas": 3, "target_in_flight": 1, "downscale_window_s": 2},
    )
    url, rows = platform.url + path, trained.X[:200].tolist()
    headers = {"authorization": f"Bearer {platform.admin_token}"}
    assert httpx.post(url, json=rows, headers=headers, timeout=60).status_code == 200
    assert _count(platform, "a") == 1

    stop, statuses, most = threading.Event(), [], [1]

    def load() -> None:
        with httpx.Client(timeout=60) as http:
            while not stop.is_set():
                statuses.append(http.post(url, json=rows, headers=headers).status_code)

    threads = [threading.Thread(target=load) for _ in range(12)]
    for thread in threads:
        thread.start()
    deadline = time.monotonic() + 60
    try:
        while time.monotonic() < deadline and most[0] < 2:
            most[0] = max(most[0], _count(platform, "a"))
            time.sleep(0.1)
        time.sleep(1.0)  # a little more load on the grown variant
    finally:
        stop.set()
        for thread in threads:
            thread.join()
    assert most[0] >= 2, "no replica was added under load"
    assert _count(platform, "a") <= 3
    assert statuses and set(statuses) == {200}  # growing never failed a request
    text = admin.deployments.metrics(project)
    assert 'ghaf_deployment_cold_start_seconds_count{deployment="api",variant="a"}' in text

    deadline = time.monotonic() + 30
    while _count(platform, "a") > 1:
        assert time.monotonic() < deadline, "the variant did not shrink after the load"
        time.sleep(0.2)
    assert _count(platform, "a") == 1  # never below min_replicas


def test_min_replicas_are_kept_once_the_variant_started(
    platform: Platform, admin: Client, project: str, trained: TrainedModel
) -> None:
    path = _deploy(admin, project, trained, {"min_replicas": 2, "max_replicas": 2})
    headers = {"authorization": f"Bearer {platform.admin_token}"}
    answer = httpx.post(
        platform.url + path, json=trained.X[:1].tolist(), headers=headers, timeout=60
    )
    assert answer.status_code == 200
    deadline = time.monotonic() + 30
    while _count(platform, "a") < 2:
        assert time.monotonic() < deadline, "the second replica never started"
        time.sleep(0.2)
    time.sleep(1.0)
    assert _count(platform, "a") == 2  # and no more


def test_a_replica_over_its_memory_is_restarted_and_reported(
    platform: Platform, admin: Client, project: str, trained: TrainedModel
) -> None:
    admin.models.register(project, "churn", path=trained.path, sample=trained.X[:5])
    # 64 MiB: less than any Python process holding scikit-learn needs.
    admin.deployments.create(
        project,
        "api",
        variants=[
            {"name": "a", "model": "churn", "version": 1, "weight": 100,
             "resources": {"memory_mb": 64}},
        ],
    )  # fmt: skip
    answer = admin.deployments.predict(project, "api", trained.X[:1].tolist())
    assert answer.variant == "a"
    series = 'ghaf_deployment_replica_restarts_total{deployment="api",reason="memory",variant="a"}'
    deadline = time.monotonic() + 30  # the watch looks every 5 s
    while series not in admin.deployments.metrics(project):
        assert time.monotonic() < deadline, "the replica over its memory was not restarted"
        time.sleep(0.5)
    # A request still gets an answer: the replacement starts on demand.
    assert admin.deployments.predict(project, "api", trained.X[:1].tolist()).variant == "a"
