"""A/B test statistics between deployment variants, from per-variant aggregates.

The server keeps, per variant, only three numbers about the outcomes posted for its
requests: how many (``n``), their sum and their sum of squares (binary outcomes are 0 or
1, so there the sum is the number of successes). Every statistic here is a function of
those aggregates, so a variant's state is a row that an ``UPDATE ... SET n = n + 1``
keeps current, and no outcome is ever stored.

Two p-values are reported for a treatment against the control:

* the **fixed-horizon** p-value (binary: two-proportion z-test with pooled variance;
  numeric: Welch's t-test). It is valid only when read once, at a sample size chosen in
  advance: looking every hour and stopping at the first p <= alpha rejects a true null
  far more often than alpha (:func:`peeking_false_positive_rates` measures by how much).
* the **always-valid** p-value of a mixture sequential probability ratio test (mSPRT;
  Johari, Pekelis & Walsh 2017, "Always valid inference"). With d = mean_t - mean_c,
  V = var_t/n_t + var_c/n_c (binary: p(1-p)/n per arm) and a normal mixture N(0, tau2)
  over the effect, the likelihood ratio is
  ``Lambda = sqrt(V/(V+tau2)) * exp(d**2 * tau2 / (2 V (V+tau2)))``. A look's p-value is
  ``min(1, 1/Lambda)`` and the always-valid p-value is its running minimum over looks;
  by Ville's inequality, under no difference it ever reaches alpha with probability at
  most alpha, however often it is read. This is the one to decide on.

Default mixing variance: ``tau2 = DEFAULT_TAU2_RATIO * pooled variance`` of one outcome
(binary: p(1-p) at the pooled rate). Being a multiple of the outcome's own variance it is
scale-free: the same default suits conversion rates and latencies in any unit. The
ratio 0.01 puts the prior standard deviation of the effect at a tenth of the outcome's
standard deviation, i.e. Cohen's "small" effect, which is where product changes live;
a smaller ratio favours smaller effects at the cost of needing more samples for large
ones. The variance is re-estimated at each look, as V is, so the guarantee is
asymptotic; the simulation checks it holds at hourly looks from a hundred outcomes on.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any, Literal, get_args

import numpy as np
import numpy.typing as npt

Kind = Literal["binary", "numeric"]


def _stats() -> Any:
    """scipy.stats, imported on first use: it takes most of a second to import, and the
    server imports this module whether or not any deployment runs an A/B test."""
    from scipy import stats

    return stats


FloatArray = npt.NDArray[np.float64]

DEFAULT_TAU2_RATIO = 0.01
# Sums the server accumulates in floating point may round; Cauchy-Schwarz
# (total**2 <= n * total_sq) is checked only up to this relative slack.
_ROUNDING = 1e-9


class AbTestInputError(ValueError):
    """Refused input; ``field`` names the argument or aggregate at fault."""

    def __init__(self, field: str, message: str) -> None:
        super().__init__(f"{field}: {message}")
        self.field = field


@dataclass(frozen=True)
class Summary:
    """Aggregates of one variant's outcomes: count, sum and sum of squares."""

    n: int
    total: float
    total_sq: float

    def __post_init__(self) -> None:
        if isinstance(self.n, bool) or not isinstance(self.n, int | np.integer):
            raise AbTestInputError("n", f"must be an integer, got {self.n!r}")
        if self.n < 0:
            raise AbTestInputError("n", f"must be >= 0, got {self.n}")
        object.__setattr__(self, "n", int(self.n))
        for name in ("total", "total_sq"):
            value = getattr(self, name)
            numeric = isinstance(value, int | float | np.integer | np.floating)
            if isinstance(value, bool) or not numeric or not math.isfinite(value):
                raise AbTestInputError(name, f"must be a finite number, got {value!r}")
            object.__setattr__(self, name, float(value))
        if self.total_sq < 0:
            raise AbTestInputError("total_sq", f"is a sum of squares, got {self.total_sq}")
        if self.n == 0 and (self.total != 0 or self.total_sq != 0):
            field = "total" if self.total != 0 else "total_sq"
            raise AbTestInputError(field, "must be 0 when n is 0")
        if self.total**2 > self.n * self.total_sq * (1 + _ROUNDING):
            raise AbTestInputError(
                "total_sq",
                f"{self.total_sq} is too small for n={self.n} and total={self.total}: "
                "no real outcomes have these sums (total**2 <= n * total_sq)",
            )

    @classmethod
    def from_array(cls, values: npt.ArrayLike) -> Summary:
        """Summarise a one-dimensional array of outcomes (booleans count as 0/1)."""
        array = np.asarray(values, dtype=np.float64)
        if array.ndim != 1:
            raise AbTestInputError("values", f"must be one-dimensional, got shape {array.shape}")
        if not np.all(np.isfinite(array)):
            raise AbTestInputError("values", "must all be finite")
        return cls(n=array.size, total=float(array.sum()), total_sq=float(array @ array))

    @property
    def mean(self) -> float:
        """Mean outcome; NaN when there are no outcomes."""
        return self.total / self.n if self.n else math.nan

    @property
    def variance(self) -> float:
        """Sample variance (ddof=1); 0 when n < 2.

        From the aggregates this loses about ``eps * mean**2 / variance`` relative
        precision, negligible unless the mean is ~1e6 standard deviations from 0.
        """
        if self.n < 2:
            return 0.0
        return max(self.total_sq - self.total * self.total / self.n, 0.0) / (self.n - 1)


@dataclass(frozen=True)
class Interval:
    """A two-sided confidence interval."""

    low: float
    high: float


@dataclass(frozen=True)
class Comparison:
    """A treatment against the control at one look.

    Values that need more data are None: means and arm intervals until the arm has
    outcomes (numeric intervals need 2), and the difference interval and both p-values
    while ``reason`` says why the difference cannot be tested yet.
    ``sequential_p_value`` is the always-valid p-value: the running minimum including
    the ``previous_sequential_p`` passed to :func:`compare`.
    """

    control_name: str
    treatment_name: str
    kind: Kind
    alpha: float
    control: Summary
    treatment: Summary
    control_mean: float | None
    treatment_mean: float | None
    difference: float | None
    relative_lift: float | None
    control_interval: Interval | None
    treatment_interval: Interval | None
    difference_interval: Interval | None
    p_value: float | None
    sequential_p_value: float | None
    tau2: float | None
    reason: str | None


def compare(
    control: Summary,
    treatment: Summary,
    *,
    kind: Kind,
    alpha: float = 0.05,
    tau2: float | None = None,
    previous_sequential_p: float = 1.0,
    control_name: str = "control",
    treatment_name: str = "treatment",
) -> Comparison:
    """Compare a treatment with the control: lift, (1 - alpha) intervals and p-values.

    ``tau2`` is the mSPRT mixing variance in the outcome's squared units (default: see the
    module docstring). Pass the previous look's ``sequential_p_value`` as
    ``previous_sequential_p`` to keep the always-valid p-value a running minimum.
    """
    _check_kind(kind)
    _check_probability("alpha", alpha)
    _check_tau2(tau2)
    _check_previous("previous_sequential_p", previous_sequential_p)
    if kind == "binary":
        _check_binary("control", control)
        _check_binary("treatment", treatment)
    z = float(_stats().norm.ppf(1 - alpha / 2))
    control_interval = _mean_interval(kind, control, alpha=alpha, z=z)
    treatment_interval = _mean_interval(kind, treatment, alpha=alpha, z=z)
    control_mean = control.mean if control.n else None
    treatment_mean = treatment.mean if treatment.n else None
    difference = None
    relative_lift = None
    if control_mean is not None and treatment_mean is not None:
        difference = treatment_mean - control_mean
        relative_lift = difference / control_mean if control_mean != 0 else None

    reason = _untestable(kind, control, treatment)
    difference_interval = p_value = sequential_p_value = mixing = None
    if reason is None:
        args = _arrays(control, treatment)
        mixing = float(_mixing_variance(kind, *args, tau2=tau2)[0])
        difference_interval = _difference_interval(kind, control, treatment, alpha=alpha, z=z)
        p_value = float(_fixed_horizon_p(kind, *args)[0])
        look = float(_sequential_look_p(kind, *args, tau2=mixing)[0])
        sequential_p_value = min(previous_sequential_p, look)
    return Comparison(
        control_name=control_name,
        treatment_name=treatment_name,
        kind=kind,
        alpha=alpha,
        control=control,
        treatment=treatment,
        control_mean=control_mean,
        treatment_mean=treatment_mean,
        difference=difference,
        relative_lift=relative_lift,
        control_interval=control_interval,
        treatment_interval=treatment_interval,
        difference_interval=difference_interval,
        p_value=p_value,
        sequential_p_value=sequential_p_value,
        tau2=mixing,
        reason=reason,
    )


def always_valid_p(
    previous: float,
    control: Summary,
    treatment: Summary,
    *,
    kind: Kind,
    tau2: float | None = None,
) -> float:
    """The always-valid p-value after this look: min(previous, this look's 1/Lambda).

    Start from ``previous=1.0``. A look that cannot be tested yet (see
    :attr:`Comparison.reason`) leaves the value unchanged.
    """
    _check_kind(kind)
    _check_tau2(tau2)
    _check_previous("previous", previous)
    if kind == "binary":
        _check_binary("control", control)
        _check_binary("treatment", treatment)
    if _untestable(kind, control, treatment) is not None:
        return previous
    return min(
        previous, float(_sequential_look_p(kind, *_arrays(control, treatment), tau2=tau2)[0])
    )


def decide(
    comparisons: Sequence[Comparison], *, alpha: float, higher_is_better: bool = True
) -> str | None:
    """The winning variant's name, or None while the test is undecided.

    Decides on the always-valid p-value, so it may be called at every look. Among the
    treatments whose sequential p-value is <= alpha, the one with the best mean wins if
    it beats the control; the control wins only when every treatment is significantly
    worse. With k treatments each is tested at ``alpha``; pass ``alpha / k`` to bound
    the chance of any false winner by alpha (Bonferroni).
    """
    _check_probability("alpha", alpha)
    if not comparisons:
        return None
    controls = {c.control_name for c in comparisons}
    if len(controls) != 1:
        raise AbTestInputError("comparisons", f"must share one control, got {sorted(controls)}")
    sign = 1.0 if higher_is_better else -1.0
    significant = [
        c
        for c in comparisons
        if c.sequential_p_value is not None
        and c.sequential_p_value <= alpha
        and c.difference is not None
        and c.difference != 0
    ]
    better = [c for c in significant if sign * (c.difference or 0.0) > 0]
    if better:
        best = max(better, key=lambda c: sign * (c.treatment_mean or 0.0))
        return best.treatment_name
    if len(significant) == len(comparisons):
        return comparisons[0].control_name
    return None


def peeking_false_positive_rates(
    *,
    experiments: int,
    looks: int,
    per_look: int,
    alpha: float,
    kind: str,
    rng: np.random.Generator,
    rate: float = 0.1,
    tau2: float | None = None,
) -> tuple[float, float]:
    """Simulate A/A tests read at every look; return how often each test ever rejects.

    Each of ``experiments`` A/A experiments gets ``per_look`` new outcomes per arm
    between looks (binary: Bernoulli(``rate``); numeric: standard normal, which loses no
    generality as both tests are location- and scale-invariant). Returns (fixed-horizon
    test's rate of p <= alpha at any look, mSPRT's rate of always-valid p <= alpha).
    """
    for name, value in (("experiments", experiments), ("looks", looks), ("per_look", per_look)):
        if isinstance(value, bool) or not isinstance(value, int) or value < 1:
            raise AbTestInputError(name, f"must be a positive integer, got {value!r}")
    _check_probability("alpha", alpha)
    _check_kind(kind)
    _check_probability("rate", rate)
    _check_tau2(tau2)
    shape = (2, experiments)
    total = np.zeros(shape)
    total_sq = np.zeros(shape)
    fixed_rejected = np.zeros(experiments, dtype=bool)
    sequential_rejected = np.zeros(experiments, dtype=bool)
    for look in range(1, looks + 1):
        if kind == "binary":
            successes = rng.binomial(per_look, rate, size=shape).astype(np.float64)
            total += successes
            total_sq += successes
        else:
            # A batch of m standard normals has sum S ~ N(0, m) and sum of squares
            # S**2/m + chi2(m - 1), the two independent (Cochran): exact, and O(1) per arm.
            batch_sum = rng.normal(0.0, math.sqrt(per_look), size=shape)
            spread = rng.chisquare(per_look - 1, size=shape) if per_look > 1 else 0.0
            total += batch_sum
            total_sq += batch_sum**2 / per_look + spread
        n = float(look * per_look)
        mean = total / n
        var = np.maximum(total_sq - total * mean, 0.0) / (n - 1) if n > 1 else np.zeros(shape)
        counts = np.full(experiments, n)
        args = (counts, mean[0], var[0], counts, mean[1], var[1])
        # The looks compare() would call untestable count as no rejection (there, a zero
        # variance would make t infinite and p 0).
        spread = _outcome_variance(kind, mean, var)
        testable = ((spread[0] > 0) | (spread[1] > 0)) & (kind == "binary" or n >= 2)
        with np.errstate(divide="ignore", invalid="ignore"):
            fixed_rejected |= testable & (_fixed_horizon_p(kind, *args) <= alpha)
            # Rejecting at any look's 1/Lambda is the running minimum reaching alpha.
            sequential_rejected |= testable & (_sequential_look_p(kind, *args, tau2=tau2) <= alpha)
    return float(fixed_rejected.mean()), float(sequential_rejected.mean())


# Vectorised cores, shared by compare() and the simulation so both run the same formulas.
# Arguments: control (n, mean, variance), then treatment (n, mean, variance), as arrays.


def _arrays(control: Summary, treatment: Summary) -> tuple[FloatArray, ...]:
    return tuple(
        np.array([value], dtype=np.float64)
        for value in (
            control.n,
            control.mean,
            control.variance,
            treatment.n,
            treatment.mean,
            treatment.variance,
        )
    )


def _outcome_variance(kind: str, mean: FloatArray, var: FloatArray) -> FloatArray:
    return mean * (1 - mean) if kind == "binary" else var


def _pooled_variance(
    kind: str,
    n_c: FloatArray,
    m_c: FloatArray,
    v_c: FloatArray,
    n_t: FloatArray,
    m_t: FloatArray,
    v_t: FloatArray,
) -> FloatArray:
    if kind == "binary":
        rate = (n_c * m_c + n_t * m_t) / (n_c + n_t)
        return rate * (1 - rate)
    return ((n_c - 1) * v_c + (n_t - 1) * v_t) / (n_c + n_t - 2)


def _mixing_variance(
    kind: str,
    n_c: FloatArray,
    m_c: FloatArray,
    v_c: FloatArray,
    n_t: FloatArray,
    m_t: FloatArray,
    v_t: FloatArray,
    *,
    tau2: float | None,
) -> FloatArray:
    if tau2 is not None:
        return np.full(n_c.shape, tau2)
    return DEFAULT_TAU2_RATIO * _pooled_variance(kind, n_c, m_c, v_c, n_t, m_t, v_t)


def _fixed_horizon_p(
    kind: str,
    n_c: FloatArray,
    m_c: FloatArray,
    v_c: FloatArray,
    n_t: FloatArray,
    m_t: FloatArray,
    v_t: FloatArray,
) -> FloatArray:
    if kind == "binary":
        pooled = _pooled_variance(kind, n_c, m_c, v_c, n_t, m_t, v_t)
        z = (m_t - m_c) / np.sqrt(pooled * (1 / n_c + 1 / n_t))
        return np.asarray(2 * _stats().norm.sf(np.abs(z)), dtype=np.float64)
    result = _stats().ttest_ind_from_stats(
        m_t, np.sqrt(v_t), n_t, m_c, np.sqrt(v_c), n_c, equal_var=False
    )
    return np.asarray(result.pvalue, dtype=np.float64)


def _sequential_look_p(
    kind: str,
    n_c: FloatArray,
    m_c: FloatArray,
    v_c: FloatArray,
    n_t: FloatArray,
    m_t: FloatArray,
    v_t: FloatArray,
    *,
    tau2: float | None,
) -> FloatArray:
    mixing = _mixing_variance(kind, n_c, m_c, v_c, n_t, m_t, v_t, tau2=tau2)
    d = m_t - m_c
    v = _outcome_variance(kind, m_t, v_t) / n_t + _outcome_variance(kind, m_c, v_c) / n_c
    # In logs: Lambda overflows a float once the evidence is overwhelming.
    log_lambda = 0.5 * np.log(v / (v + mixing)) + d * d * mixing / (2 * v * (v + mixing))
    return np.asarray(np.minimum(1.0, np.exp(-log_lambda)), dtype=np.float64)


def _untestable(kind: Kind, control: Summary, treatment: Summary) -> str | None:
    """Why the difference cannot be tested yet, or None when it can."""
    for arm, summary in (("control", control), ("treatment", treatment)):
        if summary.n == 0:
            return f"{arm} has no outcomes yet"
        if kind == "numeric" and summary.n < 2:
            return f"{arm} has fewer than 2 outcomes, so its variance is unknown"
    spread = [
        _outcome_variance(kind, np.array([s.mean]), np.array([s.variance]))[0]
        for s in (control, treatment)
    ]
    if spread[0] == 0 and spread[1] == 0:
        return "outcomes do not vary within either arm yet, so there is no noise estimate"
    return None


def _mean_interval(kind: Kind, summary: Summary, *, alpha: float, z: float) -> Interval | None:
    n = summary.n
    if kind == "binary":
        if n == 0:
            return None
        # Wilson score interval: unlike the Wald interval it stays inside [0, 1] and
        # keeps its coverage at rates near 0 or 1, where conversions usually are.
        p = summary.mean
        denominator = 1 + z * z / n
        centre = (p + z * z / (2 * n)) / denominator
        half = z * math.sqrt(p * (1 - p) / n + z * z / (4 * n * n)) / denominator
        return Interval(max(0.0, centre - half), min(1.0, centre + half))
    if n < 2:
        return None
    half = float(_stats().t.ppf(1 - alpha / 2, n - 1)) * math.sqrt(summary.variance / n)
    return Interval(summary.mean - half, summary.mean + half)


def _difference_interval(
    kind: Kind, control: Summary, treatment: Summary, *, alpha: float, z: float
) -> Interval:
    d = treatment.mean - control.mean
    if kind == "binary":
        p_c, p_t = control.mean, treatment.mean
        half = z * math.sqrt(p_t * (1 - p_t) / treatment.n + p_c * (1 - p_c) / control.n)
        return Interval(d - half, d + half)
    a = treatment.variance / treatment.n
    b = control.variance / control.n
    # Welch-Satterthwaite degrees of freedom, as in Welch's t-test.
    df = (a + b) ** 2 / (a * a / (treatment.n - 1) + b * b / (control.n - 1))
    half = float(_stats().t.ppf(1 - alpha / 2, df)) * math.sqrt(a + b)
    return Interval(d - half, d + half)


def _check_kind(kind: str) -> None:
    if kind not in get_args(Kind):
        raise AbTestInputError("kind", f"must be 'binary' or 'numeric', got {kind!r}")


def _check_probability(field: str, value: float) -> None:
    if isinstance(value, bool) or not isinstance(value, int | float) or not 0 < value < 1:
        raise AbTestInputError(field, f"must be strictly between 0 and 1, got {value!r}")


def _check_previous(field: str, value: float) -> None:
    if isinstance(value, bool) or not isinstance(value, int | float) or not 0 <= value <= 1:
        raise AbTestInputError(field, f"must be a p-value in [0, 1], got {value!r}")


def _check_tau2(tau2: float | None) -> None:
    if tau2 is None:
        return
    valid = isinstance(tau2, int | float) and not isinstance(tau2, bool)
    if not valid or not math.isfinite(tau2) or tau2 <= 0:
        raise AbTestInputError("tau2", f"must be a positive finite number, got {tau2!r}")


def _check_binary(arm: str, summary: Summary) -> None:
    # 0/1 outcomes: total is a whole number of successes and equals its sum of squares.
    if not 0 <= summary.total <= summary.n or summary.total != round(summary.total):
        raise AbTestInputError(
            f"{arm}.total",
            f"binary outcomes need a whole number of successes in [0, n={summary.n}], "
            f"got {summary.total}",
        )
    if summary.total_sq != summary.total:
        raise AbTestInputError(
            f"{arm}.total_sq",
            f"binary outcomes are 0 or 1, so total_sq must equal total ({summary.total}), "
            f"got {summary.total_sq}",
        )
