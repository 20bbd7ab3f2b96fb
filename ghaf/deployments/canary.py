"""The canary rollout's judgement, as a pure function of the evidence (unit-tested on
made-up tallies; the service applies what it decides).

At each step the canary takes a growing part of the stable variant's traffic. A step
is passed once it has lasted its ``min_duration_s`` and the canary answered at least its
``min_requests`` there, as well as the stable variant did. It is failed, and the
rollout rolled back, as soon as

- the canary answered enough requests to judge its failures (:data:`JUDGED_AFTER`, or
  the step's minimum if smaller) and its failure rate (errors and refusals over
  requests) is above the stable variant's by more than ``max_failure_rate_increase``, or
- it answered :data:`P99_JUDGED_AFTER` requests in the step and its p99 latency is above
  the stable variant's by more than ``max_p99_increase`` (relative) plus
  ``p99_slack_ms`` (so that microsecond noise on a fast model is not read as a
  regression).

The canary is judged on the current step's traffic; the stable variant on all of its
traffic since the rollout started (at the last step, 100%, it has none of its own).
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Literal

from ghaf.deployments.traffic import Tally

JUDGED_AFTER = 20
"""Canary answers needed before a failure rate can be called (fewer: noise)."""
P99_JUDGED_AFTER = 200
"""Canary answers needed before its p99 can be called: from fewer, the p99 is one of the
slowest few answers (a replica's first, a noisy neighbour's), not the variant's tail."""


@dataclass(frozen=True)
class Margins:
    max_failure_rate_increase: float
    max_p99_increase: float
    p99_slack_ms: float


@dataclass(frozen=True)
class Decision:
    action: Literal["hold", "advance", "roll_back"]
    why: str


def _ms(seconds: float | None) -> str:
    return "-" if seconds is None else f"{seconds * 1000:.1f} ms"


def decide(
    *,
    canary: Tally,
    stable: Tally,
    margins: Margins,
    min_duration_s: float,
    min_requests: int,
    elapsed_s: float,
) -> Decision:
    """What to do with the rollout's current step, and why (in words for people)."""
    rates = (canary.failure_rate or 0.0, stable.failure_rate or 0.0)
    if not all(math.isfinite(r) and 0 <= r <= 1 for r in rates):
        return Decision("hold", "the evidence is unreadable (failure rates out of range)")
    judged = canary.requests >= min(JUDGED_AFTER, max(1, min_requests))
    if judged:
        canary_rate = canary.failure_rate or 0.0
        stable_rate = stable.failure_rate or 0.0
        if canary_rate > stable_rate + margins.max_failure_rate_increase:
            return Decision(
                "roll_back",
                f"the canary failed {canary.failed} of {canary.requests} requests "
                f"({canary_rate:.2%}) against the stable variant's {stable_rate:.2%}; "
                f"the margin is {margins.max_failure_rate_increase:.2%}",
            )
        canary_p99, stable_p99 = canary.quantile(0.99), stable.quantile(0.99)
        if canary.requests >= P99_JUDGED_AFTER and canary_p99 is not None and stable_p99:
            bound = stable_p99 * (1 + margins.max_p99_increase) + margins.p99_slack_ms / 1000
            if canary_p99 > bound:
                return Decision(
                    "roll_back",
                    f"the canary's p99 latency is {_ms(canary_p99)} against the stable "
                    f"variant's {_ms(stable_p99)}; at most {_ms(bound)} is allowed",
                )
    waiting = []
    if elapsed_s < min_duration_s:
        waiting.append(f"{elapsed_s:.0f} of {min_duration_s:g} s")
    if canary.requests < min_requests:
        waiting.append(f"{canary.requests} of {min_requests} canary requests")
    if waiting:
        return Decision("hold", "the step has run " + " and ".join(waiting))
    return Decision(
        "advance",
        f"the canary answered {canary.requests} requests, failing "
        f"{canary.failure_rate or 0.0:.2%} (stable {stable.failure_rate or 0.0:.2%}), "
        f"p99 {_ms(canary.quantile(0.99))} (stable {_ms(stable.quantile(0.99))})",
    )
