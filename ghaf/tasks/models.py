"""Tables: one lease row per periodic task, and the outcome of each run.

``scheduled_tasks`` is the lease: a server runs a task only after a conditional UPDATE
on its row made it the holder (see docs/adr/0014-task-scheduler.md). ``task_runs``
keeps the most recent runs of each task, started and finished.
"""

from __future__ import annotations

from datetime import datetime

from sqlalchemy import Boolean, DateTime, Float, ForeignKey, Index, String
from sqlalchemy.orm import Mapped, mapped_column

from ghaf.core.database import Base
from ghaf.core.ids import new_id


class ScheduledTask(Base):
    __tablename__ = "scheduled_tasks"

    name: Mapped[str] = mapped_column(String(128), primary_key=True)
    interval_s: Mapped[float] = mapped_column(Float)
    lease_holder: Mapped[str | None] = mapped_column(String(128))
    lease_until: Mapped[datetime | None] = mapped_column(DateTime(timezone=True))
    last_started_at: Mapped[datetime | None] = mapped_column(DateTime(timezone=True))
    last_finished_at: Mapped[datetime | None] = mapped_column(DateTime(timezone=True))
    last_ok: Mapped[bool | None] = mapped_column(Boolean)
    last_message: Mapped[str | None] = mapped_column(String(500))
    last_duration_s: Mapped[float | None] = mapped_column(Float)


class TaskRun(Base):
    __tablename__ = "task_runs"
    __table_args__ = (Index("ix_task_runs_task_started", "task_name", "started_at"),)

    id: Mapped[str] = mapped_column(String(36), primary_key=True, default=new_id)
    task_name: Mapped[str] = mapped_column(
        String(128), ForeignKey("scheduled_tasks.name", ondelete="CASCADE")
    )
    holder: Mapped[str] = mapped_column(String(128))
    started_at: Mapped[datetime] = mapped_column(DateTime(timezone=True))
    finished_at: Mapped[datetime | None] = mapped_column(DateTime(timezone=True))
    ok: Mapped[bool | None] = mapped_column(Boolean)
    message: Mapped[str] = mapped_column(String(500), default="")
    duration_s: Mapped[float | None] = mapped_column(Float)
