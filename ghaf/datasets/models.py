"""Tables: datasets, their immutable versions, each version's manifest, and aliases."""

from __future__ import annotations

from datetime import datetime
from typing import Any

from sqlalchemy import (
    BigInteger,
    Boolean,
    CheckConstraint,
    DateTime,
    ForeignKey,
    Integer,
    String,
    UniqueConstraint,
)
from sqlalchemy.orm import Mapped, mapped_column

from ghaf.core.clock import utcnow
from ghaf.core.columns import JsonList, JsonObject
from ghaf.core.database import Base
from ghaf.core.ids import new_id


class Dataset(Base):
    __tablename__ = "datasets"

    id: Mapped[str] = mapped_column(String(36), primary_key=True, default=new_id)
    project_id: Mapped[str] = mapped_column(ForeignKey("projects.id", ondelete="CASCADE"))
    name: Mapped[str] = mapped_column(String(64))
    description: Mapped[str] = mapped_column(String(2000), default="")
    created_at: Mapped[datetime] = mapped_column(DateTime(timezone=True), default=utcnow)
    created_by: Mapped[str | None] = mapped_column(String(64))

    __table_args__ = (UniqueConstraint("project_id", "name", name="uq_datasets_project_name"),)


class DatasetVersion(Base):
    """Immutable once created: a numbered manifest of files."""

    __tablename__ = "dataset_versions"

    id: Mapped[str] = mapped_column(String(36), primary_key=True, default=new_id)
    dataset_id: Mapped[str] = mapped_column(ForeignKey("datasets.id", ondelete="CASCADE"))
    version: Mapped[int] = mapped_column(Integer)
    parent: Mapped[int | None] = mapped_column(Integer)
    description: Mapped[str] = mapped_column(String(2000), default="")
    file_count: Mapped[int] = mapped_column(Integer)
    total_bytes: Mapped[int] = mapped_column(BigInteger)
    manifest_sha256: Mapped[str] = mapped_column(String(64))
    # Tabular versions (one Parquet file) also keep their Arrow schema and profile.
    row_count: Mapped[int | None] = mapped_column(BigInteger)
    external: Mapped[bool] = mapped_column(Boolean, default=False)
    table_schema: Mapped[list[dict[str, Any]] | None] = mapped_column(JsonList())
    profile: Mapped[dict[str, Any] | None] = mapped_column(JsonObject())
    provenance: Mapped[dict[str, Any]] = mapped_column(JsonObject(), default=dict)
    created_at: Mapped[datetime] = mapped_column(DateTime(timezone=True), default=utcnow)
    created_by: Mapped[str | None] = mapped_column(String(64))

    __table_args__ = (UniqueConstraint("dataset_id", "version", name="uq_dataset_versions_number"),)


class DatasetFile(Base):
    """One manifest entry; the bytes are the project's blob with this content."""

    __tablename__ = "dataset_files"

    version_id: Mapped[str] = mapped_column(
        ForeignKey("dataset_versions.id", ondelete="CASCADE"), primary_key=True
    )
    path: Mapped[str] = mapped_column(String(1024), primary_key=True)
    size: Mapped[int] = mapped_column(BigInteger)
    sha256: Mapped[str] = mapped_column(String(64))
    # No cascade: storage can never drop content a version still names. Checked at
    # commit, so purging a whole project (which cascades to both) can finish first.
    blob_id: Mapped[str | None] = mapped_column(
        ForeignKey("blobs.id", deferrable=True, initially="DEFERRED"), index=True
    )
    # External references (s3://..., file:///...) are recorded, not copied; readers check
    # the bytes against ``sha256``.
    uri: Mapped[str | None] = mapped_column(String(2048))

    __table_args__ = (
        CheckConstraint("(blob_id IS NULL) <> (uri IS NULL)", name="stored_or_referenced"),
    )


class DatasetAlias(Base):
    """A movable name for a version (``latest`` is implicit and never stored)."""

    __tablename__ = "dataset_aliases"

    dataset_id: Mapped[str] = mapped_column(
        ForeignKey("datasets.id", ondelete="CASCADE"), primary_key=True
    )
    alias: Mapped[str] = mapped_column(String(64), primary_key=True)
    version: Mapped[int] = mapped_column(Integer)
    updated_at: Mapped[datetime] = mapped_column(DateTime(timezone=True), default=utcnow)
    updated_by: Mapped[str | None] = mapped_column(String(64))


CLASSIFICATIONS = ("public", "internal", "pii", "sensitive")


class DatasetColumnClass(Base):
    """A column's classification from ``since_version`` on (inherited until changed)."""

    __tablename__ = "dataset_column_classes"

    dataset_id: Mapped[str] = mapped_column(
        ForeignKey("datasets.id", ondelete="CASCADE"), primary_key=True
    )
    column: Mapped[str] = mapped_column(String(256), primary_key=True)
    since_version: Mapped[int] = mapped_column(Integer, primary_key=True)
    classification: Mapped[str] = mapped_column(String(16))
    updated_at: Mapped[datetime] = mapped_column(DateTime(timezone=True), default=utcnow)


class DatasetVersionConsumer(Base):
    """Lineage: what read a version (runs, once tracking exists; later jobs, monitors)."""

    __tablename__ = "dataset_version_consumers"

    version_id: Mapped[str] = mapped_column(
        ForeignKey("dataset_versions.id", ondelete="CASCADE"), primary_key=True
    )
    consumer_kind: Mapped[str] = mapped_column(String(32), primary_key=True)
    consumer_id: Mapped[str] = mapped_column(String(64), primary_key=True)
    created_at: Mapped[datetime] = mapped_column(DateTime(timezone=True), default=utcnow)
