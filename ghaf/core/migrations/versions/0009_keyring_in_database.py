"""keyring in the database: sealed key versions and the keyring's seal

Revision ID: 0009
Revises: 0008
Create Date: 2026-12-05 10:00:00

The key material is sealed by the master key, which a migration never holds: an
existing ``<home>/keyring.json`` is imported by ``ghaf admin migrate`` (or the first
server start) after this revision, see ``ghaf.security.keyring.DatabaseKeyring``.
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "0009"
down_revision = "0008"
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.create_table(
        "keyring_state",
        sa.Column("id", sa.Integer(), autoincrement=False, nullable=False),
        sa.Column("generation", sa.Integer(), nullable=False),
        sa.Column("provider", sa.String(length=32), nullable=False),
        sa.Column("kms_key_id", sa.String(length=2048), nullable=True),
        sa.Column("wrapped_master", sa.Text(), nullable=True),
        sa.Column("verifier", sa.Text(), nullable=False),
        sa.Column("created_at", sa.DateTime(timezone=True), nullable=False),
        sa.Column("updated_at", sa.DateTime(timezone=True), nullable=False),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_keyring_state")),
    )
    op.create_table(
        "keyring_keys",
        sa.Column("name", sa.String(length=128), nullable=False),
        sa.Column("version", sa.Integer(), autoincrement=False, nullable=False),
        sa.Column("sealed", sa.Text(), nullable=False),
        sa.Column("created_at", sa.DateTime(timezone=True), nullable=False),
        sa.PrimaryKeyConstraint("name", "version", name=op.f("pk_keyring_keys")),
    )


def downgrade() -> None:
    op.drop_table("keyring_keys")
    op.drop_table("keyring_state")
