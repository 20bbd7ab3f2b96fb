"""Schema migrations with Alembic, driven from code (no alembic.ini needed)."""

from __future__ import annotations

from pathlib import Path

from alembic import command
from alembic.config import Config
from alembic.runtime.migration import MigrationContext
from alembic.script import ScriptDirectory

from ghaf.core.database import Database
from ghaf.core.errors import SchemaOutdated

MIGRATIONS_DIR = Path(__file__).parent / "migrations"


def alembic_config(database: Database) -> Config:
    config = Config()
    config.set_main_option("script_location", str(MIGRATIONS_DIR))
    config.attributes["engine"] = database.engine
    return config


def head_revision() -> str:
    script = ScriptDirectory(str(MIGRATIONS_DIR))
    head = script.get_current_head()
    assert head is not None, "the migrations folder has no revisions"
    return head


def current_revision(database: Database) -> str | None:
    with database.engine.connect() as connection:
        return MigrationContext.configure(connection).get_current_revision()


def upgrade(database: Database) -> tuple[str | None, str]:
    """Upgrade the schema to the newest revision; returns (before, after). Idempotent."""
    before = current_revision(database)
    command.upgrade(alembic_config(database), "head")
    return before, head_revision()


def check_schema(database: Database) -> None:
    """Refuse to run against a database that is missing or older than this code."""
    current = current_revision(database)
    head = head_revision()
    if current == head:
        return
    if current is None:
        raise SchemaOutdated("the database has no ghaf schema yet: run `ghaf admin init` first")
    script = ScriptDirectory(str(MIGRATIONS_DIR))
    known = {rev.revision for rev in script.walk_revisions()}
    if current not in known:
        raise SchemaOutdated(
            f"the database schema is at revision {current}, which this version of ghaf does "
            f"not know (it expects {head}): the database is newer than the code; upgrade ghaf"
        )
    raise SchemaOutdated(
        f"the database schema is at revision {current} but this version of ghaf needs "
        f"{head}: run `ghaf admin migrate`"
    )
