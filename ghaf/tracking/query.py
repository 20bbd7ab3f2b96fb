"""Run search as SQL: a parsed filter and order become one SELECT with bound parameters.

Each metric, param or tag the search names is one outer join on its table (for metrics,
``latest_metrics``), so a search reads one row per run and key, never metric history.
"""

from __future__ import annotations

from typing import Any

from sqlalchemy import Select, and_, false, or_, select
from sqlalchemy.orm import aliased

from ghaf.core.errors import InvalidInput
from ghaf.tracking.filters import (
    ATTRIBUTE,
    METRIC,
    PARAM,
    And,
    Compare,
    Field,
    Node,
    OrderKey,
)
from ghaf.tracking.models import STATUSES, Experiment, LatestMetric, Run, RunParam, RunTag

_ATTRIBUTE_COLUMNS: dict[str, Any] = {
    "id": Run.id,
    "run_id": Run.id,
    "name": Run.name,
    "run_name": Run.name,
    "status": Run.status,
    "created_by": Run.created_by,
    "experiment": Experiment.name,
    "start_time": Run.start_time,
    "end_time": Run.end_time,
}


class _Joins:
    """One aliased outer join per (kind, key) the search mentions."""

    def __init__(self) -> None:
        self._aliases: dict[tuple[str, str], Any] = {}

    def alias(self, field: Field) -> Any:
        found = self._aliases.get((field.kind, field.key))
        if found is None:
            table = {METRIC: LatestMetric, PARAM: RunParam}.get(field.kind, RunTag)
            found = aliased(table, name=f"j{len(self._aliases)}")
            self._aliases[(field.kind, field.key)] = found
        return found

    def column(self, field: Field) -> Any:
        if field.kind == ATTRIBUTE:
            return _ATTRIBUTE_COLUMNS[field.key]
        return self.alias(field).value

    def apply(self, statement: Select[Any]) -> Select[Any]:
        for (_kind, key), alias in self._aliases.items():
            statement = statement.outerjoin(alias, and_(alias.run_id == Run.id, alias.key == key))
        return statement


def _compare(node: Compare, joins: _Joins) -> Any:
    field, op, value = node.field, node.op, node.value
    if field.kind == ATTRIBUTE and field.key == "status":
        values = value if isinstance(value, tuple) else (value,)
        unknown = [v for v in values if v not in STATUSES]
        if unknown:
            raise InvalidInput(
                f"filter: status {unknown[0]!r} is not one of {', '.join(STATUSES)}",
                field="filter",
            )
    if op in ("is-null", "is-not-null"):
        present = (
            joins.alias(field).run_id.is_not(None)
            if field.kind != ATTRIBUTE
            else joins.column(field).is_not(None)
        )
        return present if op == "is-not-null" else ~present
    column = joins.column(field)
    match op:
        case "=":
            return column == value
        case "!=":
            return column != value
        case "<":
            return column < value
        case "<=":
            return column <= value
        case ">":
            return column > value
        case ">=":
            return column >= value
        case "in":
            return column.in_(value)
        case "not-in":
            return column.not_in(value)
        case "like":
            return column.like(value)
        case "not-like":
            return column.not_like(value)
        case "ilike":
            return column.ilike(value)
        case "not-ilike":
            return column.not_ilike(value)
    raise AssertionError(f"unknown operator {op}")  # the parser produces no other


def _where(node: Node, joins: _Joins) -> Any:
    if isinstance(node, Compare):
        return _compare(node, joins)
    parts = [_where(item, joins) for item in node.items]
    return and_(*parts) if isinstance(node, And) else or_(*parts)


def search_statement(
    *,
    project_id: str,
    experiment_ids: list[str] | None,
    node: Node | None,
    order: list[OrderKey],
    include_deleted: bool,
    offset: int,
    limit: int,
) -> Select[Any]:
    """``SELECT run, experiment name`` for one page of a search."""
    joins = _Joins()
    statement: Any = (
        select(Run, Experiment.name)
        .join(Experiment, Experiment.id == Run.experiment_id)
        .where(Run.project_id == project_id)
    )
    if experiment_ids is not None:
        statement = statement.where(
            Run.experiment_id.in_(experiment_ids) if experiment_ids else false()
        )
    if not include_deleted:
        statement = statement.where(Run.deleted_at.is_(None))
    if node is not None:
        statement = statement.where(_where(node, joins))
    ordering = []
    for key in order:
        column = joins.column(key.field)
        ordering.append((column.desc() if key.descending else column.asc()).nulls_last())
    ordering += [Run.start_time.desc(), Run.id.desc()]
    return joins.apply(statement).order_by(*ordering).offset(offset).limit(limit)
