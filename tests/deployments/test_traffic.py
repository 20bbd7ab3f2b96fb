"""Variant tallies: counts, merging, quantiles within the bucket width, and stored rows
read back defensively."""

from __future__ import annotations

import numpy as np

from ghaf.deployments.traffic import ERROR, OK, REFUSED, Tally, Traffic, Where


def _tally(latencies: np.ndarray, *, errors: int = 0, refused: int = 0) -> Tally:
    tally = Tally()
    for i, seconds in enumerate(latencies):
        outcome = ERROR if i < errors else REFUSED if i < errors + refused else OK
        tally.add(float(seconds), outcome)
    return tally


def test_counts_and_failure_rate() -> None:
    tally = _tally(np.full(100, 0.002), errors=3, refused=2)
    assert (tally.requests, tally.errors, tally.refused, tally.failed) == (100, 3, 2, 5)
    assert tally.failure_rate == 0.05
    assert Tally().failure_rate is None and Tally().quantile(0.99) is None


def test_quantiles_are_never_below_and_at_most_ten_percent_above_the_truth() -> None:
    rng = np.random.default_rng(0)
    latencies = rng.lognormal(mean=np.log(0.004), sigma=0.8, size=20_000)
    tally = _tally(latencies)
    for q in (0.5, 0.9, 0.99):
        true = float(np.quantile(latencies, q, method="inverted_cdf"))
        read = tally.quantile(q)
        assert read is not None and true <= read <= true * 1.1 + 1e-12, (q, true, read)


def test_merging_two_tallies_equals_counting_both() -> None:
    rng = np.random.default_rng(1)
    a, b = rng.exponential(0.01, 500), rng.exponential(0.05, 700)
    merged = _tally(a, errors=5)
    merged.merge(_tally(b, refused=7))
    both = _tally(np.concatenate([a, b]))
    assert merged.requests == 1200 and merged.errors == 5 and merged.refused == 7
    assert merged.latency == both.latency
    assert merged.quantile(0.99) == both.quantile(0.99)


def test_extreme_latencies_land_in_the_end_buckets() -> None:
    tally = _tally(np.array([0.0, 1e-9, 10_000.0]))
    assert tally.requests == 3
    assert tally.quantile(0.01) is not None and tally.quantile(1.0) is not None
    assert tally.quantile(1.0) >= 60  # type: ignore[operator]


def test_a_stored_row_round_trips() -> None:
    tally = _tally(np.linspace(0.001, 0.2, 300), errors=4, refused=1)
    row = tally.to_row()
    assert Tally.from_row(**row) == tally


def test_a_tampered_row_is_read_without_raising_and_without_its_junk() -> None:
    back = Tally.from_row(
        requests=9,
        errors=1,
        refused=2,
        latency={"x": 3, "-4": 9, "99999": 1, "12": "many", "13": -2, "14": 5, "15": 1.5},
        latency_sum_s=float("inf"),
    )
    assert back is not None
    assert (back.requests, back.errors, back.refused) == (9, 1, 2)
    assert back.latency == {14: 5}
    assert back.seconds == 0.0


def test_a_row_whose_counts_are_not_counts_is_no_tally() -> None:
    for counts in (
        {"requests": -5, "errors": 0, "refused": 0},
        {"requests": "many", "errors": 0, "refused": 0},
        {"requests": 1e999, "errors": 0, "refused": 0},
        {"requests": True, "errors": 0, "refused": 0},
        {"requests": 3, "errors": 2, "refused": 2},  # more failures than requests
    ):
        assert Tally.from_row(**counts, latency={}) is None, counts  # type: ignore[arg-type]


def test_exported_histogram_is_cumulative_and_ends_with_every_request() -> None:
    tally = _tally(np.array([0.0004, 0.003, 0.003, 0.2, 30.0]))
    buckets = dict(tally.exported())
    assert buckets["+Inf"] == 5
    values = [count for _, count in tally.exported()]
    assert values == sorted(values)
    assert buckets["0.001"] == 1 and buckets["0.005"] == 3 and buckets["0.25"] == 4


def test_the_anonymous_totals_carry_no_names_and_a_project_sees_only_its_own() -> None:
    traffic = Traffic()
    mine = Where(project="acme", deployment="api", deployment_id="d1", variant="a")
    theirs = Where(project="globex", deployment="secret-launch", deployment_id="d2", variant="x")
    traffic.record(mine, 1, 0.01, OK)
    traffic.record(theirs, 1, 0.01, ERROR)
    traffic.dropped(mine)
    traffic.replicas = lambda: {mine: 1, theirs: 2}

    def text(project: str | None) -> str:
        lines = []
        for family in traffic.collect(project):
            for sample in family.samples:
                lines.append(f"{sample.name} {sample.labels} {sample.value}")
        return "\n".join(lines)

    totals = text(None)
    assert "secret-launch" not in totals and "globex" not in totals and "acme" not in totals
    assert "ghaf_deployment_replicas {} 3" in totals
    own = text("acme")
    assert "secret-launch" not in own and "'deployment': 'api'" in own
    assert "ghaf_deployment_shadow_dropped" in own
    traffic.forget("d1")  # removed: its series go (its replicas have stopped)
    traffic.replicas = lambda: {theirs: 2}
    assert "'deployment': 'api'" not in text("acme")
