"""The canary's judgement on made-up evidence: hold until a step's minimums are met,
advance when the canary is as good as the stable variant, roll back the moment it is
clearly worse (failures or p99 past the margins), and never on too little evidence."""

from __future__ import annotations

from ghaf.deployments.canary import JUDGED_AFTER, Margins, decide
from ghaf.deployments.traffic import ERROR, OK, Tally

MARGINS = Margins(max_failure_rate_increase=0.01, max_p99_increase=0.5, p99_slack_ms=5.0)


def _tally(n: int, *, seconds: float = 0.002, failed: int = 0) -> Tally:
    tally = Tally()
    for i in range(n):
        tally.add(seconds, ERROR if i < failed else OK)
    return tally


def _decide(canary: Tally, stable: Tally, *, elapsed_s: float = 120, min_requests: int = 100):
    return decide(
        canary=canary,
        stable=stable,
        margins=MARGINS,
        min_duration_s=60,
        min_requests=min_requests,
        elapsed_s=elapsed_s,
    )


def test_a_healthy_canary_advances_once_the_step_has_run_long_and_busy_enough() -> None:
    stable = _tally(1000, failed=5)
    assert _decide(_tally(150, failed=1), stable).action == "advance"
    held = _decide(_tally(150), stable, elapsed_s=30)
    assert held.action == "hold" and "30 of 60 s" in held.why
    held = _decide(_tally(40), stable)
    assert held.action == "hold" and "40 of 100 canary requests" in held.why


def test_a_failing_canary_is_rolled_back_before_the_step_is_over() -> None:
    decision = _decide(_tally(JUDGED_AFTER, failed=5), _tally(1000), elapsed_s=1)
    assert decision.action == "roll_back"
    assert "failed 5 of 20" in decision.why and "margin is 1.00%" in decision.why


def test_too_few_canary_answers_are_not_judged() -> None:
    assert _decide(_tally(JUDGED_AFTER - 1, failed=19), _tally(1000)).action == "hold"


def test_a_step_with_a_small_minimum_is_judged_at_that_minimum() -> None:
    decision = _decide(_tally(5, failed=5), _tally(100), min_requests=5)
    assert decision.action == "roll_back"


def test_failures_within_the_margin_of_the_stable_variant_are_tolerated() -> None:
    # The stable fails 10%, the canary 10.5%: within one point.
    assert _decide(_tally(200, failed=21), _tally(1000, failed=100)).action == "advance"


def test_a_slow_canary_is_rolled_back_on_its_p99() -> None:
    decision = _decide(_tally(200, seconds=0.050), _tally(1000, seconds=0.020))
    assert decision.action == "roll_back" and "p99" in decision.why


def test_a_p99_from_too_few_answers_is_not_judged() -> None:
    # 150 answers: their p99 is one of the slowest two, not the variant's tail.
    slow = _tally(150, seconds=0.050)
    assert _decide(slow, _tally(1000, seconds=0.020)).action == "advance"


def test_the_slack_keeps_microsecond_noise_from_reading_as_a_regression() -> None:
    # 3x slower but under a millisecond: within the 5 ms slack.
    assert _decide(_tally(200, seconds=0.0009), _tally(1000, seconds=0.0003)).action == "advance"


def test_a_stable_variant_without_traffic_leaves_only_the_failure_rule() -> None:
    assert _decide(_tally(200, seconds=2.0), Tally()).action == "advance"
    assert _decide(_tally(200, failed=10), Tally()).action == "roll_back"
