"""Request and response bodies of deployments.

A deployment's spec is the whole desired state: its variants (each a model version or
alias with a weight, runtime options, resources per replica and a scaling range) and
how traffic is split. Every change stores a whole spec as a new revision.
"""

from __future__ import annotations

import math
from datetime import datetime
from itertools import pairwise
from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field, field_validator, model_validator

from ghaf.core.names import Name

MAX_VARIANTS = 16
WEIGHT_TOTAL = 100.0
# Weights are percentages written by people (10, 33.3); their sum is checked to this
# tolerance so that three thirds pass and 99 does not.
WEIGHT_TOLERANCE = 0.01


class _Strict(BaseModel):
    model_config = ConfigDict(extra="forbid")


class RuntimeOptions(_Strict):
    """How a variant's replicas run the model (the options of ``ghaf serve``)."""

    max_batch_size: int = Field(default=64, ge=1, le=65_536)
    max_latency_ms: float = Field(default=2.0, ge=0, le=10_000)
    threads: int | None = Field(
        default=None, ge=1, le=1024, description="Model threads (default: the replica's CPUs)."
    )
    device: Literal["cpu", "gpu"] = "cpu"
    allow_cpu_fallback: bool = Field(
        default=False, description="With device gpu: run on the CPU where no GPU can."
    )


class Resources(_Strict):
    """What one replica of a variant is given."""

    cpus: float = Field(default=1.0, gt=0, le=1024)
    memory_mb: int = Field(default=1024, ge=64, le=4 * 1024 * 1024)
    gpus: int = Field(default=0, ge=0, le=64)


class Scaling(_Strict):
    """Replicas between ``min_replicas`` and ``max_replicas`` (0: scale to zero), driven
    by in-flight requests per replica against ``target_in_flight``."""

    min_replicas: int = Field(default=1, ge=0, le=1024)
    max_replicas: int = Field(default=1, ge=1, le=1024)
    target_in_flight: float = Field(default=8.0, gt=0, le=100_000)
    upscale_window_s: float = Field(default=0.0, ge=0, le=86_400)
    downscale_window_s: float = Field(default=60.0, ge=0, le=86_400)
    scale_to_zero_after_s: float = Field(default=300.0, ge=0, le=7 * 86_400)

    @model_validator(mode="after")
    def _ordered(self) -> Scaling:
        if self.min_replicas > self.max_replicas:
            raise ValueError(
                f"min_replicas ({self.min_replicas}) is more than max_replicas "
                f"({self.max_replicas})"
            )
        return self


class VariantSpec(_Strict):
    """One model version (or alias) served under the deployment's name."""

    name: Name
    model: Name
    version: str | int = Field(
        description="A version number, `latest` (resolved now), or an alias "
        "(`champion` or `@champion`): the deployment follows the alias when it moves."
    )
    weight: float = Field(
        default=0.0, ge=0, le=WEIGHT_TOTAL, description="Percent of live traffic."
    )
    shadow: bool = Field(
        default=False,
        description="Receives a copy of the traffic; its answers are logged, never returned.",
    )
    runtime: RuntimeOptions = Field(default_factory=RuntimeOptions)
    resources: Resources = Field(default_factory=Resources)
    scaling: Scaling = Field(default_factory=Scaling)

    @field_validator("version")
    @classmethod
    def _version_text(cls, value: str | int) -> str | int:
        if isinstance(value, str) and not 1 <= len(value) <= 65:
            raise ValueError("version must be 1 to 65 characters")
        return value

    @model_validator(mode="after")
    def _shadow_has_no_weight(self) -> VariantSpec:
        if self.shadow and self.weight:
            raise ValueError(
                f"variant {self.name!r} is a shadow: it takes no live traffic, so its "
                f"weight must be 0 (got {self.weight:g})"
            )
        return self


class StickyKey(_Strict):
    """Where a request's assignment key is read: a header, or a field of the JSON body."""

    header: str | None = Field(
        default=None, min_length=1, max_length=64, pattern=r"^[A-Za-z0-9-]+$"
    )
    field: str | None = Field(default=None, min_length=1, max_length=64)

    @model_validator(mode="after")
    def _one(self) -> StickyKey:
        if (self.header is None) == (self.field is None):
            raise ValueError("sticky names exactly one of header or field")
        return self


def check_variants(variants: list[VariantSpec]) -> None:
    """Refuse (``ValueError``) repeated names, no live variant, or live weights that do
    not sum to 100."""
    names = [v.name for v in variants]
    doubled = sorted({n for n in names if names.count(n) > 1})
    if doubled:
        raise ValueError(f"variant names must be unique; repeated: {', '.join(doubled)}")
    live = [v for v in variants if not v.shadow]
    if not live:
        raise ValueError("at least one variant must take live traffic (not a shadow)")
    if not all(math.isfinite(v.weight) for v in variants):
        raise ValueError("weights must be finite numbers")
    total = sum(v.weight for v in live)
    if abs(total - WEIGHT_TOTAL) > WEIGHT_TOLERANCE:
        shares = ", ".join(f"{v.name}={v.weight:g}" for v in live)
        raise ValueError(f"the live variants' weights must sum to 100, not {total:g} ({shares})")


class AbTest(_Strict):
    """What an A/B test between the live variants measures, and against which one."""

    kind: Literal["binary", "numeric"] = Field(
        description="binary: a conversion (outcomes 0 or 1); numeric: a reward."
    )
    control: Name = Field(description="The live variant the others are compared with.")
    alpha: float = Field(default=0.05, gt=0, lt=0.5)
    higher_is_better: bool = True


class DeploymentSpec(_Strict):
    """The whole desired state of a deployment."""

    variants: list[VariantSpec] = Field(min_length=1, max_length=MAX_VARIANTS)
    production: bool = Field(
        default=False,
        description="Take only approved versions whose gates pass (the registry policy).",
    )
    sticky: StickyKey | None = Field(
        default=None, description="Assign requests by this key, so a user keeps a variant."
    )
    host: Literal["embedded", "ray"] = "embedded"
    abtest: AbTest | None = Field(
        default=None, description="Compare the live variants on posted outcomes."
    )

    @model_validator(mode="after")
    def _weights(self) -> DeploymentSpec:
        check_variants(self.variants)
        if self.abtest is not None:
            live = [v.name for v in self.variants if not v.shadow]
            if self.abtest.control not in live:
                raise ValueError(
                    f"abtest.control {self.abtest.control!r} is not a live variant "
                    f"(live: {', '.join(live)})"
                )
        return self


class DeploymentCreate(DeploymentSpec):
    name: Name
    description: str = Field(default="", max_length=2000)
    reason: str = Field(default="", max_length=400, description="Why (kept with the revision).")


class DeploymentUpdate(_Strict):
    """What changes; what is left out stays as it is. Any change is a new revision."""

    variants: list[VariantSpec] | None = Field(default=None, min_length=1, max_length=MAX_VARIANTS)
    production: bool | None = None
    sticky: StickyKey | None = None
    clear_sticky: bool = Field(default=False, description="Stop sticky assignment.")
    host: Literal["embedded", "ray"] | None = None
    abtest: AbTest | None = None
    clear_abtest: bool = Field(default=False, description="Stop the A/B test.")
    description: str | None = Field(default=None, max_length=2000)
    reason: str = Field(default="", max_length=400)

    @model_validator(mode="after")
    def _weights(self) -> DeploymentUpdate:
        if self.variants is not None:
            check_variants(self.variants)
        if self.clear_sticky and self.sticky is not None:
            raise ValueError("give sticky or clear_sticky, not both")
        if self.clear_abtest and self.abtest is not None:
            raise ValueError("give abtest or clear_abtest, not both")
        return self


class Rollback(_Strict):
    revision: int = Field(ge=1, le=2**31 - 1)
    reason: str = Field(default="", max_length=400)


class ResolvedVariant(BaseModel):
    """The model version a variant serves in a revision."""

    model: str
    version: int
    sha256: str
    follows: str | None = Field(default=None, description="The alias it follows, if any.")


class DeploymentOut(BaseModel):
    name: str
    project: str
    description: str
    production: bool
    revision: int
    spec: dict[str, Any]
    resolved: dict[str, ResolvedVariant]
    created_at: datetime
    created_by: str | None = None
    updated_at: datetime
    updated_by: str | None = None


class RevisionOut(BaseModel):
    revision: int
    spec: dict[str, Any]
    resolved: dict[str, ResolvedVariant]
    reason: str
    created_at: datetime
    created_by: str | None = None


# The id an answer's x-ghaf-outcome-id carries (URL-safe base64), or any such token.
REQUEST_ID = Field(min_length=1, max_length=64, pattern=r"^[A-Za-z0-9_.:~-]+$")
MAX_OUTCOMES = 10_000


class Assignment(_Strict):
    """Which variant answered a request (the gateway records these)."""

    request_id: str = REQUEST_ID
    variant: Name


class Assignments(_Strict):
    revision: int = Field(ge=1, le=2**31 - 1)
    items: list[Assignment] = Field(min_length=1, max_length=MAX_OUTCOMES)


class Outcome(_Strict):
    """What happened after a request: 1/0 for a conversion, or a numeric reward."""

    request_id: str = REQUEST_ID
    value: float = Field(allow_inf_nan=False, ge=-1e12, le=1e12)


class Outcomes(_Strict):
    items: list[Outcome] = Field(min_length=1, max_length=MAX_OUTCOMES)


class OutcomesResult(BaseModel):
    """What became of posted outcomes: only ``recorded`` count in the test."""

    recorded: int
    unknown: int = Field(description="For a request id no variant of it answered.")
    duplicate: int = Field(description="For a request id that has an outcome already.")
    shadow: int = Field(default=0, description="For requests a shadow answered (ignored).")


class VariantResult(BaseModel):
    variant: str
    n: int
    mean: float | None
    interval: tuple[float, float] | None = Field(description="(1 - alpha) interval of the mean.")
    lift: float | None = Field(default=None, description="Mean minus the control's.")
    relative_lift: float | None = None
    lift_interval: tuple[float, float] | None = None
    p_value: float | None = Field(default=None, description="Fixed horizon: read it once.")
    sequential_p_value: float | None = Field(
        default=None, description="Always valid (mSPRT): may be read at every look."
    )
    significant: bool = False
    note: str | None = None


class AbTestReport(BaseModel):
    deployment: str
    revision: int
    kind: str
    control: str
    alpha: float
    variants: list[VariantResult]
    winner: str | None = Field(description="Only when the sequential test is significant.")
    unknown_outcomes: int
    duplicate_outcomes: int


class Promote(_Strict):
    reason: str = Field(default="", max_length=400)


# --- canary rollouts ---------------------------------------------------------------------

MAX_ROLLOUT_STEPS = 20
ROLLOUT_STATES = ("running", "completed", "rolled_back", "aborted")


class RolloutStep(_Strict):
    """One step: the canary's percent of the stable variant's traffic, held at least
    this long and for at least this many canary answers."""

    weight: float = Field(gt=0, le=WEIGHT_TOTAL, description="Percent of the stable's share.")
    min_duration_s: float = Field(default=60.0, ge=0, le=7 * 86_400)
    min_requests: int = Field(default=100, ge=0, le=10**9)


def _default_steps() -> list[RolloutStep]:
    return [RolloutStep(weight=w) for w in (5, 25, 50, 100)]


class RolloutStart(_Strict):
    """Roll ``canary`` out in place of ``stable``, step by step, rolling back on its own
    if the canary fails more often or answers more slowly than the margins allow."""

    canary: VariantSpec = Field(description="The new variant (its weight is set by the steps).")
    stable: Name | None = Field(
        default=None, description="The live variant it replaces (default: the only one)."
    )
    steps: list[RolloutStep] = Field(
        default_factory=_default_steps, min_length=1, max_length=MAX_ROLLOUT_STEPS
    )
    max_failure_rate_increase: float = Field(
        default=0.01, ge=0, le=1, description="Absolute: 0.01 allows one point more."
    )
    max_p99_increase: float = Field(
        default=0.5, ge=0, le=100, description="Relative: 0.5 allows a p99 50% slower."
    )
    p99_slack_ms: float = Field(default=5.0, ge=0, le=60_000)
    reason: str = Field(default="", max_length=400)

    @model_validator(mode="after")
    def _steps_climb_to_all(self) -> RolloutStart:
        weights = [s.weight for s in self.steps]
        if any(b <= a for a, b in pairwise(weights)):
            shown = ", ".join(f"{w:g}" for w in weights)
            raise ValueError(f"the steps' weights must increase ({shown})")
        if abs(weights[-1] - WEIGHT_TOTAL) > WEIGHT_TOLERANCE:
            raise ValueError(f"the last step must give the canary 100, not {weights[-1]:g}")
        if self.canary.shadow:
            raise ValueError("the canary takes live traffic: it cannot be a shadow")
        return self


class RolloutAbort(_Strict):
    reason: str = Field(default="", max_length=400)


class VariantEvidence(BaseModel):
    """What a variant's answers looked like over the evidence's window."""

    variant: str
    requests: int
    errors: int
    refused: int
    failure_rate: float | None
    p50_ms: float | None
    p99_ms: float | None


class RolloutOut(BaseModel):
    deployment: str
    state: str = Field(description="running, completed, rolled_back or aborted.")
    canary: str
    stable: str
    step: int = Field(description="The current step, from 1.")
    steps: list[RolloutStep]
    weight: float = Field(description="The canary's percent of live traffic now.")
    started_at: datetime
    step_started_at: datetime
    finished_at: datetime | None
    base_revision: int = Field(description="The revision the rollout started from.")
    outcome: str = Field(description="Why it ended, or what the current step waits for.")
    canary_evidence: VariantEvidence = Field(description="The canary, over this step.")
    stable_evidence: VariantEvidence = Field(description="The stable, since the start.")
    started_by: str | None = None
