"""Adaptive micro-batching: merged calls split back exactly, back-pressure, isolation."""

from __future__ import annotations

import asyncio
import random
import threading
import time
from collections.abc import Mapping
from typing import Any

import numpy as np
import pytest
from sklearn.linear_model import LogisticRegression

from ghaf.core.errors import InvalidInput
from ghaf.serving.batching import Batcher, BatchingOptions, QueueFull

Array = np.ndarray[Any, Any]


def run(coro: Any) -> Any:
    return asyncio.run(coro)


def test_concurrent_requests_of_random_sizes_get_exactly_their_rows() -> None:
    rng = np.random.default_rng(7)
    X = rng.normal(size=(500, 6))
    model = LogisticRegression(max_iter=300).fit(X, (X[:, 0] + X[:, 1] > 0).astype(int))
    calls: list[int] = []

    def predict(inputs: Mapping[str, Array]) -> dict[str, Array]:
        rows = inputs["X"]
        calls.append(len(rows))
        time.sleep(0.002)  # a model call takes time: requests pile up meanwhile
        return {"label": model.predict(rows), "proba": model.predict_proba(rows)}

    sizes = [random.Random(3).randint(1, 17) for _ in range(200)]
    requests = [rng.normal(size=(n, 6)) for n in sizes]

    async def main() -> list[dict[str, Array]]:
        batcher = Batcher(predict, BatchingOptions(max_batch_size=32, max_latency_ms=5))
        batcher.start()
        try:
            return await asyncio.gather(*(batcher.predict({"X": r}) for r in requests))
        finally:
            await batcher.stop()

    answers = run(main())
    for rows, answer in zip(requests, answers, strict=True):
        assert answer["label"].shape == (len(rows),)
        np.testing.assert_array_equal(answer["label"], model.predict(rows))
        np.testing.assert_allclose(answer["proba"], model.predict_proba(rows), rtol=1e-12)
    assert sum(calls) == sum(sizes)
    assert len(calls) < len(requests) / 3  # merged: far fewer calls than requests
    assert max(calls) <= 32 or any(n > 32 for n in sizes)


def test_a_lone_request_runs_at_once() -> None:
    def predict(inputs: Mapping[str, Array]) -> dict[str, Array]:
        return {"y": inputs["X"] * 2}

    async def main() -> float:
        batcher = Batcher(predict, BatchingOptions(max_batch_size=64, max_latency_ms=500))
        batcher.start()
        try:
            started = time.perf_counter()
            for _ in range(5):
                await batcher.predict({"X": np.ones((1, 2))})
            return (time.perf_counter() - started) / 5
        finally:
            await batcher.stop()

    assert run(main()) < 0.1  # never waits the 500 ms window when alone


def test_a_full_queue_refuses_at_once_and_the_rest_complete() -> None:
    release = threading.Event()

    def predict(inputs: Mapping[str, Array]) -> dict[str, Array]:
        release.wait(10)
        return {"y": inputs["X"] + 1}

    async def main() -> None:
        batcher = Batcher(predict, BatchingOptions(max_queue=2, max_batch_size=1))
        batcher.start()
        try:
            running = asyncio.ensure_future(batcher.predict({"X": np.zeros((1, 1))}))
            await asyncio.sleep(0.05)  # the first call is running (blocked)
            waiting = [
                asyncio.ensure_future(batcher.predict({"X": np.full((1, 1), i)})) for i in (1, 2)
            ]
            await asyncio.sleep(0.01)
            assert batcher.depth == 2
            with pytest.raises(QueueFull, match="2 requests waiting") as refused:
                await batcher.predict({"X": np.zeros((1, 1))})
            assert refused.value.status == 429 and refused.value.retry_after >= 1
            release.set()
            results = await asyncio.gather(running, *waiting)
            assert [r["y"].item() for r in results] == [1, 2, 3]
            assert batcher.stats.refused == 1
        finally:
            release.set()
            await batcher.stop()

    run(main())


def test_a_failing_request_fails_alone() -> None:
    def predict(inputs: Mapping[str, Array]) -> dict[str, Array]:
        if (inputs["X"] < 0).any():
            raise ValueError("negative values are not allowed")
        time.sleep(0.01)
        return {"y": inputs["X"] * 10}

    async def main() -> list[Any]:
        batcher = Batcher(predict, BatchingOptions(max_batch_size=16, max_latency_ms=20))
        batcher.start()
        try:
            values = [1, 2, -3, 4, 5, 6]
            return await asyncio.gather(
                *(batcher.predict({"X": np.full((1, 1), float(v))}) for v in values),
                return_exceptions=True,
            )
        finally:
            await batcher.stop()

    results = run(main())
    assert isinstance(results[2], ValueError)
    assert [r["y"].item() for i, r in enumerate(results) if i != 2] == [10, 20, 40, 50, 60]


def test_outputs_that_do_not_follow_the_rows_run_request_by_request() -> None:
    def predict(inputs: Mapping[str, Array]) -> dict[str, Array]:
        time.sleep(0.005)
        return {"total": np.asarray([inputs["X"].sum()])}  # one value per call

    async def main() -> tuple[list[dict[str, Array]], bool]:
        batcher = Batcher(predict, BatchingOptions(max_batch_size=16, max_latency_ms=10))
        batcher.start()
        try:
            answers = await asyncio.gather(
                *(batcher.predict({"X": np.full((n, 1), 1.0)}) for n in (1, 2, 3, 4, 5, 6))
            )
            return answers, batcher.batchable
        finally:
            await batcher.stop()

    answers, batchable = run(main())
    assert [a["total"].item() for a in answers] == [1, 2, 3, 4, 5, 6]
    assert batchable is False


def test_requests_of_different_widths_are_never_merged() -> None:
    seen: list[tuple[int, ...]] = []

    def predict(inputs: Mapping[str, Array]) -> dict[str, Array]:
        seen.append(inputs["X"].shape)
        time.sleep(0.005)
        return {"y": inputs["X"].sum(axis=1)}

    async def main() -> list[dict[str, Array]]:
        batcher = Batcher(predict, BatchingOptions(max_batch_size=64, max_latency_ms=10))
        batcher.start()
        try:
            shapes = [(2, 3), (1, 4), (3, 3), (2, 4)]
            return await asyncio.gather(*(batcher.predict({"X": np.ones(s)}) for s in shapes))
        finally:
            await batcher.stop()

    answers = run(main())
    assert [a["y"].tolist() for a in answers] == [[3, 3], [4], [3, 3, 3], [4, 4]]
    assert sum(rows for rows, width in seen if width == 3) == 5
    assert sum(rows for rows, width in seen if width == 4) == 3


def test_options_are_checked() -> None:
    with pytest.raises(InvalidInput, match="max_batch_size"):
        BatchingOptions(max_batch_size=0)
    with pytest.raises(InvalidInput, match="max_latency_ms"):
        BatchingOptions(max_latency_ms=-1)


def test_callers_that_fall_out_of_step_are_merged_again() -> None:
    # A closed loop of callers (as 32 connections under load): one joins while a call
    # runs. The batch after that call waits for the callers it answered instead of
    # starting with the late one alone, which would split the callers into two groups
    # whose calls alternate, each caller then waiting for two calls.
    calls: list[int] = []

    def predict(inputs: Mapping[str, Array]) -> dict[str, Array]:
        calls.append(len(inputs["X"]))
        time.sleep(0.04)
        return {"y": inputs["X"].sum(axis=1)}

    async def main() -> None:
        batcher = Batcher(predict, BatchingOptions(max_batch_size=8, max_latency_ms=10))
        batcher.start()

        async def caller(rounds: int) -> None:
            for _ in range(rounds):
                await batcher.predict({"X": np.ones((1, 3))})
                await asyncio.sleep(0.002)  # the answer's way back, and the next request's

        try:
            early = [asyncio.create_task(caller(10)) for _ in range(7)]
            while not batcher._in_flight:  # the late caller arrives early in a call
                await asyncio.sleep(0.001)
            await asyncio.gather(*early, caller(8))
        finally:
            await batcher.stop()

    run(main())
    assert sum(calls) == 7 * 10 + 8
    assert calls[-4:-1] == [8, 8, 8], calls  # in step again: every caller in each call
