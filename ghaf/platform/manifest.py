"""A domain's one declaration: how it plugs into the app, the CLI and the metadata.

Each domain package has a ``manifest.py`` exposing ``MANIFEST = Domain(...)``, and
ghaf/domains.py lists them. The server mounts each router and builds each hot route from
its declared FastAPI endpoint; the ``ghaf`` command adds each CLI group; the metadata
loads each models module; the scheduler runs each periodic task; storage asks each
reference check before deleting content. Nothing else names a domain, so adding one
is its folder plus one line in ghaf/domains.py (docs/architecture.md, ADR 0016).
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable, Sequence
from contextlib import AbstractAsyncContextManager
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any, Generic, Protocol, TypeVar

from sqlalchemy.orm import Session

from ghaf.core.database import Database
from ghaf.core.settings import Settings
from ghaf.platform.events import Listener

if TYPE_CHECKING:
    import typer
    from fastapi import APIRouter


class HasDatabase(Protocol):
    """What the scheduler needs of the object it hands to tasks (the server's runtime)."""

    @property
    def database(self) -> Database: ...


R = TypeVar("R", bound=HasDatabase)


@dataclass(frozen=True)
class PeriodicTask(Generic[R]):
    """A piece of background work: ``run(runtime)`` every ``interval_s`` seconds.

    ``run`` may return a short message (what it did) for the run record; an exception
    records the run as failed and the task runs again after ``interval_s``.
    ``start_delay_s`` holds the first run in a freshly started process back (e.g. to
    give clients time to reconnect after an outage).
    """

    name: str
    interval_s: float
    run: Callable[[R], str | None]
    start_delay_s: float = 0.0

    def __post_init__(self) -> None:
        if not self.name or len(self.name) > 128:
            raise ValueError(f"task name {self.name!r} must be 1 to 128 characters")
        if self.interval_s <= 0:
            raise ValueError(f"task {self.name}: interval_s must be positive")


Endpoint = Callable[..., Awaitable[Any]]
"""A FastAPI endpoint function of the domain's router."""
ReferenceCheck = Callable[[Session, str], bool]
"""``check(session, blob_id)``: does this domain still name the stored blob?"""


def no_tasks(_settings: Settings) -> Sequence[PeriodicTask[Any]]:
    return ()


@dataclass(frozen=True)
class Domain:
    """What a domain brings; every field but ``name`` is optional.

    - ``router``: mounted under ``/api/v1``.
    - ``hot_routes``: endpoints of ``router`` (the functions themselves) that are also
      served before FastAPI's routing, by the same function (ghaf/server/hot_routes.py).
      Each may take path parameters (``str``) and one ``Call``/``ReadCall``.
    - ``cli``: ``(name, typer group)`` pairs added to the ``ghaf`` command; a function
      instead of a group is a top-level command (``ghaf serve``).
    - ``models``: modules whose tables join the one metadata (migrations, checks).
    - ``tasks``: the periodic tasks, given the settings (intervals may depend on them).
    - ``references``: checks storage asks before deleting a blob.
    - ``listeners``: ``(event, listener)`` pairs (ghaf/platform/events.py): what the
      domain does when a domain below it publishes the event, in the same transaction.
    - ``lifespan``: ``lifespan(runtime)``, an async context manager the server enters
      at start and leaves at shutdown, for what the domain runs while it serves (the
      deployments' replicas); it may keep objects in ``runtime.backends[name]``.
    - ``on_open``: run with the settings before a server or admin command opens the
      installation (e.g. the registry protects its files from model-checker children).
    - ``root_router``: routes mounted at the server's root instead, for a protocol that
      fixes its own paths (the Open Inference Protocol's ``/v2``). Every path under
      ``root_prefix`` is authenticated as ``/api/v1`` is, except ``root_anonymous``.
    - ``migrations``: the folder of the domain's Alembic revision scripts (usually
      ``Path(__file__).parent / "migrations"``); they join the one linear history
      (ghaf/core/migrate.py), each revising the newest revision before it.
    """

    name: str
    router: APIRouter | None = None
    hot_routes: tuple[Endpoint, ...] = ()
    cli: tuple[tuple[str, typer.Typer | Callable[..., Any]], ...] = ()
    models: tuple[str, ...] = ()
    tasks: Callable[[Settings], Sequence[PeriodicTask[Any]]] = no_tasks
    references: tuple[ReferenceCheck, ...] = ()
    listeners: tuple[tuple[str, Listener], ...] = ()
    lifespan: Callable[[Any], AbstractAsyncContextManager[None]] | None = None
    on_open: Callable[[Settings], None] | None = None
    root_router: APIRouter | None = None
    root_prefix: str | None = None
    root_anonymous: tuple[str, ...] = ()
    migrations: Path | None = None
