"""deployments and their revisions

Revision ID: 0011
Revises: 0010
Create Date: 2026-12-03 10:30:00
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "0011"
down_revision = "0010"
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.create_table(
        "deployments",
        sa.Column("id", sa.String(length=36), nullable=False),
        sa.Column("project_id", sa.String(length=36), nullable=False),
        sa.Column("name", sa.String(length=64), nullable=False),
        sa.Column("description", sa.String(length=2000), nullable=False),
        sa.Column("production", sa.Boolean(), nullable=False),
        sa.Column("revision", sa.Integer(), nullable=False),
        sa.Column("created_at", sa.DateTime(timezone=True), nullable=False),
        sa.Column("created_by", sa.String(length=64), nullable=True),
        sa.Column("updated_at", sa.DateTime(timezone=True), nullable=False),
        sa.Column("updated_by", sa.String(length=64), nullable=True),
        sa.ForeignKeyConstraint(
            ["project_id"],
            ["projects.id"],
            name=op.f("fk_deployments_project_id_projects"),
            ondelete="CASCADE",
        ),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_deployments")),
        sa.UniqueConstraint("project_id", "name", name="uq_deployments_name"),
    )
    op.create_table(
        "deployment_revisions",
        sa.Column("id", sa.String(length=36), nullable=False),
        sa.Column("deployment_id", sa.String(length=36), nullable=False),
        sa.Column("revision", sa.Integer(), nullable=False),
        sa.Column("spec", sa.JSON(), nullable=False),
        sa.Column("resolved", sa.JSON(), nullable=False),
        sa.Column("reason", sa.String(length=500), nullable=False),
        sa.Column("created_at", sa.DateTime(timezone=True), nullable=False),
        sa.Column("created_by", sa.String(length=64), nullable=True),
        sa.ForeignKeyConstraint(
            ["deployment_id"],
            ["deployments.id"],
            name=op.f("fk_deployment_revisions_deployment_id_deployments"),
            ondelete="CASCADE",
        ),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_deployment_revisions")),
        sa.UniqueConstraint("deployment_id", "revision", name="uq_deployment_revisions_revision"),
    )
    op.create_index(
        op.f("ix_deployment_revisions_deployment_id"),
        "deployment_revisions",
        ["deployment_id"],
        unique=False,
    )
    _fk = "fk_{table}_deployment_id_deployments"
    op.create_table(
        "deployment_assignments",
        sa.Column("deployment_id", sa.String(length=36), nullable=False),
        sa.Column("request_id", sa.String(length=64), nullable=False),
        sa.Column("variant", sa.String(length=64), nullable=False),
        sa.Column("revision", sa.Integer(), nullable=False),
        sa.Column("shadow", sa.Boolean(), nullable=False),
        sa.Column("at", sa.DateTime(timezone=True), nullable=False),
        sa.ForeignKeyConstraint(
            ["deployment_id"],
            ["deployments.id"],
            name=op.f(_fk.format(table="deployment_assignments")),
            ondelete="CASCADE",
        ),
        sa.PrimaryKeyConstraint(
            "deployment_id", "request_id", name=op.f("pk_deployment_assignments")
        ),
    )
    op.create_table(
        "deployment_outcomes",
        sa.Column("deployment_id", sa.String(length=36), nullable=False),
        sa.Column("request_id", sa.String(length=64), nullable=False),
        sa.Column("variant", sa.String(length=64), nullable=False),
        sa.Column("value", sa.Float(), nullable=False),
        sa.Column("at", sa.DateTime(timezone=True), nullable=False),
        sa.ForeignKeyConstraint(
            ["deployment_id"],
            ["deployments.id"],
            name=op.f(_fk.format(table="deployment_outcomes")),
            ondelete="CASCADE",
        ),
        sa.PrimaryKeyConstraint("deployment_id", "request_id", name=op.f("pk_deployment_outcomes")),
    )
    op.create_index(
        op.f("ix_deployment_outcomes_variant"), "deployment_outcomes", ["variant"], unique=False
    )
    op.create_table(
        "deployment_abtests",
        sa.Column("deployment_id", sa.String(length=36), nullable=False),
        sa.Column("config", sa.JSON(), nullable=False),
        sa.Column("sequential", sa.JSON(), nullable=False),
        sa.Column("unknown", sa.Integer(), nullable=False),
        sa.Column("duplicate", sa.Integer(), nullable=False),
        sa.Column("started_at", sa.DateTime(timezone=True), nullable=False),
        sa.ForeignKeyConstraint(
            ["deployment_id"],
            ["deployments.id"],
            name=op.f(_fk.format(table="deployment_abtests")),
            ondelete="CASCADE",
        ),
        sa.PrimaryKeyConstraint("deployment_id", name=op.f("pk_deployment_abtests")),
    )


def downgrade() -> None:
    op.drop_table("deployment_abtests")
    op.drop_index(op.f("ix_deployment_outcomes_variant"), table_name="deployment_outcomes")
    op.drop_table("deployment_outcomes")
    op.drop_table("deployment_assignments")
    op.drop_index(op.f("ix_deployment_revisions_deployment_id"), table_name="deployment_revisions")
    op.drop_table("deployment_revisions")
    op.drop_table("deployments")
