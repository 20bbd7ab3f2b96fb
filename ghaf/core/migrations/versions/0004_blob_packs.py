"""blob packs: a blob is a slice of an encrypted object

Revision ID: 0004
Revises: 0003
Create Date: 2026-11-27 05:10:00
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "0004"
down_revision = "0003"
branch_labels = None
depends_on = None


def upgrade() -> None:
    with op.batch_alter_table("blobs") as batch:
        batch.add_column(sa.Column("object_id", sa.String(length=36), nullable=True))
        batch.add_column(
            sa.Column("object_offset", sa.BigInteger(), nullable=False, server_default="0")
        )
        batch.add_column(sa.Column("object_size", sa.BigInteger(), nullable=True))
    # Every blob so far is a whole object of its own, named by the blob's id.
    op.execute("UPDATE blobs SET object_id = id, object_size = size")
    with op.batch_alter_table("blobs") as batch:
        batch.alter_column("object_id", existing_type=sa.String(length=36), nullable=False)
        batch.alter_column("object_size", existing_type=sa.BigInteger(), nullable=False)
        batch.create_index("ix_blobs_object_id", ["object_id"])


def downgrade() -> None:
    with op.batch_alter_table("blobs") as batch:
        batch.drop_index("ix_blobs_object_id")
        batch.drop_column("object_size")
        batch.drop_column("object_offset")
        batch.drop_column("object_id")
