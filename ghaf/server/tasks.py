"""``ghaf admin tasks``: the domains' periodic tasks as the database records them."""

from __future__ import annotations

from ghaf.core.settings import Settings
from ghaf.domains import periodic_tasks
from ghaf.tasks.schemas import TaskOut


def task_report(settings: Settings) -> list[TaskOut]:
    """The periodic tasks as the database records them (``ghaf admin tasks``: local
    access on the server host, like the other admin commands)."""
    from ghaf.core.clock import utcnow
    from ghaf.core.database import Database
    from ghaf.core.migrate import check_schema
    from ghaf.tasks.service import statuses

    database = Database(settings.resolved_database_url)
    try:
        check_schema(database)
        with database.transaction(write=False) as session:
            return statuses(session, periodic_tasks(settings), now=utcnow())
    finally:
        database.dispose()
