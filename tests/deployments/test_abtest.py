"""A/B test statistics: checked against scipy on the raw outcomes, hand-computed
intervals, a numerical integral of the mSPRT mixture, and a peeking simulation."""

from __future__ import annotations

import math
import re
from typing import Any

import numpy as np
import pytest
from scipy import integrate, stats

from ghaf.deployments.abtest import (
    Comparison,
    Summary,
    always_valid_p,
    compare,
    decide,
    peeking_false_positive_rates,
)


def _binary(rng: np.random.Generator, rate: float, n: int) -> np.ndarray:
    return (rng.random(n) < rate).astype(np.float64)


def test_summary_of_an_array_has_numpys_mean_and_sample_variance() -> None:
    values = np.random.default_rng(0).normal(5.0, 2.0, size=257)
    summary = Summary.from_array(values)
    assert summary.n == 257
    assert summary.mean == pytest.approx(values.mean(), rel=1e-12)
    assert summary.variance == pytest.approx(values.var(ddof=1), rel=1e-10)
    assert Summary.from_array([3.0]).variance == 0.0
    assert Summary.from_array(np.array([True, False, True])).total == 2.0


def test_binary_p_value_is_the_pooled_two_proportion_z_test() -> None:
    rng = np.random.default_rng(1)
    control, treatment = _binary(rng, 0.10, 3000), _binary(rng, 0.12, 2500)
    result = compare(Summary.from_array(control), Summary.from_array(treatment), kind="binary")
    # The pooled z-test is the uncorrected chi-square test of the 2x2 table (z**2 = chi2).
    table = [
        [treatment.sum(), treatment.size - treatment.sum()],
        [control.sum(), control.size - control.sum()],
    ]
    reference = stats.chi2_contingency(table, correction=False).pvalue
    assert result.p_value == pytest.approx(reference, rel=1e-9)
    assert 1e-4 < reference < 0.2  # a p-value in the range where the formula matters
    assert result.difference == pytest.approx(treatment.mean() - control.mean())
    assert result.relative_lift == pytest.approx(treatment.mean() / control.mean() - 1)


def test_numeric_p_value_and_intervals_match_scipy_on_raw_outcomes() -> None:
    rng = np.random.default_rng(2)
    control, treatment = rng.normal(100.0, 15.0, 40), rng.normal(108.0, 30.0, 25)
    result = compare(
        Summary.from_array(control), Summary.from_array(treatment), kind="numeric", alpha=0.1
    )
    welch = stats.ttest_ind(treatment, control, equal_var=False)
    assert result.p_value == pytest.approx(welch.pvalue, rel=1e-9)
    difference = welch.confidence_interval(confidence_level=0.9)
    assert result.difference_interval is not None
    assert result.difference_interval.low == pytest.approx(difference.low, rel=1e-9)
    assert result.difference_interval.high == pytest.approx(difference.high, rel=1e-9)
    for arm, values in ((result.control_interval, control), (result.treatment_interval, treatment)):
        reference = stats.ttest_1samp(values, 0.0).confidence_interval(confidence_level=0.9)
        assert arm is not None
        assert (arm.low, arm.high) == pytest.approx((reference.low, reference.high), rel=1e-9)


def test_wilson_interval_matches_hand_computed_cases() -> None:
    # 10 of 100 at 95%, z = 1.959964: centre (0.1 + z²/200) / (1 + z²/100) = 0.114797,
    # half-width z * sqrt(0.0009 + z²/40000) / (1 + z²/100) = 0.059568.
    ten = compare(Summary(100, 10, 10), Summary(100, 10, 10), kind="binary")
    assert ten.control_interval is not None
    assert ten.control_interval.low == pytest.approx(0.055229, abs=2e-6)
    assert ten.control_interval.high == pytest.approx(0.174366, abs=2e-6)
    # 0 of 20: [0, (z²/20) / (1 + z²/20)] = [0, 0.161125], where Wald would give [0, 0].
    none = compare(Summary(20, 0, 0), Summary(20, 3, 3), kind="binary")
    assert none.control_interval is not None
    assert none.control_interval.low == 0.0
    assert none.control_interval.high == pytest.approx(0.161125, abs=2e-6)


def test_sequential_p_is_one_over_the_normal_mixture_likelihood_ratio() -> None:
    rng = np.random.default_rng(3)
    control, treatment = rng.normal(0.0, 1.0, 400), rng.normal(0.2, 1.5, 300)
    tau2 = 0.05
    d = treatment.mean() - control.mean()
    v = treatment.var(ddof=1) / treatment.size + control.var(ddof=1) / control.size

    # Lambda = E over theta ~ N(0, tau2) of N(d; theta, V) / N(d; 0, V), integrated numerically.
    def integrand(theta: float) -> float:
        ratio = math.exp((2 * d * theta - theta * theta) / (2 * v))
        return ratio * float(stats.norm.pdf(theta, scale=math.sqrt(tau2)))

    mixture, _ = integrate.quad(integrand, -2.0, 2.0, points=[0.0, d], limit=200)
    result = compare(
        Summary.from_array(control), Summary.from_array(treatment), kind="numeric", tau2=tau2
    )
    assert result.sequential_p_value is not None
    assert result.sequential_p_value == pytest.approx(min(1.0, 1 / mixture), rel=1e-6)
    assert result.sequential_p_value < 0.05  # a real effect, so the formula's tail matters
    assert result.tau2 == tau2


def test_always_valid_p_is_the_running_minimum_across_looks() -> None:
    rng = np.random.default_rng(4)
    control, treatment = _binary(rng, 0.10, 20_000), _binary(rng, 0.11, 20_000)
    running, instant, trail = 1.0, [], []
    for n in range(1000, 20_001, 1000):
        c, t = Summary.from_array(control[:n]), Summary.from_array(treatment[:n])
        instant.append(always_valid_p(1.0, c, t, kind="binary"))
        running = always_valid_p(running, c, t, kind="binary")
        trail.append(running)
        same = compare(c, t, kind="binary", previous_sequential_p=trail[-2] if n > 1000 else 1.0)
        assert same.sequential_p_value == pytest.approx(running)
    assert np.any(np.diff(instant) > 0)  # one look's 1/Lambda does go back up ...
    assert np.all(np.diff(trail) <= 0)  # ... but the always-valid p never does
    assert trail == pytest.approx(list(np.minimum.accumulate(instant)))
    assert trail[-1] < 1.0


def _pair(control: np.ndarray, treatment: np.ndarray, name: str) -> Comparison:
    return compare(
        Summary.from_array(control),
        Summary.from_array(treatment),
        kind="binary",
        control_name="a",
        treatment_name=name,
    )


def test_a_real_lift_is_declared_the_winner_and_an_a_a_test_is_not() -> None:
    rng = np.random.default_rng(5)
    n = 30_000
    control = _binary(rng, 0.10, n)
    better, same = _binary(rng, 0.12, n), _binary(rng, 0.10, n)
    assert decide([_pair(control, better, "b"), _pair(control, same, "c")], alpha=0.05) == "b"
    assert decide([_pair(control, same, "c")], alpha=0.05) is None
    # Every treatment significantly worse: the control wins; lower-is-better flips it.
    worse = [_pair(better, control, "c"), _pair(better, _binary(rng, 0.09, n), "d")]
    assert decide(worse, alpha=0.05) == "a"
    assert decide(worse, alpha=0.05, higher_is_better=False) == "d"
    assert decide([], alpha=0.05) is None


@pytest.mark.parametrize("kind", ["binary", "numeric"])
def test_peeking_inflates_the_fixed_horizon_test_but_not_the_msprt(kind: str) -> None:
    alpha, experiments = 0.05, 2000
    fixed, sequential = peeking_false_positive_rates(
        experiments=experiments,
        looks=24 * 7,
        per_look=100,
        alpha=alpha,
        kind=kind,
        rng=np.random.default_rng(6),
    )
    assert fixed > 0.15
    # Ville's inequality bounds the true rate by alpha; three Monte-Carlo standard errors
    # of a rate of alpha over 2,000 experiments (3 * 0.0049) leave room for sampling noise
    # alone about once in a thousand seeds.
    slack = 3 * math.sqrt(alpha * (1 - alpha) / experiments)
    assert sequential <= alpha + slack


def test_arms_without_enough_outcomes_give_reasons_not_errors() -> None:
    empty = compare(Summary(0, 0, 0), Summary(10, 4, 4), kind="binary")
    assert (empty.p_value, empty.sequential_p_value, empty.difference) == (None, None, None)
    assert empty.reason == "control has no outcomes yet"
    assert empty.treatment_interval is not None
    single = compare(Summary(5, 10.0, 30.0), Summary(1, 2.0, 4.0), kind="numeric")
    assert single.p_value is None and single.reason is not None and "treatment" in single.reason
    flat = Summary(50, 0, 0)
    no_conversions = compare(flat, flat, kind="binary")
    assert no_conversions.p_value is None and no_conversions.reason is not None
    assert always_valid_p(0.3, flat, flat, kind="binary") == 0.3
    zero_mean = compare(
        Summary.from_array([-1.0, 1.0]), Summary.from_array([1.0, 3.0]), kind="numeric"
    )
    assert zero_mean.difference == 2.0 and zero_mean.relative_lift is None


GOOD = Summary(10, 3, 3)


@pytest.mark.parametrize(
    ("call", "field"),
    [
        (lambda: Summary(-1, 0, 0), "n"),
        (lambda: Summary(2.0, 1, 1), "n"),  # type: ignore[arg-type]
        (lambda: Summary(0, 1, 1), "total"),
        (lambda: Summary(3, math.nan, 1), "total"),
        (lambda: Summary(2, 2, -1), "total_sq"),
        (lambda: Summary(2, 4, 5), "total_sq"),  # two outcomes summing to 4 have squares >= 8
        (lambda: Summary.from_array([[1.0]]), "values"),
        (lambda: compare(GOOD, GOOD, kind="binary", alpha=0), "alpha"),
        (lambda: compare(GOOD, GOOD, kind="binary", alpha=1.5), "alpha"),
        (lambda: compare(GOOD, GOOD, kind="ratio"), "kind"),  # type: ignore[arg-type]
        (lambda: compare(GOOD, GOOD, kind="binary", tau2=-1.0), "tau2"),
        (lambda: compare(GOOD, Summary(10, 3, 5), kind="binary"), "treatment.total_sq"),
        (lambda: compare(Summary(2, 3, 5), GOOD, kind="binary"), "control.total"),
        (lambda: always_valid_p(1.5, GOOD, GOOD, kind="binary"), "previous"),
        (lambda: decide([], alpha=0.0), "alpha"),
        (
            lambda: decide(
                [compare(GOOD, GOOD, kind="binary", control_name=name) for name in "xy"],
                alpha=0.05,
            ),
            "comparisons",
        ),
        (
            lambda: peeking_false_positive_rates(
                experiments=0,
                looks=1,
                per_look=1,
                alpha=0.05,
                kind="binary",
                rng=np.random.default_rng(0),
            ),
            "experiments",
        ),
    ],
)
def test_bad_inputs_raise_value_error_naming_the_field(call: Any, field: str) -> None:
    with pytest.raises(ValueError, match=f"^{re.escape(field)}: ") as caught:
        call()
    assert getattr(caught.value, "field", None) == field
