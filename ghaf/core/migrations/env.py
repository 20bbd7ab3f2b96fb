"""Alembic environment: runs against the engine ghaf hands over in the config."""

from __future__ import annotations

from alembic import context

from ghaf.core.database import Base, _import_all_models

_import_all_models()
config = context.config
engine = config.attributes["engine"]

with engine.connect() as connection:
    context.configure(
        connection=connection,
        target_metadata=Base.metadata,
        render_as_batch=connection.dialect.name == "sqlite",
        compare_type=True,
    )
    with context.begin_transaction():
        context.run_migrations()
    connection.commit()
