"""The tenant tables: projects and their role grants.

They live in ``security``, below ``projects``: every authorisation reads them
(``Context.in_project``, tokens, standing), and ``projects`` (the domain that creates,
renames, deletes and grants) sits above ``security`` and uses its services. See
docs/adr/0016-domain-manifests-and-layers.md.
"""

from __future__ import annotations

from datetime import datetime

from sqlalchemy import CheckConstraint, DateTime, ForeignKey, String, UniqueConstraint
from sqlalchemy.orm import Mapped, mapped_column

from ghaf.core.clock import utcnow
from ghaf.core.columns import JsonList
from ghaf.core.database import Base
from ghaf.core.ids import new_id


class Project(Base):
    """A tenant. Every resource belongs to exactly one project."""

    __tablename__ = "projects"

    id: Mapped[str] = mapped_column(String(36), primary_key=True, default=new_id)
    # Names stay reserved while a deleted project waits for its purge, so a restore
    # can never collide with a newer project of the same name.
    name: Mapped[str] = mapped_column(String(64), unique=True)
    description: Mapped[str] = mapped_column(String(2000), default="")
    allowed_regions: Mapped[list[str]] = mapped_column(JsonList(of_strings=True), default=list)
    created_at: Mapped[datetime] = mapped_column(DateTime(timezone=True), default=utcnow)
    created_by: Mapped[str | None] = mapped_column(String(36))
    deleted_at: Mapped[datetime | None] = mapped_column(DateTime(timezone=True), index=True)
    purge_after: Mapped[datetime | None] = mapped_column(DateTime(timezone=True))


class ProjectMember(Base):
    """A role grant in a project, to a principal or to a group (exactly one of them)."""

    __tablename__ = "project_members"

    id: Mapped[str] = mapped_column(String(36), primary_key=True, default=new_id)
    project_id: Mapped[str] = mapped_column(
        ForeignKey("projects.id", ondelete="CASCADE"), index=True
    )
    principal_id: Mapped[str | None] = mapped_column(
        ForeignKey("principals.id", ondelete="CASCADE"), index=True
    )
    group_id: Mapped[str | None] = mapped_column(
        ForeignKey("groups.id", ondelete="CASCADE"), index=True
    )
    role: Mapped[str] = mapped_column(String(16))
    created_at: Mapped[datetime] = mapped_column(DateTime(timezone=True), default=utcnow)

    __table_args__ = (
        UniqueConstraint("project_id", "principal_id", name="uq_project_members_principal"),
        UniqueConstraint("project_id", "group_id", name="uq_project_members_group"),
        CheckConstraint("(principal_id IS NULL) <> (group_id IS NULL)", name="exactly_one_subject"),
    )
