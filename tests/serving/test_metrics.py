"""A serving app's ``/metrics``: requests by model, version and status, latency and
batch sizes, queue depths, the prediction log's counts, the process collectors; and
request ids."""

from __future__ import annotations

import asyncio
from collections.abc import Iterator
from typing import Any

import httpx
import numpy as np
import pytest
from prometheus_client import generate_latest
from prometheus_client.parser import text_string_to_metric_families

from ghaf.serving.app import ServingOptions, create_serving_app
from ghaf.serving.auth import InvokeKey, KeyAuthorizer
from ghaf.serving.batching import BatchingOptions
from ghaf.serving.predlog import PredictionLog
from ghaf.serving.runtime import LoadedModel
from ghaf.serving.standalone import prepare
from tests.conftest import Platform
from tests.serving.conftest import AllowAll, Registered, running
from tests.serving.test_predlog import MemorySink

KEY = "k" * 40
AUTH = {"authorization": f"Bearer {KEY}"}


@pytest.fixture(scope="module")
def models(
    platform: Platform, registered: Registered, tmp_path_factory: pytest.TempPathFactory
) -> list[LoadedModel]:
    admin = platform.client()
    folder = tmp_path_factory.mktemp("metrics")
    return [
        prepare(admin.models, registered.project, "churn@prod", folder / "churn"),
        prepare(admin.models, registered.project, "forest:1", folder / "forest"),
    ]


@pytest.fixture(scope="module")
def served(models: list[LoadedModel], registered: Registered) -> Iterator[tuple[str, Any]]:
    plog = PredictionLog(MemorySink())
    app = create_serving_app(
        models,
        authorizer=KeyAuthorizer(InvokeKey(KEY), registered.project),
        options=ServingOptions(batching=BatchingOptions(max_batch_size=64, max_latency_ms=5)),
        prediction_log=plog,
    )
    with running(app) as url:
        yield url, plog


def _samples(text: str) -> dict[tuple[str, tuple[tuple[str, str], ...]], float]:
    found = {}
    for family in text_string_to_metric_families(text):
        for sample in family.samples:
            found[(sample.name, tuple(sorted(sample.labels.items())))] = sample.value
    return found


def _value(samples: dict[Any, float], name: str, **labels: str) -> float:
    return samples.get((name, tuple(sorted(labels.items()))), 0.0)


def _body(X: np.ndarray[Any, Any], datatype: str) -> dict[str, Any]:
    tensor = {"name": "X", "datatype": datatype, "shape": list(X.shape), "data": X.ravel().tolist()}
    return {"inputs": [tensor]}


def test_requests_are_counted_by_model_version_and_status(
    served: tuple[str, Any], registered: Registered
) -> None:
    url, plog = served
    version = str(registered.churn.version)
    before = _samples(httpx.get(f"{url}/metrics", headers=AUTH).text)
    with httpx.Client(base_url=url, headers=AUTH) as http:
        for _ in range(3):
            ok = http.post("/v2/models/churn/infer", json=_body(registered.X4[:2], "FP64"))
            assert ok.status_code == 200
        bad = http.post("/v2/models/churn/infer", json=_body(registered.X4[:2, :3], "FP64"))
        assert bad.status_code == 400
        assert http.post("/v2/models/nope/infer", json={}).status_code == 404
        assert http.get("/v2/models/forest").status_code == 200
    assert httpx.get(f"{url}/v2", headers={"authorization": "Bearer wrong"}).status_code == 401
    after = _samples(httpx.get(f"{url}/metrics", headers=AUTH).text)

    def grew(name: str, **labels: str) -> float:
        return _value(after, name, **labels) - _value(before, name, **labels)

    requests = "ghaf_serving_requests_total"
    assert grew(requests, model="churn", version=version, status="200") == 3
    assert grew(requests, model="churn", version=version, status="400") == 1
    assert grew(requests, model="forest", version="1", status="200") == 1
    assert grew(requests, model="", version="", status="404") == 1  # names no served model
    assert grew(requests, model="", version="", status="401") == 1  # refused by the guard
    latency = "ghaf_serving_request_duration_seconds_count"
    assert grew(latency, model="churn", version=version) == 4
    assert grew("ghaf_serving_batch_rows_sum", model="churn", version=version) == 6
    assert grew("ghaf_serving_prediction_log_records_total") == 3  # answered ones only
    assert _value(after, "ghaf_serving_queue_depth", model="forest", version="1") == 0
    assert _value(after, "ghaf_serving_prediction_log_dropped_total") == plog.stats.dropped
    assert ("ghaf_serving_prediction_log_queue_depth", ()) in after
    # The process collectors and the build, as on the platform's /metrics.
    names = {name for name, _ in after}
    assert {"process_resident_memory_bytes", "python_gc_collections_total"} <= names
    assert any(name == "ghaf_build_info" for name in names)


def test_batches_show_in_the_batch_size_histogram(
    served: tuple[str, Any], registered: Registered
) -> None:
    url, _ = served

    def batch_count() -> float:
        samples = _samples(httpx.get(f"{url}/metrics", headers=AUTH).text)
        return _value(samples, "ghaf_serving_batch_rows_count", model="forest", version="1")

    async def burst() -> None:
        async with httpx.AsyncClient(base_url=url, headers=AUTH) as http:
            answers = await asyncio.gather(
                *(
                    http.post("/v2/models/forest/infer", json=_body(registered.X20[:1], "FP32"))
                    for _ in range(40)
                )
            )
        assert {a.status_code for a in answers} == {200}

    before = batch_count()
    asyncio.run(burst())
    calls = batch_count() - before
    assert 1 <= calls <= 40  # 40 one-row requests, merged into at most that many calls
    samples = _samples(httpx.get(f"{url}/metrics", headers=AUTH).text)
    rows = _value(samples, "ghaf_serving_batch_rows_sum", model="forest", version="1")
    assert rows >= 40


def test_metrics_need_a_token_and_probes_are_not_counted(served: tuple[str, Any]) -> None:
    url, _ = served
    assert httpx.get(f"{url}/metrics").status_code == 401
    scrape = httpx.get(f"{url}/metrics", headers=AUTH)
    assert scrape.status_code == 200 and scrape.headers["content-type"].startswith("text/plain")
    before = _samples(scrape.text)
    for _ in range(3):
        assert httpx.get(f"{url}/v2/health/ready").status_code == 200
    after = _samples(httpx.get(f"{url}/metrics", headers=AUTH).text)
    total = "ghaf_serving_requests_total"
    counted = [k for k in after if k[0] == total and after[k] != before.get(k, 0.0)]
    assert counted == []


def test_request_ids_are_echoed_or_made(served: tuple[str, Any]) -> None:
    url, _ = served
    mine = httpx.get(f"{url}/v2", headers={**AUTH, "x-request-id": "abc-123"})
    assert mine.headers["x-request-id"] == "abc-123"
    made = httpx.get(f"{url}/v2", headers={**AUTH, "x-request-id": "bad id; <script>"})
    assert made.headers["x-request-id"] not in ("", "bad id; <script>")


def test_an_app_without_a_prediction_log_exports_no_log_series(
    models: list[LoadedModel],
) -> None:
    app = create_serving_app(models, authorizer=AllowAll())
    assert app.state.prediction_log is None
    text = generate_latest(app.state.metrics.registry).decode()
    assert "ghaf_serving_queue_depth" in text
    assert "ghaf_serving_prediction_log" not in text
