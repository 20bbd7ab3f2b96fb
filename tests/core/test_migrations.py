"""The migrations build exactly the schema the models describe."""

from __future__ import annotations

from alembic.autogenerate import compare_metadata
from alembic.runtime.migration import MigrationContext

from ghaf.core.database import Base, Database, _import_all_models
from ghaf.core.migrate import upgrade
from tests.conftest import Databases


def test_models_and_migrations_agree(databases: Databases) -> None:
    _import_all_models()
    database = Database(databases.new_url())
    try:
        upgrade(database)
        with database.engine.connect() as connection:
            context = MigrationContext.configure(connection, opts={"compare_type": True})
            differences = compare_metadata(context, Base.metadata)
        assert differences == [], f"write a migration for: {differences}"
    finally:
        database.dispose()
