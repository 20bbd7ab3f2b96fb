"""Tables: blobs (encrypted, content-addressed objects) and artifacts (named references)."""

from __future__ import annotations

from datetime import datetime

from sqlalchemy import BigInteger, DateTime, ForeignKey, Index, Integer, String, UniqueConstraint
from sqlalchemy.orm import Mapped, mapped_column

from ghaf.core.clock import utcnow
from ghaf.core.database import Base
from ghaf.core.ids import new_id


class Blob(Base):
    """Content shared by every artifact and manifest in the project with this SHA-256.

    Its bytes are the slice ``object_offset`` .. ``+ size`` of one encrypted object: a
    whole object of its own (``object_id == id``), or a member of a pack that holds many
    small blobs under one data key (ADR 0009).
    """

    __tablename__ = "blobs"

    id: Mapped[str] = mapped_column(String(36), primary_key=True, default=new_id)
    project_id: Mapped[str] = mapped_column(ForeignKey("projects.id", ondelete="CASCADE"))
    sha256: Mapped[str] = mapped_column(String(64))
    size: Mapped[int] = mapped_column(BigInteger)
    object_key: Mapped[str] = mapped_column(String(512))
    object_id: Mapped[str] = mapped_column(String(36), index=True)
    object_offset: Mapped[int] = mapped_column(BigInteger, default=0, server_default="0")
    object_size: Mapped[int] = mapped_column(BigInteger)
    backend_url: Mapped[str] = mapped_column(String(512))
    region: Mapped[str] = mapped_column(String(64))
    chunk_size: Mapped[int] = mapped_column(Integer)
    kek_version: Mapped[int] = mapped_column(Integer)
    wrapped_key: Mapped[str] = mapped_column(String(128))
    created_at: Mapped[datetime] = mapped_column(DateTime(timezone=True), default=utcnow)

    __table_args__ = (
        UniqueConstraint("project_id", "sha256", name="uq_blobs_project_sha256"),
        Index("ix_blobs_project_kek_version", "project_id", "kek_version"),
    )


class Artifact(Base):
    """A logical path in a project pointing at a blob."""

    __tablename__ = "artifacts"

    id: Mapped[str] = mapped_column(String(36), primary_key=True, default=new_id)
    project_id: Mapped[str] = mapped_column(ForeignKey("projects.id", ondelete="CASCADE"))
    path: Mapped[str] = mapped_column(String(1024))
    blob_id: Mapped[str] = mapped_column(ForeignKey("blobs.id", ondelete="CASCADE"), index=True)
    size: Mapped[int] = mapped_column(BigInteger)
    sha256: Mapped[str] = mapped_column(String(64))
    created_at: Mapped[datetime] = mapped_column(DateTime(timezone=True), default=utcnow)
    created_by: Mapped[str | None] = mapped_column(String(64))

    __table_args__ = (UniqueConstraint("project_id", "path", name="uq_artifacts_project_path"),)
