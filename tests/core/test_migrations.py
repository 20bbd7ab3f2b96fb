"""The migrations build exactly the schema the models describe."""

from __future__ import annotations

from alembic.autogenerate import compare_metadata
from alembic.runtime.migration import MigrationContext

from ghaf.core.database import Base, Database
from ghaf.core.migrate import upgrade
from ghaf.domains import load_models
from tests.conftest import Databases


def test_models_and_migrations_agree(databases: Databases) -> None:
    load_models()
    database = Database(databases.new_url())
    try:
        upgrade(database)
        with database.engine.connect() as connection:
            context = MigrationContext.configure(connection, opts={"compare_type": True})
            differences = compare_metadata(context, Base.metadata)
        assert differences == [], f"write a migration for: {differences}"
    finally:
        database.dispose()


def test_blob_packs_migration_keeps_existing_blobs_readable(databases: Databases) -> None:
    """0004 turns every existing blob into a whole-object slice of itself."""
    from alembic import command
    from sqlalchemy import text

    from ghaf.core.migrate import alembic_config

    database = Database(databases.new_url())
    try:
        command.upgrade(alembic_config(database), "0003")
        with database.engine.begin() as connection:
            connection.execute(
                text(
                    "INSERT INTO projects (id, name, description, allowed_regions, created_at) "
                    "VALUES ('p1', 'p', '', '[]', CURRENT_TIMESTAMP)"
                )
            )
            connection.execute(
                text(
                    "INSERT INTO blobs (id, project_id, sha256, size, object_key, backend_url, "
                    "region, chunk_size, kek_version, wrapped_key, created_at) VALUES ('b1', "
                    "'p1', :sha, 42, 'objects/p1/b1', 'file:///x', 'local', 1048576, 1, 'w', "
                    "CURRENT_TIMESTAMP)"
                ),
                {"sha": "a" * 64},
            )
        upgrade(database)
        with database.engine.connect() as connection:
            row = connection.execute(
                text("SELECT object_id, object_offset, object_size FROM blobs WHERE id = 'b1'")
            ).one()
        assert tuple(row) == ("b1", 0, 42)
    finally:
        database.dispose()
