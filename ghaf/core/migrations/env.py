"""Alembic environment: runs against the engine ghaf hands over in the config."""

from __future__ import annotations

from alembic import context

from ghaf.core.database import Base

# The tables are ``Base.metadata`` as loaded by whoever runs the migrations (they name
# the domains: ``ghaf.domains.load_models``); upgrades run the revision scripts alone.
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
