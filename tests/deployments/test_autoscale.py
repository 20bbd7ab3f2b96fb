"""Autoscaling policy on synthetic load traces: bursts, dips, a diurnal cycle, idling
to zero and waking from it, bounds, and refused input."""

from __future__ import annotations

import itertools
import math
import re
from collections.abc import Callable
from typing import Any

import numpy as np
import pytest

from ghaf.deployments.autoscale import Policy, Sample, desired_replicas


def _simulate(
    policy: Policy,
    load: Callable[[float], float],
    *,
    until: float,
    step: float = 1.0,
    start: int = 1,
) -> list[tuple[float, int]]:
    """Sample ``load`` every ``step`` seconds from t = 0, act on each decision at once,
    and keep only the history the windows need, as a controller would."""
    keep = max(policy.upscale_window_s, policy.downscale_window_s, policy.scale_to_zero_after_s)
    history: list[Sample] = []
    current = start
    trace = []
    for i in range(round(until / step)):
        now = i * step
        history.append(Sample(at=now, in_flight=load(now)))
        while len(history) > 1 and history[1].at <= now - keep:
            history.pop(0)
        current = desired_replicas(policy, current=current, samples=history, now=now)
        trace.append((now, current))
    return trace


def _changes(trace: list[tuple[float, int]]) -> list[tuple[float, int, int]]:
    """(time, before, after) for every change of replica count."""
    return [(t, a, b) for (_, a), (t, b) in itertools.pairwise(trace) if a != b]


POLICY = Policy(min_replicas=1, max_replicas=10, target_in_flight=8, downscale_window_s=60)


def test_a_burst_scales_up_at_once_and_down_only_a_window_after_it_ends() -> None:
    # 10 s of 80 in flight on a base of 8: the burst's last sample holds until t = 110.
    trace = _simulate(POLICY, lambda t: 80.0 if 100 <= t < 110 else 8.0, until=300)
    assert _changes(trace) == [(100.0, 1, 10), (170.0, 10, 1)]


def test_a_dip_shorter_than_the_downscale_window_never_scales_down() -> None:
    trace = _simulate(POLICY, lambda t: 0.0 if 100 <= t < 155 else 80.0, until=400, start=10)
    assert {replicas for _, replicas in trace} == {10}
    longer = _simulate(POLICY, lambda t: 0.0 if 100 <= t < 165 else 80.0, until=400, start=10)
    assert _changes(longer) == [(160.0, 10, 1), (165.0, 1, 10)]


def test_a_positive_upscale_window_ignores_spikes_shorter_than_it() -> None:
    policy = Policy(max_replicas=10, target_in_flight=8, upscale_window_s=30)
    short = _simulate(policy, lambda t: 80.0 if 100 <= t < 120 else 8.0, until=300)
    assert _changes(short) == []
    # A rise that lasts is followed at the window's end, by the least it has held at.
    lasting = _simulate(
        policy, lambda t: (80.0 if t < 110 else 40.0) if t >= 100 else 8.0, until=300
    )
    assert _changes(lasting)[0] == (130.0, 1, 5)
    # Nor does a restarted controller take 10 s of history for a 30 s rise.
    recent = [Sample(at=t, in_flight=80.0) for t in range(1000, 1011)]
    assert desired_replicas(policy, current=1, samples=recent, now=1010) == 1
    assert desired_replicas(policy, current=1, samples=recent, now=1030) == 10


def test_a_step_down_in_load_steps_replicas_down_as_the_peak_ages_out() -> None:
    # 80 -> 40 -> 8: down to 5 a window after the first drop, to 1 a window after the second.
    trace = _simulate(
        POLICY, lambda t: 80.0 if t < 100 else (40.0 if t < 200 else 8.0), until=400, start=10
    )
    assert _changes(trace) == [(160.0, 10, 5), (260.0, 5, 1)]


def test_a_diurnal_load_is_followed_within_bounds_without_flapping() -> None:
    period, step = 7200.0, 5.0
    noise = np.random.default_rng(3).normal(0.0, 4.0, size=int(2 * period / step) + 1)

    def load(t: float) -> float:
        cycle = 40.0 + 35.0 * math.sin(2 * math.pi * t / period)
        return max(0.0, cycle + float(noise[int(t / step)]))

    policy = Policy(min_replicas=1, max_replicas=8, target_in_flight=8, downscale_window_s=60)
    trace = _simulate(policy, load, until=2 * period, step=step)
    window = int(policy.downscale_window_s / step)
    for i, (t, replicas) in enumerate(trace):
        assert 1 <= replicas <= 8
        raw = [math.ceil(load(s) / 8) for s, _ in trace[max(0, i - window) : i + 1]]
        # Never short of the latest demand (up is immediate), never above the window's peak.
        assert min(8, max(1, raw[-1])) <= replicas <= min(8, max(1, max(raw))), t
    replicas_seen = [r for _, r in trace]
    # It follows the cycle: pinned at max near each peak, down to 1-2 near each trough.
    for cycle in range(2):
        peak = int((cycle * period + period / 4) / step)
        trough = int((cycle * period + 3 * period / 4) / step)
        assert replicas_seen[peak] == 8
        assert replicas_seen[trough] <= 2

    changes = _changes(trace)
    ups = [t for t, before, after in changes if after > before]
    downs = [t for t, before, after in changes if after < before]
    # Hysteresis: after any scale-up, nothing scales down for a whole window.
    for up in ups:
        assert not [d for d in downs if up < d < up + policy.downscale_window_s], up
    # Without the window the same noisy load flaps several times as often.
    jumpy = Policy(min_replicas=1, max_replicas=8, target_in_flight=8, downscale_window_s=0)
    jumpy_changes = _changes(_simulate(jumpy, load, until=2 * period, step=step))
    assert len(changes) * 5 < len(jumpy_changes)


TO_ZERO = Policy(
    min_replicas=0,
    max_replicas=4,
    target_in_flight=8,
    downscale_window_s=60,
    scale_to_zero_after_s=300,
)


def test_idle_traffic_scales_to_zero_after_the_idle_period_and_not_before() -> None:
    # 16 in flight until t = 100, then nothing: 2 replicas, 1 a window later, 0 once
    # idle for scale_to_zero_after_s.
    trace = _simulate(TO_ZERO, lambda t: 16.0 if t < 100 else 0.0, until=600, start=2)
    assert _changes(trace) == [(160.0, 2, 1), (400.0, 1, 0)]


def test_a_single_request_within_the_idle_period_restarts_its_clock() -> None:
    trace = _simulate(
        TO_ZERO, lambda t: 1.0 if t < 100 or 250 <= t < 251 else 0.0, until=900, start=1
    )
    assert _changes(trace) == [(551.0, 1, 0)]


def test_a_request_at_zero_replicas_gets_one_at_once_despite_an_upscale_window() -> None:
    policy = Policy(min_replicas=0, max_replicas=4, target_in_flight=8, upscale_window_s=30)
    samples = [Sample(at=t, in_flight=0.0) for t in range(0, 1000, 10)]
    assert desired_replicas(policy, current=0, samples=samples, now=995) == 0
    held = [*samples, Sample(at=1000, in_flight=1.0)]
    assert desired_replicas(policy, current=0, samples=held, now=1000) == 1
    # Load enough for more replicas still waits for the upscale window beyond the first.
    burst = [*samples, Sample(at=1000, in_flight=30.0)]
    assert desired_replicas(policy, current=0, samples=burst, now=1000) == 1
    assert desired_replicas(policy, current=1, samples=burst, now=1030) == 4


def test_min_and_max_replicas_bound_every_answer() -> None:
    policy = Policy(min_replicas=2, max_replicas=5, target_in_flight=8)
    flood = [Sample(at=0, in_flight=1e6)]
    idle = [Sample(at=t, in_flight=0.0) for t in range(0, 1000, 10)]
    assert desired_replicas(policy, current=2, samples=flood, now=1) == 5
    assert desired_replicas(policy, current=5, samples=idle, now=1000) == 2
    # A policy lowered below the running count takes effect at once.
    assert desired_replicas(policy, current=9, samples=flood, now=1) == 5
    assert desired_replicas(policy, current=9, samples=[], now=1) == 5
    assert desired_replicas(policy, current=0, samples=[], now=1) == 2
    assert desired_replicas(policy, current=3, samples=[], now=1) == 3


def test_a_history_shorter_than_a_window_does_not_shrink_the_variant() -> None:
    # A restarted controller has seen 10 s of nothing: not evidence of a quiet minute.
    short = [Sample(at=t, in_flight=0.0) for t in range(1000, 1011)]
    assert desired_replicas(POLICY, current=6, samples=short, now=1010) == 6
    assert desired_replicas(TO_ZERO, current=0, samples=short, now=1010) == 0
    # Quiet for the down window but not yet for the idle period: one replica, not zero.
    minute = [Sample(at=t, in_flight=0.0) for t in range(1000, 1100)]
    assert desired_replicas(TO_ZERO, current=3, samples=minute, now=1099) == 1


def test_samples_after_now_are_ignored_and_fractional_noise_buys_no_replica() -> None:
    samples = [Sample(at=0, in_flight=8.0), Sample(at=10, in_flight=500.0)]
    assert desired_replicas(POLICY, current=1, samples=samples, now=5) == 1
    averaged = [Sample(at=0, in_flight=(0.1 + 0.2) / 0.3 * 8)]  # 8.000000000000002
    assert desired_replicas(POLICY, current=1, samples=averaged, now=0) == 1
    assert desired_replicas(POLICY, current=1, samples=[Sample(0, 8.01)], now=0) == 2


@pytest.mark.parametrize(
    ("options", "field"),
    [
        ({"min_replicas": -1}, "min_replicas"),
        ({"min_replicas": 1.5}, "min_replicas"),
        ({"min_replicas": True}, "min_replicas"),
        ({"max_replicas": 0, "min_replicas": 0}, "max_replicas"),
        ({"min_replicas": 3, "max_replicas": 2}, "max_replicas"),
        ({"target_in_flight": 0}, "target_in_flight"),
        ({"target_in_flight": math.nan}, "target_in_flight"),
        ({"target_in_flight": "8"}, "target_in_flight"),
        ({"upscale_window_s": -1}, "upscale_window_s"),
        ({"downscale_window_s": math.inf}, "downscale_window_s"),
        ({"scale_to_zero_after_s": -0.5}, "scale_to_zero_after_s"),
    ],
)
def test_bad_policies_are_refused_naming_the_field(options: dict[str, Any], field: str) -> None:
    with pytest.raises(ValueError, match=rf"^{field}:"):
        Policy(**options)


def test_bad_samples_and_arguments_are_refused() -> None:
    with pytest.raises(ValueError, match=r"^in_flight:"):
        Sample(at=0, in_flight=-1)
    with pytest.raises(ValueError, match=r"^in_flight:"):
        Sample(at=0, in_flight=math.nan)
    with pytest.raises(ValueError, match=r"^at:"):
        Sample(at=math.inf, in_flight=0)
    unordered = [Sample(at=10, in_flight=0), Sample(at=5, in_flight=0)]
    with pytest.raises(ValueError, match=re.escape("samples: must be in time order")):
        desired_replicas(POLICY, current=1, samples=unordered, now=20)
    with pytest.raises(ValueError, match=r"^current:"):
        desired_replicas(POLICY, current=-1, samples=[], now=0)
    with pytest.raises(ValueError, match=r"^now:"):
        desired_replicas(POLICY, current=1, samples=[], now=math.nan)
