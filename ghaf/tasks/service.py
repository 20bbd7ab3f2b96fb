"""The scheduler's state in the database: leases, run records, and the listing.

Every write here is one short transaction (a conditional UPDATE or two); a task's own
work runs outside them. Times come from the caller's clock (UTC); leases assume the
servers' clocks agree to well within the lease (docs/adr/0014-task-scheduler.md).
"""

from __future__ import annotations

from collections.abc import Sequence
from datetime import datetime, timedelta
from typing import Literal, Protocol

from sqlalchemy import and_, case, delete, or_, select, update
from sqlalchemy.orm import Session

from ghaf.core.clock import as_utc, utcnow
from ghaf.core.database import Database, dialect_insert
from ghaf.core.errors import InvalidInput
from ghaf.core.paging import DEFAULT_LIMIT, check_page_size, decode_cursor, encode_cursor
from ghaf.tasks.models import ScheduledTask, TaskRun
from ghaf.tasks.schemas import TaskOut

KEEP_RUNS = 100  # run records kept per task; older ones are pruned as new ones finish
MESSAGE_CHARS = 500


class Declared(Protocol):
    """What registration and the listing need of a declared task (a ``PeriodicTask``)."""

    @property
    def name(self) -> str: ...

    @property
    def interval_s(self) -> float: ...


class Authorizing(Protocol):
    """The part of ``ghaf.security.context.Context`` the listing uses."""

    @property
    def session(self) -> Session: ...

    def require(self, permission: str, *, resource: str) -> None: ...


def register(database: Database, tasks: Sequence[Declared]) -> None:
    """Make sure every declared task has its lease row, with this server's interval."""
    if not tasks:
        return
    with database.transaction() as session:
        session.execute(
            dialect_insert(session, ScheduledTask).on_conflict_do_nothing(),
            [{"name": t.name, "interval_s": t.interval_s} for t in tasks],
        )
        for task in tasks:
            session.execute(
                update(ScheduledTask)
                .where(ScheduledTask.name == task.name, ScheduledTask.interval_s != task.interval_s)
                .values(interval_s=task.interval_s)
            )


def claim(
    database: Database,
    name: str,
    *,
    holder: str,
    interval_s: float,
    lease_s: float,
    now: datetime,
    run_id: str,
) -> bool:
    """Take the lease on ``name`` if the task is due and nobody else holds a live lease.

    One conditional UPDATE decides it (two servers racing for the row: the second sees
    the first's lease once that commits, on SQLite behind the write lock, on PostgreSQL
    by re-checking the row it waited for); the run record starts in the same commit.
    """
    due_before = now - timedelta(seconds=interval_s)
    with database.transaction() as session:
        won = session.execute(
            update(ScheduledTask)
            .where(
                ScheduledTask.name == name,
                or_(
                    ScheduledTask.lease_until.is_(None),
                    ScheduledTask.lease_until < now,
                    ScheduledTask.lease_holder == holder,
                ),
                or_(
                    ScheduledTask.last_finished_at.is_(None),
                    ScheduledTask.last_finished_at <= due_before,
                ),
            )
            .values(
                lease_holder=holder,
                lease_until=now + timedelta(seconds=lease_s),
                last_started_at=now,
            )
            .returning(ScheduledTask.name)
        ).scalar_one_or_none()
        if won is None:
            return False
        session.add(TaskRun(id=run_id, task_name=name, holder=holder, started_at=now, message=""))
    return True


def renew(database: Database, name: str, *, holder: str, lease_s: float, now: datetime) -> bool:
    """Extend a lease this holder still has; False if it lapsed and someone took it."""
    with database.transaction() as session:
        renewed = session.execute(
            update(ScheduledTask)
            .where(ScheduledTask.name == name, ScheduledTask.lease_holder == holder)
            .values(lease_until=now + timedelta(seconds=lease_s))
            .returning(ScheduledTask.name)
        ).scalar_one_or_none()
    return renewed is not None


def finish(
    database: Database,
    name: str,
    *,
    holder: str,
    run_id: str,
    started_at: datetime,
    finished_at: datetime,
    ok: bool,
    message: str,
) -> None:
    """Record a run's outcome and release the lease (only if this holder still has it)."""
    message = message[:MESSAGE_CHARS]
    duration = (finished_at - started_at).total_seconds()
    mine = ScheduledTask.lease_holder == holder
    with database.transaction() as session:
        session.execute(
            update(ScheduledTask)
            .where(ScheduledTask.name == name)
            .values(
                last_finished_at=finished_at,
                last_ok=ok,
                last_message=message,
                last_duration_s=duration,
                lease_holder=case((mine, None), else_=ScheduledTask.lease_holder),
                lease_until=case((mine, None), else_=ScheduledTask.lease_until),
            )
        )
        session.execute(
            update(TaskRun)
            .where(TaskRun.id == run_id)
            .values(finished_at=finished_at, ok=ok, message=message, duration_s=duration)
        )
        oldest_kept = (
            select(TaskRun.started_at)
            .where(TaskRun.task_name == name)
            .order_by(TaskRun.started_at.desc())
            .limit(1)
            .offset(KEEP_RUNS - 1)
            .scalar_subquery()
        )
        session.execute(
            delete(TaskRun).where(and_(TaskRun.task_name == name, TaskRun.started_at < oldest_kept))
        )


def due_at(row: ScheduledTask | None, interval_s: float, now: datetime) -> datetime | None:
    """When the task may next be claimed, or None while someone's lease is live."""
    if row is None:
        return now
    if row.lease_until is not None and as_utc(row.lease_until) >= now:
        return None
    if row.last_finished_at is None:
        return now
    return as_utc(row.last_finished_at) + timedelta(seconds=interval_s)


def read_rows(session: Session) -> dict[str, ScheduledTask]:
    return {row.name: row for row in session.scalars(select(ScheduledTask))}


def statuses(session: Session, declared: Sequence[Declared], *, now: datetime) -> list[TaskOut]:
    """Every declared task, then any other task with a row (one no server declares
    any more), each by name."""
    rows = read_rows(session)
    intervals = {t.name: t.interval_s for t in declared}
    order = sorted(intervals) + sorted(set(rows) - set(intervals))
    return [_status(name, intervals.get(name), rows.get(name), now) for name in order]


def _status(
    name: str, interval_s: float | None, row: ScheduledTask | None, now: datetime
) -> TaskOut:
    if row is None:
        assert interval_s is not None
        return TaskOut(name=name, interval_s=interval_s, state="never run", next_run_at=now)
    interval = row.interval_s if interval_s is None else interval_s
    live = row.lease_until is not None and as_utc(row.lease_until) >= now
    state: Literal["never run", "running", "ok", "error"]
    if live:
        state = "running"
    elif row.last_finished_at is None:
        state = "never run"
    else:
        state = "ok" if row.last_ok else "error"
    return TaskOut(
        name=name,
        interval_s=interval,
        state=state,
        last_started_at=_utc(row.last_started_at),
        last_finished_at=_utc(row.last_finished_at),
        last_duration_s=row.last_duration_s,
        last_message=row.last_message,
        next_run_at=due_at(row, interval, now),
        holder=row.lease_holder if live else None,
    )


def list_tasks(
    ctx: Authorizing,
    declared: Sequence[Declared],
    *,
    page_size: int = DEFAULT_LIMIT,
    cursor: str | None = None,
    now: datetime | None = None,
) -> tuple[list[TaskOut], str | None]:
    """One page of the periodic tasks by name, each with its last run and next run
    (platform admins)."""
    ctx.require("platform:admin", resource="tasks")
    check_page_size(page_size)
    after = _name_cursor(cursor)
    listed = sorted(statuses(ctx.session, declared, now=now or utcnow()), key=lambda t: t.name)
    if after is not None:
        listed = [t for t in listed if t.name > after]
    if len(listed) <= page_size:
        return listed, None
    page = listed[:page_size]
    return page, encode_cursor(page[-1].name)


def _name_cursor(cursor: str | None) -> str | None:
    if not cursor:
        return None
    last = decode_cursor(cursor)
    if not isinstance(last, str):
        raise InvalidInput("cursor is not one this server issued", field="cursor")
    return last


def _utc(value: datetime | None) -> datetime | None:
    return as_utc(value) if value is not None else None
