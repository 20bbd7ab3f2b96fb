"""Tables: deployments and their numbered revisions.

A deployment row holds what is true now (its name, current revision, whether it is in
production); every change writes a new ``deployment_revisions`` row with the whole spec
and the model version each variant resolved to, so any earlier state can be restored
(``ghaf deploy rollback``) and the history reads as a list of whole specs.
"""

from __future__ import annotations

from datetime import datetime
from typing import Any

from sqlalchemy import (
    Boolean,
    DateTime,
    Float,
    ForeignKey,
    Integer,
    String,
    UniqueConstraint,
)
from sqlalchemy.orm import Mapped, mapped_column

from ghaf.core.clock import utcnow
from ghaf.core.columns import JsonObject
from ghaf.core.database import Base
from ghaf.core.ids import new_id


class Deployment(Base):
    __tablename__ = "deployments"

    id: Mapped[str] = mapped_column(String(36), primary_key=True, default=new_id)
    project_id: Mapped[str] = mapped_column(ForeignKey("projects.id", ondelete="CASCADE"))
    name: Mapped[str] = mapped_column(String(64))
    description: Mapped[str] = mapped_column(String(2000), default="")
    production: Mapped[bool] = mapped_column(Boolean, default=False)
    revision: Mapped[int] = mapped_column(Integer)
    created_at: Mapped[datetime] = mapped_column(DateTime(timezone=True), default=utcnow)
    created_by: Mapped[str | None] = mapped_column(String(64))
    updated_at: Mapped[datetime] = mapped_column(DateTime(timezone=True), default=utcnow)
    updated_by: Mapped[str | None] = mapped_column(String(64))

    __table_args__ = (UniqueConstraint("project_id", "name", name="uq_deployments_name"),)


class DeploymentRevision(Base):
    """One whole state of a deployment: its spec and what each variant resolved to."""

    __tablename__ = "deployment_revisions"

    id: Mapped[str] = mapped_column(String(36), primary_key=True, default=new_id)
    deployment_id: Mapped[str] = mapped_column(
        ForeignKey("deployments.id", ondelete="CASCADE"), index=True
    )
    revision: Mapped[int] = mapped_column(Integer)
    spec: Mapped[dict[str, Any]] = mapped_column(JsonObject())
    # {variant: {"model": name, "version": number, "sha256": hex}}
    resolved: Mapped[dict[str, Any]] = mapped_column(JsonObject())
    reason: Mapped[str] = mapped_column(String(500))
    created_at: Mapped[datetime] = mapped_column(DateTime(timezone=True), default=utcnow)
    created_by: Mapped[str | None] = mapped_column(String(64))

    __table_args__ = (
        UniqueConstraint("deployment_id", "revision", name="uq_deployment_revisions_revision"),
    )


class RequestAssignment(Base):
    """Which variant answered one request: what an outcome posted later is credited to."""

    __tablename__ = "deployment_assignments"

    deployment_id: Mapped[str] = mapped_column(
        ForeignKey("deployments.id", ondelete="CASCADE"), primary_key=True
    )
    request_id: Mapped[str] = mapped_column(String(64), primary_key=True)
    variant: Mapped[str] = mapped_column(String(64))
    revision: Mapped[int] = mapped_column(Integer)
    shadow: Mapped[bool] = mapped_column(Boolean, default=False)
    at: Mapped[datetime] = mapped_column(DateTime(timezone=True), default=utcnow)


class RequestOutcome(Base):
    """One outcome per request (a second one for the same request is refused)."""

    __tablename__ = "deployment_outcomes"

    deployment_id: Mapped[str] = mapped_column(
        ForeignKey("deployments.id", ondelete="CASCADE"), primary_key=True
    )
    request_id: Mapped[str] = mapped_column(String(64), primary_key=True)
    variant: Mapped[str] = mapped_column(String(64), index=True)
    value: Mapped[float] = mapped_column(Float)
    at: Mapped[datetime] = mapped_column(DateTime(timezone=True), default=utcnow)


class AbTestState(Base):
    """A running A/B test's counters and, per treatment, the always-valid p-value so
    far (a running minimum over looks, so it must be kept between them)."""

    __tablename__ = "deployment_abtests"

    deployment_id: Mapped[str] = mapped_column(
        ForeignKey("deployments.id", ondelete="CASCADE"), primary_key=True
    )
    config: Mapped[dict[str, Any]] = mapped_column(JsonObject())  # the spec's abtest
    sequential: Mapped[dict[str, Any]] = mapped_column(JsonObject())  # {variant: p}
    unknown: Mapped[int] = mapped_column(Integer, default=0)
    duplicate: Mapped[int] = mapped_column(Integer, default=0)
    started_at: Mapped[datetime] = mapped_column(DateTime(timezone=True), default=utcnow)


class VariantTraffic(Base):
    """What one server counted of one variant's answers over a few seconds (the
    gateway's ``TrafficWriter``): the evidence a canary rollout is judged on."""

    __tablename__ = "deployment_traffic"

    id: Mapped[str] = mapped_column(String(36), primary_key=True, default=new_id)
    deployment_id: Mapped[str] = mapped_column(
        ForeignKey("deployments.id", ondelete="CASCADE"), index=True
    )
    variant: Mapped[str] = mapped_column(String(64))
    revision: Mapped[int] = mapped_column(Integer)
    shadow: Mapped[bool] = mapped_column(Boolean, default=False)
    requests: Mapped[int] = mapped_column(Integer)
    errors: Mapped[int] = mapped_column(Integer)
    refused: Mapped[int] = mapped_column(Integer)
    latency: Mapped[dict[str, Any]] = mapped_column(JsonObject())  # {bucket: count}
    latency_sum_s: Mapped[float] = mapped_column(Float)
    at: Mapped[datetime] = mapped_column(DateTime(timezone=True), default=utcnow, index=True)


class RolloutState(Base):
    """A deployment's canary rollout: running, or how its last one ended.

    The weights live in the revisions the rollout writes; this row holds where it is
    (``step``, since ``step_started_at`` at ``step_revision``) and what it was told
    (``config``: the steps and margins), so any server's scheduler can take the next
    step."""

    __tablename__ = "deployment_rollouts"

    deployment_id: Mapped[str] = mapped_column(
        ForeignKey("deployments.id", ondelete="CASCADE"), primary_key=True
    )
    state: Mapped[str] = mapped_column(String(16))  # running, completed, rolled_back, aborted
    canary: Mapped[str] = mapped_column(String(64))
    stable: Mapped[str] = mapped_column(String(64))
    share: Mapped[float] = mapped_column(Float)  # the stable's weight when it started
    config: Mapped[dict[str, Any]] = mapped_column(JsonObject())
    step: Mapped[int] = mapped_column(Integer)
    base_revision: Mapped[int] = mapped_column(Integer)
    # The revision the current step began with: its evidence is the traffic counted at
    # that revision or later (rows carry the revision, so none from the step before).
    step_revision: Mapped[int] = mapped_column(Integer)
    started_at: Mapped[datetime] = mapped_column(DateTime(timezone=True), default=utcnow)
    step_started_at: Mapped[datetime] = mapped_column(DateTime(timezone=True), default=utcnow)
    finished_at: Mapped[datetime | None] = mapped_column(DateTime(timezone=True))
    outcome: Mapped[str] = mapped_column(String(500), default="")
    started_by: Mapped[str | None] = mapped_column(String(64))
