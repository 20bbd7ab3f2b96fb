"""Database engine and sessions. SQLite (embedded default) and PostgreSQL.

SQLite runs in WAL mode. Transactions that write start with ``BEGIN IMMEDIATE`` so that
two writers (threads or server processes) queue on the write lock instead of failing
with ``SQLITE_BUSY`` when a read transaction tries to upgrade. Read-only sessions issue
no ``BEGIN``: each statement reads the latest committed state, as under PostgreSQL's
READ COMMITTED, and never waits for a writer. Nothing may write through a read session
(the audit of a refusal opens its own write transaction).
"""

from __future__ import annotations

import importlib
import json
import threading
from collections.abc import Iterable, Iterator
from contextlib import contextmanager
from typing import Any

from sqlalchemy import Engine, MetaData, create_engine, event
from sqlalchemy.engine import Connection
from sqlalchemy.orm import DeclarativeBase, Session, sessionmaker
from sqlalchemy.pool import ConnectionPoolEntry

from ghaf.core.errors import StoredObjectCorrupt

NAMING_CONVENTION = {
    "ix": "ix_%(column_0_label)s",
    "uq": "uq_%(table_name)s_%(column_0_name)s",
    "ck": "ck_%(table_name)s_%(constraint_name)s",
    "fk": "fk_%(table_name)s_%(column_0_name)s_%(referred_table_name)s",
    "pk": "pk_%(table_name)s",
}


class Base(DeclarativeBase):
    """Declarative base of every ghaf table (one metadata, one migration history)."""

    metadata = MetaData(naming_convention=NAMING_CONVENTION)


def load_models(modules: Iterable[str]) -> None:
    """Register the tables of ``modules`` on ``Base.metadata`` (for migrations and checks).

    Core names no domain: the list comes from above (``ghaf.domains.load_models``)."""
    for module in modules:
        importlib.import_module(module)


def is_sqlite(url: str) -> bool:
    return url.startswith("sqlite")


def _stored_json(text: str) -> Any:
    """A JSON column's value; text that does not parse (SQLite stores JSON as text, so
    anyone who can write the file can damage it) is an integrity problem, not a crash."""
    try:
        return json.loads(text)
    except ValueError:
        raise StoredObjectCorrupt(
            "a stored row holds a JSON value that does not parse: the metadata database "
            "was damaged or tampered with; restore it from a backup"
        ) from None


def make_engine(url: str, *, pool_size: int = 10, max_overflow: int = 20) -> Engine:
    """Create an engine with the settings ghaf relies on for ``url``'s dialect.

    ``pool_size`` and ``max_overflow`` (``GHAF_DATABASE_POOL_SIZE``,
    ``GHAF_DATABASE_MAX_OVERFLOW``) size PostgreSQL's connection pool; SQLite keeps
    SQLAlchemy's own pool for a local file."""
    if is_sqlite(url):
        engine = create_engine(
            url,
            connect_args={"check_same_thread": False, "timeout": 30},
            json_deserializer=_stored_json,
        )
        _configure_sqlite(engine)
        return engine
    return create_engine(
        url,
        pool_size=pool_size,
        max_overflow=max_overflow,
        pool_pre_ping=True,
        json_deserializer=_stored_json,
    )


def _configure_sqlite(engine: Engine) -> None:
    @event.listens_for(engine, "connect")
    def _on_connect(dbapi_connection: Any, _record: ConnectionPoolEntry) -> None:
        # Take transaction control away from the driver so BEGIN is ours to issue.
        dbapi_connection.isolation_level = None
        cursor = dbapi_connection.cursor()
        cursor.execute("PRAGMA journal_mode=WAL")
        cursor.execute("PRAGMA synchronous=NORMAL")
        cursor.execute("PRAGMA foreign_keys=ON")
        cursor.execute("PRAGMA busy_timeout=30000")
        # LIKE is case-sensitive on PostgreSQL; make SQLite agree (ILIKE is the other).
        cursor.execute("PRAGMA case_sensitive_like=ON")
        cursor.close()

    @event.listens_for(engine, "begin")
    def _on_begin(connection: Connection) -> None:
        if connection.get_execution_options().get("ghaf_write", False):
            connection.exec_driver_sql("BEGIN IMMEDIATE")


def insert_unique(session: Session, row: Base, *, conflict: str, field: str) -> None:
    """Add ``row`` and flush; a unique-constraint clash becomes ``Conflict(conflict)``.

    Checking first and inserting after races with concurrent requests; letting the
    database's constraint decide does not. The transaction is rolled back on a clash.
    """
    from sqlalchemy.exc import IntegrityError

    from ghaf.core.errors import Conflict

    session.add(row)
    try:
        session.flush()
    except IntegrityError:
        session.rollback()
        raise Conflict(conflict, field=field) from None


def insert_new(session: Session, model: type[Base], rows: list[dict[str, Any]]) -> None:
    """Insert ``rows``, skipping each that clashes with a unique constraint.

    For content-addressed rows, where a clash means a concurrent writer stored the same
    thing first: that is success, not a conflict.
    """
    if not rows:
        return
    session.execute(dialect_insert(session, model).on_conflict_do_nothing(), rows)


def dialect_insert(session: Session, model: type[Base]) -> Any:
    """The dialect's own INSERT, which has ``on_conflict_do_nothing/do_update``.

    Built on the table, not the mapped class: a Core statement skips the ORM's bulk
    persistence layer, which costs more than the insert itself for a few rows.
    """
    from sqlalchemy.dialects import postgresql, sqlite

    dialect = postgresql if session.get_bind().dialect.name == "postgresql" else sqlite
    return dialect.insert(model.__table__)


def insert_many(
    session: Session, table: Any, columns: list[str], rows: list[tuple[Any, ...]]
) -> None:
    """Insert plain tuples straight through the driver's ``executemany``.

    For the largest writes (100,000 manifest rows): SQLAlchemy's per-row parameter
    processing costs about as much as the database's own insert. Values must already be
    in the column's database form (strings, numbers, ``None``).
    """
    if not rows:
        return
    dialect = session.get_bind().dialect
    unknown = set(columns) - set(table.c.keys())
    if unknown:
        raise ValueError(f"{table.name} has no columns {sorted(unknown)}")
    quote = dialect.identifier_preparer.quote
    mark = {"qmark": "?", "format": "%s", "pyformat": "%s"}[dialect.paramstyle]
    # Identifiers come from the Table and are checked and quoted; every value is bound.
    statement = (
        f"INSERT INTO {quote(table.name)} ({', '.join(quote(c) for c in columns)}) "  # noqa: S608
        f"VALUES ({', '.join(mark for _ in columns)})"
    )
    session.connection().exec_driver_sql(statement, rows)


def among(session: Session, column: Any, values: list[str]) -> Any:
    """``column IN values`` with the values bound as one parameter.

    A manifest may name 100,000 hashes. One bound list per value would hit the
    databases' parameter limits and cost a compile step per value; one JSON array
    (SQLite's ``json_each``) or one array (PostgreSQL's ``= ANY``) costs neither.
    """
    if session.get_bind().dialect.name == "postgresql":
        from sqlalchemy import any_, bindparam
        from sqlalchemy.dialects.postgresql import ARRAY
        from sqlalchemy.types import String

        return column == any_(bindparam("among", values, type_=ARRAY(String)))
    import json

    from sqlalchemy import func, literal_column, select

    return column.in_(
        select(literal_column("value")).select_from(func.json_each(json.dumps(values)))
    )


class Database:
    """An engine plus the two session factories: ``read()`` and ``write()``."""

    def __init__(self, url: str, *, pool_size: int = 10, max_overflow: int = 20) -> None:
        self.url = url
        self.engine = make_engine(url, pool_size=pool_size, max_overflow=max_overflow)
        self._read = sessionmaker(self.engine, expire_on_commit=False)
        self._write = sessionmaker(
            self.engine.execution_options(ghaf_write=True), expire_on_commit=False
        )
        self._peek_local = threading.local()
        self._peek_lock = threading.Lock()
        self._peek_connections: list[Any] = []

    @property
    def is_sqlite(self) -> bool:
        return is_sqlite(self.url)

    def session(self, *, write: bool) -> Session:
        """A new session; ``write=True`` takes the write lock at BEGIN on SQLite."""
        return (self._write if write else self._read)()

    @contextmanager
    def transaction(self, *, write: bool = True) -> Iterator[Session]:
        """A session that commits on success and rolls back on any exception."""
        session = self.session(write=write)
        try:
            yield session
            session.commit()
        except BaseException:
            session.rollback()
            raise
        finally:
            session.close()

    def peek(self, sql: str) -> Any:
        """The first column of the first row of a tiny read, as cheaply as possible.

        For per-request checks (the security epoch). On SQLite each thread keeps one
        pooled connection for this, skipping pool checkout and session setup; it runs in
        autocommit, so it always sees the latest commit. PostgreSQL uses the pool.
        """
        if not self.is_sqlite:
            with self.engine.connect() as pooled:
                return pooled.exec_driver_sql(sql).scalar()
        raw = getattr(self._peek_local, "connection", None)
        if raw is None:
            raw = self.engine.raw_connection()
            self._peek_local.connection = raw
            with self._peek_lock:
                self._peek_connections.append(raw)
        cursor = raw.cursor()
        try:
            row = cursor.execute(sql).fetchone()
        finally:
            cursor.close()
        return row[0] if row else None

    def dispose(self) -> None:
        with self._peek_lock:
            for connection in self._peek_connections:
                connection.close()
            self._peek_connections.clear()
        self._peek_local = threading.local()
        self.engine.dispose()
