"""Tables: registered models, their versions, aliases, reviews and the registry policy."""

from __future__ import annotations

from datetime import datetime
from typing import Any

from sqlalchemy import (
    BigInteger,
    DateTime,
    ForeignKey,
    Integer,
    LargeBinary,
    String,
    Text,
    UniqueConstraint,
)
from sqlalchemy.orm import Mapped, mapped_column

from ghaf.core.clock import utcnow
from ghaf.core.columns import JsonList, JsonObject
from ghaf.core.database import Base
from ghaf.core.ids import new_id

PENDING = "pending"
APPROVED = "approved"
REJECTED = "rejected"
ARCHIVED = "archived"
STATUSES = (PENDING, APPROVED, REJECTED, ARCHIVED)

REQUEST = "request"
APPROVE = "approve"
REJECT = "reject"


class RegisteredModel(Base):
    __tablename__ = "registered_models"

    id: Mapped[str] = mapped_column(String(36), primary_key=True, default=new_id)
    project_id: Mapped[str] = mapped_column(ForeignKey("projects.id", ondelete="CASCADE"))
    name: Mapped[str] = mapped_column(String(64))
    description: Mapped[str] = mapped_column(String(2000), default="")
    created_at: Mapped[datetime] = mapped_column(DateTime(timezone=True), default=utcnow)
    created_by: Mapped[str | None] = mapped_column(String(64))

    __table_args__ = (UniqueConstraint("project_id", "name", name="uq_registered_models_name"),)


class ModelVersion(Base):
    """One immutable model file (a blob of the project) with what was checked about it."""

    __tablename__ = "model_versions"

    id: Mapped[str] = mapped_column(String(36), primary_key=True, default=new_id)
    model_id: Mapped[str] = mapped_column(ForeignKey("registered_models.id", ondelete="CASCADE"))
    version: Mapped[int] = mapped_column(Integer)
    status: Mapped[str] = mapped_column(String(16), default=PENDING)
    description: Mapped[str] = mapped_column(String(2000), default="")
    tags: Mapped[dict[str, str]] = mapped_column(JsonObject(), default=dict)
    format: Mapped[str] = mapped_column(String(16))
    filename: Mapped[str] = mapped_column(String(255))
    size: Mapped[int] = mapped_column(BigInteger)
    sha256: Mapped[str] = mapped_column(String(64))
    # No cascade: storage never drops content a version still names.
    blob_id: Mapped[str] = mapped_column(
        ForeignKey("blobs.id", deferrable=True, initially="DEFERRED"), index=True
    )
    onnx_blob_id: Mapped[str | None] = mapped_column(
        ForeignKey("blobs.id", deferrable=True, initially="DEFERRED"), index=True
    )
    run_id: Mapped[str | None] = mapped_column(
        ForeignKey("runs.id", ondelete="SET NULL"), index=True
    )
    source: Mapped[str] = mapped_column(String(1100))  # run artifact path or upload name
    inputs: Mapped[list[dict[str, Any]]] = mapped_column(JsonList(), default=list)
    outputs: Mapped[list[dict[str, Any]]] = mapped_column(JsonList(), default=list)
    sample: Mapped[bytes] = mapped_column(LargeBinary)  # .npz, read with allow_pickle=False
    checks: Mapped[dict[str, Any]] = mapped_column(JsonObject(), default=dict)
    card: Mapped[dict[str, Any]] = mapped_column(JsonObject(), default=dict)
    gates: Mapped[dict[str, Any] | None] = mapped_column(JsonObject())  # the latest gate check
    created_at: Mapped[datetime] = mapped_column(DateTime(timezone=True), default=utcnow)
    created_by: Mapped[str | None] = mapped_column(String(64))
    created_by_id: Mapped[str | None] = mapped_column(String(36))
    updated_at: Mapped[datetime] = mapped_column(DateTime(timezone=True), default=utcnow)

    __table_args__ = (UniqueConstraint("model_id", "version", name="uq_model_versions_version"),)


class ModelAlias(Base):
    __tablename__ = "model_aliases"

    model_id: Mapped[str] = mapped_column(
        ForeignKey("registered_models.id", ondelete="CASCADE"), primary_key=True
    )
    alias: Mapped[str] = mapped_column(String(64), primary_key=True)
    version_id: Mapped[str] = mapped_column(ForeignKey("model_versions.id", ondelete="CASCADE"))
    updated_at: Mapped[datetime] = mapped_column(DateTime(timezone=True), default=utcnow)
    updated_by: Mapped[str | None] = mapped_column(String(64))


class VersionReview(Base):
    """An approval request, an approval or a rejection, with its comment."""

    __tablename__ = "model_reviews"

    id: Mapped[str] = mapped_column(String(36), primary_key=True, default=new_id)
    version_id: Mapped[str] = mapped_column(
        ForeignKey("model_versions.id", ondelete="CASCADE"), index=True
    )
    kind: Mapped[str] = mapped_column(String(16))
    principal_id: Mapped[str | None] = mapped_column(String(36))
    principal: Mapped[str | None] = mapped_column(String(64))
    comment: Mapped[str] = mapped_column(String(4000), default="")
    created_at: Mapped[datetime] = mapped_column(DateTime(timezone=True), default=utcnow)


class RegistryPolicy(Base):
    """A project's registry policy, kept as the YAML its owner wrote (comments and all)."""

    __tablename__ = "registry_policies"

    project_id: Mapped[str] = mapped_column(
        ForeignKey("projects.id", ondelete="CASCADE"), primary_key=True
    )
    text: Mapped[str] = mapped_column(Text)
    updated_at: Mapped[datetime] = mapped_column(DateTime(timezone=True), default=utcnow)
    updated_by: Mapped[str | None] = mapped_column(String(64))
