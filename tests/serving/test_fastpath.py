"""The serving hot path: the same answers as FastAPI's routes, and cheap calls inline."""

from __future__ import annotations

import asyncio
import threading
import time
from collections.abc import Iterator, Mapping
from typing import Any

import numpy as np
import pytest
from fastapi import FastAPI
from fastapi.testclient import TestClient
from starlette.types import Receive, Scope, Send

from ghaf.core.errors import Unauthenticated
from ghaf.serving.app import create_serving_app
from ghaf.serving.batching import Batcher, BatchingOptions
from ghaf.serving.fastpath import ServingApp, hot_routes
from ghaf.serving.schemas import InvokeGrant
from tests.serving.conftest import AllowAll

Array = np.ndarray[Any, Any]
AUTH = {"authorization": "Bearer ghaf_test"}
SLOW = {**AUTH, "x-slow": "1"}


class OneToken(AllowAll):
    """Lets in ``Bearer ghaf_test`` only."""

    async def authorize(self, authorization: str | None, *, client: str | None) -> InvokeGrant:
        if authorization != AUTH["authorization"]:
            raise Unauthenticated("no token", field="Authorization")
        return await super().authorize(authorization, client=client)


class Door:
    """The app, reached through its hot path, or (with ``x-slow: 1``) through FastAPI's
    own routing, so one test client compares both on one event loop."""

    def __init__(self, app: ServingApp) -> None:
        self.app = app

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] == "http" and (b"x-slow", b"1") in scope["headers"]:
            await FastAPI.__call__(self.app, scope, receive, send)
        else:
            await self.app(scope, receive, send)


@pytest.fixture
def client(loaded_forest: tuple[Any, Array]) -> Iterator[TestClient]:
    app = create_serving_app([loaded_forest[0]], authorizer=OneToken())
    assert isinstance(app, ServingApp)
    with TestClient(Door(app)) as test_client:
        yield test_client


def _tensor(x: Array) -> dict[str, Any]:
    return {"name": "X", "shape": list(x.shape), "datatype": "FP32", "data": x.ravel().tolist()}


@pytest.mark.parametrize(
    ("path", "body"),
    [
        ("/v2/models/forest/infer", "good"),
        ("/v2/models/forest/versions/2/infer", "good"),
        ("/v2/models/forest/infer", {"inputs": [{"name": "X", "datatype": "FP64"}]}),
        ("/v2/models/forest/infer", {"inputs": []}),
        ("/v2/models/forest/infer", "not json"),
        ("/v2/models/nope/infer", "good"),
        ("/v2/models/forest/versions/9/infer", "good"),
        ("/predict", "rows"),
    ],
)
def test_the_hot_path_answers_exactly_as_the_routes(
    client: TestClient, loaded_forest: tuple[Any, Array], path: str, body: Any
) -> None:
    X = loaded_forest[1]
    if body == "good":
        body = {"id": "r1", "inputs": [_tensor(X[:3])]}
    elif body == "rows":
        body = X[:2].tolist()
    kwargs: dict[str, Any] = {"content": body} if isinstance(body, str) else {"json": body}
    fast = client.post(path, headers=AUTH, **kwargs)
    slow = client.post(path, headers=SLOW, **kwargs)
    assert (fast.status_code, fast.content) == (slow.status_code, slow.content)
    assert fast.headers["content-type"] == slow.headers["content-type"]
    assert "x-request-id" in fast.headers  # the observer ran on the hot path too


def test_hot_requests_are_checked_and_counted(
    client: TestClient, loaded_forest: tuple[Any, Array]
) -> None:
    X = loaded_forest[1]
    body = {"inputs": [_tensor(X[:1])]}
    assert client.post("/v2/models/forest/infer", json=body).status_code == 401
    for _ in range(3):
        assert client.post("/v2/models/forest/infer", json=body, headers=AUTH).status_code == 200
    metrics = client.get("/metrics", headers=AUTH).text
    assert 'ghaf_serving_requests_total{model="forest",status="200",version="2"} 3.0' in metrics
    expected = loaded_forest[0].predict({"X": X[:1]})["label"].tolist()
    answer = client.post("/v2/models/forest/infer", json=body, headers=AUTH).json()
    assert answer["outputs"][0]["data"] == expected


def test_hot_routes_are_exact_paths(loaded_forest: tuple[Any, Array]) -> None:
    app = create_serving_app([loaded_forest[0]], authorizer=AllowAll())
    assert app.hot is not None
    assert (
        set(app.hot.routes)
        == set(hot_routes(app.state.models, 1024))
        == {
            "/predict",
            "/v2/models/forest/infer",
            "/v2/models/forest/versions/2/infer",
        }
    )


class Recorder:
    """A model that notes the thread each call runs on, taking ``cost_s`` a row."""

    def __init__(self, cost_s: float = 0.0) -> None:
        self.cost_s = cost_s
        self.threads: list[str] = []

    def __call__(self, inputs: Mapping[str, Array]) -> dict[str, Array]:
        if self.cost_s:
            time.sleep(self.cost_s * len(inputs["X"]))
        self.threads.append(threading.current_thread().name)
        return {"y": inputs["X"].sum(axis=1)}


def _call(batcher: Batcher, calls: int) -> None:
    async def main() -> None:
        batcher.start()
        try:
            for _ in range(calls):
                await batcher.predict({"X": np.ones((1, 2))})
        finally:
            await batcher.stop()

    asyncio.run(main())


def test_cheap_calls_run_inline_once_measured() -> None:
    model = Recorder()
    # A free call, against a bound far above what measuring it can cost on a loaded
    # machine (a thread hop there measured over the default 0.2 ms in CI): the mechanism
    # is under test here, not the default's size.
    batcher = Batcher(model, BatchingOptions(inline_max_ms=50))
    _call(batcher, 5)
    assert model.threads[0].startswith("ghaf-model")  # unmeasured: the first goes to a worker
    assert model.threads[1:] == ["MainThread"] * 4
    assert batcher.stats.calls == 5 and batcher.stats.rows == 5


def test_inline_calls_can_be_switched_off_and_costly_calls_never_run_inline() -> None:
    model = Recorder()
    _call(Batcher(model, BatchingOptions(inline_max_ms=0)), 4)
    assert all(name.startswith("ghaf-model") for name in model.threads)
    costly = Recorder(cost_s=0.01)  # 10 ms a call, known after the first one
    _call(Batcher(costly, BatchingOptions(inline_max_ms=0.2)), 3)
    assert all(name.startswith("ghaf-model") for name in costly.threads)


def test_inline_max_ms_is_checked() -> None:
    from ghaf.core.errors import InvalidInput

    with pytest.raises(InvalidInput, match="inline_max_ms"):
        BatchingOptions(inline_max_ms=-1)
