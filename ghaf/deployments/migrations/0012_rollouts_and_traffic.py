"""deployment traffic tallies and canary rollouts

Revision ID: 0012
Revises: 0011
Create Date: 2026-12-03 16:00:00
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "0012"
down_revision = "0011"
branch_labels = None
depends_on = None

_FK = "fk_{table}_deployment_id_deployments"


def upgrade() -> None:
    op.create_table(
        "deployment_traffic",
        sa.Column("id", sa.String(length=36), nullable=False),
        sa.Column("deployment_id", sa.String(length=36), nullable=False),
        sa.Column("variant", sa.String(length=64), nullable=False),
        sa.Column("revision", sa.Integer(), nullable=False),
        sa.Column("shadow", sa.Boolean(), nullable=False),
        sa.Column("requests", sa.Integer(), nullable=False),
        sa.Column("errors", sa.Integer(), nullable=False),
        sa.Column("refused", sa.Integer(), nullable=False),
        sa.Column("latency", sa.JSON(), nullable=False),
        sa.Column("latency_sum_s", sa.Float(), nullable=False),
        sa.Column("at", sa.DateTime(timezone=True), nullable=False),
        sa.ForeignKeyConstraint(
            ["deployment_id"],
            ["deployments.id"],
            name=op.f(_FK.format(table="deployment_traffic")),
            ondelete="CASCADE",
        ),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_deployment_traffic")),
    )
    op.create_index(
        op.f("ix_deployment_traffic_deployment_id"),
        "deployment_traffic",
        ["deployment_id"],
        unique=False,
    )
    op.create_index(op.f("ix_deployment_traffic_at"), "deployment_traffic", ["at"], unique=False)
    op.create_table(
        "deployment_rollouts",
        sa.Column("deployment_id", sa.String(length=36), nullable=False),
        sa.Column("state", sa.String(length=16), nullable=False),
        sa.Column("canary", sa.String(length=64), nullable=False),
        sa.Column("stable", sa.String(length=64), nullable=False),
        sa.Column("share", sa.Float(), nullable=False),
        sa.Column("config", sa.JSON(), nullable=False),
        sa.Column("step", sa.Integer(), nullable=False),
        sa.Column("base_revision", sa.Integer(), nullable=False),
        sa.Column("step_revision", sa.Integer(), nullable=False),
        sa.Column("started_at", sa.DateTime(timezone=True), nullable=False),
        sa.Column("step_started_at", sa.DateTime(timezone=True), nullable=False),
        sa.Column("finished_at", sa.DateTime(timezone=True), nullable=True),
        sa.Column("outcome", sa.String(length=500), nullable=False),
        sa.Column("started_by", sa.String(length=64), nullable=True),
        sa.ForeignKeyConstraint(
            ["deployment_id"],
            ["deployments.id"],
            name=op.f(_FK.format(table="deployment_rollouts")),
            ondelete="CASCADE",
        ),
        sa.PrimaryKeyConstraint("deployment_id", name=op.f("pk_deployment_rollouts")),
    )


def downgrade() -> None:
    op.drop_table("deployment_rollouts")
    op.drop_index(op.f("ix_deployment_traffic_at"), table_name="deployment_traffic")
    op.drop_index(op.f("ix_deployment_traffic_deployment_id"), table_name="deployment_traffic")
    op.drop_table("deployment_traffic")
