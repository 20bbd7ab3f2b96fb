"""The lock-free series of one event loop render what prometheus_client's would."""

from __future__ import annotations

import random

from prometheus_client import CollectorRegistry, generate_latest

from ghaf.platform.metrics import LoopHistogram, LoopRequestSeries, RequestSeries


def _lines(registry: CollectorRegistry) -> set[str]:
    text = generate_latest(registry).decode()
    return {line for line in text.splitlines() if "_created" not in line}


def test_loop_series_read_as_prometheus_clients_do() -> None:
    ours, theirs = CollectorRegistry(), CollectorRegistry()
    options = {
        "name": "t",
        "labels": ("model", "version"),
        "requests_help": "requests",
        "latency_help": "latency",
        "buckets": (0.001, 0.01, 0.1),
    }
    loop, reference = LoopRequestSeries(ours, **options), RequestSeries(theirs, **options)  # type: ignore[arg-type]
    rng = random.Random(7)
    for _ in range(2000):
        model, status = rng.choice(["a", "b", ""]), rng.choice([200, 400, 429])
        seconds = rng.choice([0.001, 0.01, 0.1, rng.random() / 5])  # edges are inclusive
        loop.record(model, "1", status, seconds)
        reference.record(model, "1", status, seconds)
    assert _lines(ours) == _lines(theirs)


def test_a_loop_histogram_counts_each_value_in_its_bucket() -> None:
    registry = CollectorRegistry()
    histogram = LoopHistogram(registry, "rows", "rows per call", ["model"], buckets=(1, 4))
    for rows in (1, 2, 4, 5, 100):
        histogram.observe(("m",), rows)
    text = generate_latest(registry).decode()
    assert 'rows_bucket{le="1.0",model="m"} 1.0' in text
    assert 'rows_bucket{le="4.0",model="m"} 3.0' in text
    assert 'rows_bucket{le="+Inf",model="m"} 5.0' in text
    assert 'rows_count{model="m"} 5.0' in text and 'rows_sum{model="m"} 112.0' in text
