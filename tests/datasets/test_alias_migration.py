"""Revision 0010 renames dataset tags to aliases and keeps every one of them."""

from __future__ import annotations

from alembic import command
from sqlalchemy import text

from ghaf.core.database import Database
from ghaf.core.migrate import alembic_config, upgrade
from tests.conftest import Databases


def test_tags_become_aliases_and_keep_their_versions(databases: Databases) -> None:
    database = Database(databases.new_url())
    try:
        command.upgrade(alembic_config(database), "0009")
        with database.engine.begin() as connection:
            connection.execute(
                text(
                    "INSERT INTO projects (id, name, description, allowed_regions, created_at) "
                    "VALUES ('p1', 'p', '', '[]', CURRENT_TIMESTAMP)"
                )
            )
            connection.execute(
                text(
                    "INSERT INTO datasets (id, project_id, name, description, created_at) "
                    "VALUES ('d1', 'p1', 'ds', '', CURRENT_TIMESTAMP)"
                )
            )
            connection.execute(
                text(
                    "INSERT INTO dataset_tags (dataset_id, name, version, updated_at) VALUES "
                    "('d1', 'prod', 3, CURRENT_TIMESTAMP), ('d1', 'staging', 4, CURRENT_TIMESTAMP)"
                )
            )
        upgrade(database)
        with database.engine.connect() as connection:
            rows = connection.execute(
                text(
                    "SELECT dataset_id, alias, version, updated_by FROM dataset_aliases "
                    "ORDER BY alias"
                )
            ).all()
            tables = database.engine.dialect.get_table_names(connection)
        assert [tuple(r) for r in rows] == [("d1", "prod", 3, None), ("d1", "staging", 4, None)]
        assert "dataset_tags" not in tables
        command.downgrade(alembic_config(database), "0009")
        with database.engine.connect() as connection:
            back = connection.execute(
                text("SELECT name, version FROM dataset_tags ORDER BY name")
            ).all()
        assert [tuple(r) for r in back] == [("prod", 3), ("staging", 4)]
    finally:
        database.dispose()
