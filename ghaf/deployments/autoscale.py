"""Autoscaling policy for one deployment variant, as a pure function of its load history.

Modelled on Knative's concurrency autoscaler and Ray Serve's ``target_ongoing_requests``,
with Kubernetes HPA's stabilisation windows. The load signal is **in-flight requests**
across the variant's replicas, queued ones included (:class:`Sample`), sampled by the
caller at whatever cadence it likes. :func:`desired_replicas` turns the history into a
replica count:

1. Each sample's **raw desire** is ``ceil(in_flight / target_in_flight)``.
2. Samples are a step function: a sample's value holds from its time until the next
   sample. The values *in effect* over a window ``[now - w, now]`` are the sample in
   effect at ``now - w`` plus every later one up to ``now``. Before the first sample
   the load is unknown and is taken to be whatever justified ``current`` (raw desire =
   ``current``, in flight iff ``current > 0``), so a short history never shrinks a
   variant on the strength of what it has not seen (a controller that just restarted
   waits out the windows).
3. **Up:** the smallest raw desire in effect over ``upscale_window_s``. If it exceeds
   ``current`` the variant grows to it. The default window of 0 is the latest sample,
   so a burst scales up at once; a positive window asks a rise to last that long.
4. **Down:** the largest raw desire in effect over ``downscale_window_s``. If it is
   below ``current`` the variant shrinks to it, so a dip shorter than the window never
   scales down and, after a peak, the count steps down as the peak ages out of it.
5. Otherwise ``current`` stays. Since the latest sample is in effect in both windows,
   up <= down and the two rules never disagree.
6. The result is clamped to ``[min_replicas, max_replicas]``. With ``min_replicas == 0``
   the variant goes to zero only once nothing at all has been in flight for
   ``scale_to_zero_after_s`` (and the down window allows it); any in-flight request
   in that period keeps, or at zero brings back at once, one replica, whatever the
   upscale window says: a request held at zero replicas waits for it.

Everything is a function of the arguments, so a controller can replay a trace offline
and get the decisions it would have taken.
"""

from __future__ import annotations

import bisect
import math
from collections.abc import Sequence
from dataclasses import dataclass

__all__ = ["Policy", "Sample", "desired_replicas"]

# In-flight counts averaged over an interval come with float noise (8.000000001 against
# a target of 8); without the slack that noise would buy a whole extra replica.
_RAW_SLACK = 1e-9
_SECONDS_AND_TARGET = (
    "target_in_flight",
    "upscale_window_s",
    "downscale_window_s",
    "scale_to_zero_after_s",
)


@dataclass(frozen=True)
class Policy:
    """Bounds and targets for one variant's replica count; see the module docstring.

    Raises ``ValueError`` naming the field when a value is out of range.
    """

    min_replicas: int = 1
    max_replicas: int = 1
    target_in_flight: float = 8.0
    upscale_window_s: float = 0.0
    downscale_window_s: float = 60.0
    scale_to_zero_after_s: float = 300.0

    def __post_init__(self) -> None:
        for name in ("min_replicas", "max_replicas"):
            value = getattr(self, name)
            if isinstance(value, bool) or not isinstance(value, int):
                raise ValueError(f"{name}: must be an integer, got {value!r}")
        if self.min_replicas < 0:
            raise ValueError(f"min_replicas: must be >= 0, got {self.min_replicas}")
        if self.max_replicas < max(1, self.min_replicas):
            raise ValueError(
                f"max_replicas: must be >= 1 and >= min_replicas ({self.min_replicas}), "
                f"got {self.max_replicas}"
            )
        for name in _SECONDS_AND_TARGET:
            value = getattr(self, name)
            if isinstance(value, bool) or not isinstance(value, int | float):
                raise ValueError(f"{name}: must be a number, got {value!r}")
            if not math.isfinite(value) or value < 0:
                raise ValueError(f"{name}: must be finite and >= 0, got {value!r}")
            object.__setattr__(self, name, float(value))
        if self.target_in_flight == 0:
            raise ValueError("target_in_flight: must be > 0, got 0.0")


@dataclass(frozen=True)
class Sample:
    """In-flight requests (queued ones included) across a variant's replicas at ``at``.

    ``at`` is in seconds on the same clock as ``now`` in :func:`desired_replicas`.
    """

    at: float
    in_flight: float

    def __post_init__(self) -> None:
        for name in ("at", "in_flight"):
            value = getattr(self, name)
            if isinstance(value, bool) or not isinstance(value, int | float):
                raise ValueError(f"{name}: must be a number, got {value!r}")
            if not math.isfinite(value):
                raise ValueError(f"{name}: must be finite, got {value!r}")
        if self.in_flight < 0:
            raise ValueError(f"in_flight: must be >= 0, got {self.in_flight!r}")


def desired_replicas(policy: Policy, *, current: int, samples: Sequence[Sample], now: float) -> int:
    """The replica count ``policy`` wants at ``now``, given ``current`` and the history.

    ``samples`` must be in time order and should reach back past the longest of the
    policy's windows (an older sample is what was in effect when the window opened);
    samples after ``now`` are ignored. With no sample at or before ``now`` the answer
    is ``current`` clamped to the policy's bounds.
    """
    if isinstance(current, bool) or not isinstance(current, int) or current < 0:
        raise ValueError(f"current: must be an integer >= 0, got {current!r}")
    if not math.isfinite(now):
        raise ValueError(f"now: must be finite, got {now!r}")
    times: list[float] = []
    flights: list[float] = []
    for sample in samples:
        if times and sample.at < times[-1]:
            raise ValueError(f"samples: must be in time order, {sample.at} after {times[-1]}")
        if sample.at > now:
            break
        times.append(sample.at)
        flights.append(sample.in_flight)
    if not times:
        return _clamped(policy, current)

    target = policy.target_in_flight

    def raw(in_flight: float) -> int:
        return max(0, math.ceil(in_flight / target - _RAW_SLACK))

    up_first, up_padded = _window(times, now - policy.upscale_window_s)
    up = min(raw(f) for f in flights[up_first:])
    if up_padded:
        up = min(up, current)
    down_first, down_padded = _window(times, now - policy.downscale_window_s)
    down = max(raw(f) for f in flights[down_first:])
    if down_padded:
        down = max(down, current)

    if up > current:
        desired = up
    elif down < current:
        desired = down
    else:
        desired = current
    desired = _clamped(policy, desired)

    if desired == 0:
        zero_first, zero_padded = _window(times, now - policy.scale_to_zero_after_s)
        busy = any(f > 0 for f in flights[zero_first:]) or (zero_padded and current > 0)
        if busy:
            desired = 1
    return desired


def _window(times: list[float], start: float) -> tuple[int, bool]:
    """Index of the first sample in effect from ``start`` on, and whether the unknown
    time before the first sample is in effect too (``start`` precedes every sample)."""
    in_effect_at_start = bisect.bisect_right(times, start) - 1
    return max(in_effect_at_start, 0), in_effect_at_start < 0


def _clamped(policy: Policy, replicas: int) -> int:
    return min(max(replicas, policy.min_replicas), policy.max_replicas)
