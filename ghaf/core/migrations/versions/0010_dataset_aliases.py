"""dataset aliases: a dataset's movable version names are aliases, as a model's are

Revision ID: 0010
Revises: 0009
Create Date: 2026-12-06 10:00:00

``dataset_tags(dataset_id, name, version, updated_at)`` becomes
``dataset_aliases(dataset_id, alias, version, updated_at, updated_by)``. The table is
created anew and its rows copied (rather than renamed in place) so its key and foreign
key carry the new table's names on SQLite and PostgreSQL alike.
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "0010"
down_revision = "0009"
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.create_table(
        "dataset_aliases",
        sa.Column("dataset_id", sa.String(length=36), nullable=False),
        sa.Column("alias", sa.String(length=64), nullable=False),
        sa.Column("version", sa.Integer(), nullable=False),
        sa.Column("updated_at", sa.DateTime(timezone=True), nullable=False),
        sa.Column("updated_by", sa.String(length=64), nullable=True),
        sa.ForeignKeyConstraint(
            ["dataset_id"],
            ["datasets.id"],
            name=op.f("fk_dataset_aliases_dataset_id_datasets"),
            ondelete="CASCADE",
        ),
        sa.PrimaryKeyConstraint("dataset_id", "alias", name=op.f("pk_dataset_aliases")),
    )
    op.execute(
        "INSERT INTO dataset_aliases (dataset_id, alias, version, updated_at) "
        "SELECT dataset_id, name, version, updated_at FROM dataset_tags"
    )
    op.drop_table("dataset_tags")


def downgrade() -> None:
    op.create_table(
        "dataset_tags",
        sa.Column("dataset_id", sa.String(length=36), nullable=False),
        sa.Column("name", sa.String(length=64), nullable=False),
        sa.Column("version", sa.Integer(), nullable=False),
        sa.Column("updated_at", sa.DateTime(timezone=True), nullable=False),
        sa.ForeignKeyConstraint(
            ["dataset_id"],
            ["datasets.id"],
            name=op.f("fk_dataset_tags_dataset_id_datasets"),
            ondelete="CASCADE",
        ),
        sa.PrimaryKeyConstraint("dataset_id", "name", name=op.f("pk_dataset_tags")),
    )
    op.execute(
        "INSERT INTO dataset_tags (dataset_id, name, version, updated_at) "
        "SELECT dataset_id, alias, version, updated_at FROM dataset_aliases"
    )
    op.drop_table("dataset_aliases")
