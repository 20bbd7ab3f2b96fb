"""Shadow variants: each live request is copied to them after its answer; their answers
are logged beside the live ones (Parquet in the project) and counted, never returned;
a full queue drops copies and counts them; the project's deployment metrics show it all
and the anonymous /metrics none of its names."""

from __future__ import annotations

import asyncio
import io
import time
from dataclasses import dataclass
from typing import Any

import httpx
import pyarrow.parquet as pq
import pytest

from ghaf.client import Client
from ghaf.deployments.fleet import Forwarded
from ghaf.deployments.hosts.base import ReplicaSpec
from ghaf.deployments.shadow import Copy, Mirror
from ghaf.deployments.traffic import Traffic, Where
from tests.conftest import Platform, TrainedModel, replica_spec


@pytest.fixture
def shadowed(admin: Client, two_versions: str) -> str:
    project = two_versions
    admin.deployments.create(
        project,
        "api",
        variants=[
            {"name": "live", "model": "churn", "version": 1, "weight": 100},
            {"name": "twin", "model": "churn", "version": 2, "shadow": True},
        ],
    )
    return project


def _until(condition: Any, seconds: float = 30) -> None:
    deadline = time.monotonic() + seconds
    while not condition():
        assert time.monotonic() < deadline, "timed out"
        time.sleep(0.1)


def test_shadows_get_a_copy_log_it_and_never_answer(
    platform: Platform, admin: Client, shadowed: str, trained: TrainedModel
) -> None:
    rows = trained.X[:3].tolist()
    expected = trained.model.predict(trained.X[:3]).tolist()  # type: ignore[attr-defined]
    url = f"{platform.url}/api/v1/projects/{shadowed}/deployments/api/predict"
    headers = {"authorization": f"Bearer {platform.admin_token}"}
    first = httpx.post(url, json=rows, headers=headers, timeout=60)
    # The live answer comes while the shadow's replica is still starting.
    assert first.status_code == 200 and first.headers["x-ghaf-variant"] == "live"
    assert first.json() == expected
    for _ in range(9):
        answer = httpx.post(url, json=rows, headers=headers, timeout=60)
        assert answer.headers["x-ghaf-variant"] == "live"
    gateway = platform.gateway
    _until(lambda: gateway.mirror.idle and gateway.mirror.sent >= 10)
    assert sorted(k[1] for k in gateway.fleet.replicas()) == ["live", "twin"]

    text = admin.deployments.metrics(shadowed)
    ok = 'ghaf_deployment_requests_total{deployment="api",outcome="ok",'
    assert ok + 'shadow="true",variant="twin"} 10.0' in text
    assert ok + 'shadow="false",variant="live"} 10.0' in text
    assert 'ghaf_deployment_replicas{deployment="api",variant="twin"} 1.0' in text
    assert "ghaf_deployment_cold_start_seconds_count" in text
    anonymous = httpx.get(f"{platform.url}/metrics").text
    assert "ghaf_deployment_requests_total" in anonymous
    assert shadowed not in anonymous and 'variant="twin"' not in anonymous

    def logged() -> list[Any]:
        return admin.artifacts.list(shadowed, prefix="deployments/api/shadow/twin/")

    _until(lambda: sum(1 for _ in logged()) >= 1)
    table = pq.read_table(
        io.BytesIO(b"".join(admin.artifacts.read(shadowed, a.path) for a in logged()[:1]))
    )
    assert table.schema.metadata[b"ghaf.shadow_log"] == b"1"
    first_row = table.to_pylist()[0]
    assert first_row["variant"] == "twin" and first_row["primary"] == "live"
    assert first_row["status"] == 200 and first_row["truncated"] is False
    assert first_row["answer"] == first_row["primary_answer"]  # the same model's answers
    assert first_row["request"] is not None and first_row["latency_ms"] > 0


def test_a_refused_request_is_not_copied_and_the_next_is_served(
    platform: Platform, admin: Client, shadowed: str, trained: TrainedModel
) -> None:
    url = f"{platform.url}/api/v1/projects/{shadowed}/deployments/api/predict"
    headers = {"authorization": f"Bearer {platform.admin_token}"}
    rows = trained.X[:1].tolist()
    assert httpx.post(url, json=rows, headers=headers, timeout=60).status_code == 200
    gateway = platform.gateway
    _until(lambda: gateway.mirror.idle)
    # A body the replicas refuse: the live refusal is the caller's; the shadow's counted.
    bad = httpx.post(url, json={"nope": [1]}, headers=headers, timeout=60)
    assert bad.status_code == 400
    _until(lambda: gateway.mirror.idle)
    # A refused live request is not copied: the shadow sees only what the caller got.
    text = admin.deployments.metrics(shadowed)
    assert 'outcome="refused",shadow="false",variant="live"} 1.0' in text
    assert 'outcome="refused",shadow="true",variant="twin"} 0.0' in text
    answer = httpx.post(url, json=rows, headers=headers, timeout=60)
    assert answer.status_code == 200 and answer.headers["x-ghaf-variant"] == "live"


@dataclass
class _SlowFleet:
    """A fleet whose shadow replica never answers (the queue fills up)."""

    calls: int = 0

    async def replica(self, spec: ReplicaSpec) -> object:
        return object()

    async def forward(self, replica: object, path: str, body: bytes, headers: Any) -> Forwarded:
        self.calls += 1
        await asyncio.sleep(3600)
        raise AssertionError("unreachable")


def _copy(where: Where, size: int = 10) -> Copy:
    spec = replica_spec(variant="s")
    return Copy(
        where=where,
        revision=1,
        spec=spec,
        path="/predict",
        body=b"x" * size,
        headers={},
        request_id="r",
        primary="live",
        primary_answer=b"[1]",
        primary_s=0.001,
    )


def test_a_full_queue_drops_copies_and_counts_them() -> None:
    async def scenario() -> tuple[int, int, int]:
        traffic = Traffic()
        fleet = _SlowFleet()
        mirror = Mirror(fleet, traffic, None, most=5, most_bytes=1 << 20, workers=1)  # type: ignore[arg-type]
        mirror.start()
        where = Where(project="p", deployment="api", deployment_id="d", variant="s", shadow=True)
        offered = [mirror.offer(_copy(where)) for _ in range(20)]
        await asyncio.sleep(0.05)
        # by bytes too: one copy larger than the bound is dropped, never queued
        big = mirror.offer(_copy(where, size=2 << 20))
        await mirror.stop()
        return sum(offered), traffic.shadow_dropped[where], int(big)

    queued, dropped, big = asyncio.run(scenario())
    assert queued == 5 and dropped == 16 and big == 0


def test_copies_made_under_an_older_revision_are_not_sent() -> None:
    async def scenario() -> tuple[int, int]:
        fleet = _SlowFleet()
        where = Where(project="p", deployment="api", deployment_id="d", variant="s", shadow=True)
        mirror = Mirror(fleet, Traffic(), None, workers=1, current=lambda _: 2)  # type: ignore[arg-type]
        mirror.start()
        mirror.offer(_copy(where))  # revision 1: the deployment has moved on to 2
        await asyncio.sleep(0.05)
        await mirror.stop()
        return mirror.stale, fleet.calls

    assert asyncio.run(scenario()) == (1, 0)
