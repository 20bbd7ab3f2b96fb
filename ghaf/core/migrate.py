"""Schema migrations with Alembic, driven from code (no alembic.ini needed).

There is one linear history. Its first revisions live in ``ghaf/core/migrations/versions``;
a domain may keep its own revisions in its folder (``Domain.migrations``, registered by
ghaf/domains.py), each revising the newest one before it, so adding a table never means
editing a folder outside the domain.
"""

from __future__ import annotations

import os
from pathlib import Path

from alembic import command
from alembic.config import Config
from alembic.runtime.migration import MigrationContext
from alembic.script import ScriptDirectory

from ghaf.core.database import Database
from ghaf.core.errors import SchemaOutdated

MIGRATIONS_DIR = Path(__file__).parent / "migrations"
_domain_locations: list[Path] = []


def register_location(folder: Path) -> None:
    """Add a domain's folder of revision scripts to the history (idempotent)."""
    folder = Path(folder)
    if not folder.is_dir():
        raise ValueError(f"migrations folder {folder} does not exist")
    if folder not in _domain_locations:
        _domain_locations.append(folder)


def version_locations() -> list[Path]:
    """Every folder of revision scripts: core's first, then each domain's."""
    return [MIGRATIONS_DIR / "versions", *_domain_locations]


def _script() -> ScriptDirectory:
    return ScriptDirectory(
        str(MIGRATIONS_DIR), version_locations=[str(p) for p in version_locations()]
    )


def alembic_config(database: Database) -> Config:
    config = Config()
    config.set_main_option("script_location", str(MIGRATIONS_DIR))
    # os.pathsep, never spaces: a home folder may have spaces in its name.
    config.set_main_option("path_separator", "os")
    config.set_main_option("version_locations", os.pathsep.join(map(str, version_locations())))
    config.attributes["engine"] = database.engine
    return config


def head_revision() -> str:
    script = _script()
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
    script = _script()
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
