"""Tables: experiments, runs, and what a run records (params, tags, metrics, artifacts).

Metric history is one row per point, and ``latest_metrics`` keeps each key's latest
point per run, so search never scans history (see docs/adr/0010-metric-storage.md).
A NaN value is stored as NULL: SQLite cannot store NaN, and NULL gives both databases
the same semantics (never matches a comparison, sorts last).
"""

from __future__ import annotations

from datetime import datetime
from typing import Any

from sqlalchemy import (
    BigInteger,
    DateTime,
    Double,
    ForeignKey,
    Index,
    Integer,
    String,
    Text,
    UniqueConstraint,
)
from sqlalchemy.orm import Mapped, mapped_column

from ghaf.core.clock import utcnow
from ghaf.core.columns import JsonObject
from ghaf.core.database import Base
from ghaf.core.ids import new_id

RUNNING = "running"
FINISHED = "finished"
FAILED = "failed"
KILLED = "killed"
STATUSES = (RUNNING, FINISHED, FAILED, KILLED)
ENDED = (FINISHED, FAILED, KILLED)

# 64-bit everywhere except SQLite, where only INTEGER PRIMARY KEY is the rowid alias.
_ROW_ID = BigInteger().with_variant(Integer, "sqlite")


class Experiment(Base):
    __tablename__ = "experiments"

    id: Mapped[str] = mapped_column(String(36), primary_key=True, default=new_id)
    project_id: Mapped[str] = mapped_column(ForeignKey("projects.id", ondelete="CASCADE"))
    name: Mapped[str] = mapped_column(String(64))
    description: Mapped[str] = mapped_column(String(2000), default="")
    created_at: Mapped[datetime] = mapped_column(DateTime(timezone=True), default=utcnow)
    created_by: Mapped[str | None] = mapped_column(String(64))

    __table_args__ = (UniqueConstraint("project_id", "name", name="uq_experiments_project_name"),)


class Run(Base):
    __tablename__ = "runs"

    # Chosen by the client (a UUIDv7), so a run started while the server was unreachable
    # keeps its identity when its spooled log is sent later.
    id: Mapped[str] = mapped_column(String(36), primary_key=True)
    project_id: Mapped[str] = mapped_column(ForeignKey("projects.id", ondelete="CASCADE"))
    experiment_id: Mapped[str] = mapped_column(ForeignKey("experiments.id", ondelete="CASCADE"))
    name: Mapped[str] = mapped_column(String(128))
    status: Mapped[str] = mapped_column(String(16), default=RUNNING)
    # Why it ended, when ghaf ended it (a lost heartbeat); such a run revives if its
    # client turns out to be alive and logs again.
    status_reason: Mapped[str | None] = mapped_column(String(500))
    note: Mapped[str] = mapped_column(Text, default="")
    start_time: Mapped[datetime] = mapped_column(DateTime(timezone=True), default=utcnow)
    end_time: Mapped[datetime | None] = mapped_column(DateTime(timezone=True))
    heartbeat_at: Mapped[datetime] = mapped_column(DateTime(timezone=True), default=utcnow)
    created_by: Mapped[str | None] = mapped_column(String(64))
    provenance: Mapped[dict[str, Any]] = mapped_column(JsonObject(), default=dict)
    deleted_at: Mapped[datetime | None] = mapped_column(DateTime(timezone=True))

    __table_args__ = (
        Index("ix_runs_experiment_start", "experiment_id", "start_time"),
        Index("ix_runs_status_heartbeat", "status", "heartbeat_at"),
    )


class RunParam(Base):
    """Immutable once set."""

    __tablename__ = "run_params"

    run_id: Mapped[str] = mapped_column(ForeignKey("runs.id", ondelete="CASCADE"), primary_key=True)
    key: Mapped[str] = mapped_column(String(250), primary_key=True)
    value: Mapped[str] = mapped_column(String(8000))


class RunTag(Base):
    __tablename__ = "run_tags"

    run_id: Mapped[str] = mapped_column(ForeignKey("runs.id", ondelete="CASCADE"), primary_key=True)
    key: Mapped[str] = mapped_column(String(250), primary_key=True)
    value: Mapped[str] = mapped_column(String(8000))


class LatestMetric(Base):
    """One metric series of a run: its key and its latest point (highest step, then
    latest timestamp). History rows name the series by its integer id."""

    __tablename__ = "latest_metrics"

    id: Mapped[int] = mapped_column(_ROW_ID, primary_key=True, autoincrement=True)
    run_id: Mapped[str] = mapped_column(ForeignKey("runs.id", ondelete="CASCADE"))
    key: Mapped[str] = mapped_column(String(250))
    value: Mapped[float | None] = mapped_column(Double)  # NULL is NaN
    step: Mapped[int] = mapped_column(BigInteger)
    timestamp: Mapped[int] = mapped_column(BigInteger)

    __table_args__ = (
        UniqueConstraint("run_id", "key", name="uq_latest_metrics_run_key"),
        Index("ix_latest_metrics_key_value", "key", "value"),
    )


class Metric(Base):
    """One point of a metric's history. Rows are small (integers and a float) because a
    run may log millions: the run and key live once, in the series row."""

    __tablename__ = "metrics"

    id: Mapped[int] = mapped_column(_ROW_ID, primary_key=True, autoincrement=True)
    series_id: Mapped[int] = mapped_column(ForeignKey("latest_metrics.id", ondelete="CASCADE"))
    step: Mapped[int] = mapped_column(BigInteger)
    timestamp: Mapped[int] = mapped_column(BigInteger)  # milliseconds since the epoch, UTC
    value: Mapped[float | None] = mapped_column(Double)  # NULL is NaN

    __table_args__ = (Index("ix_metrics_series_step", "series_id", "step"),)


class RunBatch(Base):
    """Log batches already applied, by the client's sequence number: a retried batch
    whose first attempt did commit is recognised and not applied twice."""

    __tablename__ = "run_batches"

    run_id: Mapped[str] = mapped_column(ForeignKey("runs.id", ondelete="CASCADE"), primary_key=True)
    seq: Mapped[int] = mapped_column(BigInteger, primary_key=True)


class RunArtifact(Base):
    """A file a run produced; the bytes are the project's blob with this content."""

    __tablename__ = "run_artifacts"

    run_id: Mapped[str] = mapped_column(ForeignKey("runs.id", ondelete="CASCADE"), primary_key=True)
    path: Mapped[str] = mapped_column(String(1024), primary_key=True)
    size: Mapped[int] = mapped_column(BigInteger)
    sha256: Mapped[str] = mapped_column(String(64))
    # No cascade: storage never drops content a run still names (checked at commit).
    blob_id: Mapped[str] = mapped_column(
        ForeignKey("blobs.id", deferrable=True, initially="DEFERRED"), index=True
    )
    created_at: Mapped[datetime] = mapped_column(DateTime(timezone=True), default=utcnow)
