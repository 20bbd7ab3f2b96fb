"""Tracking logic: experiments, runs, their logs, search, artifacts and inputs.

Every call authorises through the context and writes audit rows in its own transaction.
A log batch (params, tags, metric points, an end status) is applied in one transaction:
all of it or none of it.
"""

from __future__ import annotations

import re
from datetime import datetime, timedelta
from typing import Any

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc
from sqlalchemy import func, select, update
from sqlalchemy.orm import Session

from ghaf.core.clock import as_utc, utcnow
from ghaf.core.database import among, dialect_insert, insert_many, insert_unique
from ghaf.core.errors import Conflict, InvalidInput, NotFound
from ghaf.core.ids import new_id
from ghaf.core.metrics import POINTS_LOGGED, RUNS_CREATED
from ghaf.core.names import validate_name
from ghaf.core.paging import check_page_size, decode_cursor, encode_cursor, paginate
from ghaf.datasets import service as datasets
from ghaf.security.context import Context
from ghaf.security.tenancy import Project
from ghaf.storage import service as storage
from ghaf.storage.paths import normalise_path
from ghaf.tracking import batches, filters, query, schemas
from ghaf.tracking.batches import LogBatch
from ghaf.tracking.keys import validate_key
from ghaf.tracking.models import (
    ENDED,
    FAILED,
    RUNNING,
    Experiment,
    LatestMetric,
    Metric,
    Run,
    RunArtifact,
    RunBatch,
    RunParam,
    RunTag,
)

HEARTBEAT_LOST = "heartbeat lost"
_RUN_ID = re.compile(r"[0-9a-f-]{8,36}")
_MAX_PROVENANCE_BYTES = 64 * 1024
# Milliseconds since the epoch between 1970 and 9999: anything else is a unit mistake.
_MAX_TIMESTAMP_MS = 253_402_300_799_999


def _names_blob(session: Session, blob_id: str) -> bool:
    """Storage's reference check (this domain's manifest declares it)."""
    return (
        session.scalar(select(RunArtifact.blob_id).where(RunArtifact.blob_id == blob_id).limit(1))
        is not None
    )


# --- experiments -----------------------------------------------------------------------


def _experiment_out(experiment: Experiment, project: str) -> schemas.ExperimentOut:
    return schemas.ExperimentOut(
        id=experiment.id,
        project=project,
        name=experiment.name,
        description=experiment.description,
        created_at=as_utc(experiment.created_at),
        created_by=experiment.created_by,
    )


def _find_experiment(pctx: Context, name: str) -> Experiment | None:
    validate_name(name, field="experiment")
    assert pctx.project is not None
    return pctx.session.scalar(
        select(Experiment).where(Experiment.project_id == pctx.project.id, Experiment.name == name)
    )


def _experiment(pctx: Context, name: str) -> Experiment:
    experiment = _find_experiment(pctx, name)
    if experiment is None:
        assert pctx.project is not None
        raise NotFound(
            f"project {pctx.project.name!r} has no experiment {name!r}", field="experiment"
        )
    return experiment


def _new_experiment(pctx: Context, name: str, description: str) -> Experiment:
    assert pctx.project is not None
    project = pctx.project.name
    pctx.require("experiment:write", resource=f"project/{project}/experiment/{name}")
    experiment = Experiment(
        project_id=pctx.project.id, name=name, description=description, created_by=pctx.actor
    )
    insert_unique(
        pctx.session,
        experiment,
        field="name",
        conflict=f"experiment {name!r} already exists in {project!r}",
    )
    pctx.audit("experiment:create", f"project/{project}/experiment/{name}")
    return experiment


def create_experiment(
    ctx: Context, project: str, request: schemas.ExperimentCreate
) -> schemas.ExperimentOut:
    pctx = ctx.in_project(project)
    experiment = _new_experiment(pctx, request.name, request.description)
    pctx.commit()
    return _experiment_out(experiment, project)


def list_experiments(
    ctx: Context, project: str, *, limit: int, cursor: str | None
) -> tuple[list[schemas.ExperimentOut], str | None]:
    pctx = ctx.in_project(project)
    pctx.require("experiment:read", resource=f"project/{project}/experiments")
    assert pctx.project is not None
    rows, next_cursor = paginate(
        pctx.session,
        select(Experiment).where(Experiment.project_id == pctx.project.id),
        key=Experiment.name,
        limit=limit,
        cursor=cursor,
    )
    return [_experiment_out(e, project) for e in rows], next_cursor


def get_experiment(ctx: Context, project: str, name: str) -> schemas.ExperimentOut:
    pctx = ctx.in_project(project)
    pctx.require("experiment:read", resource=f"project/{project}/experiment/{name}")
    return _experiment_out(_experiment(pctx, name), project)


# --- runs ------------------------------------------------------------------------------


def _run(pctx: Context, ref: str, *, include_deleted: bool = True) -> Run:
    """A run by id, or by a unique prefix of at least 8 characters of its id."""
    assert pctx.project is not None
    if not _RUN_ID.fullmatch(ref):
        raise InvalidInput(
            f"run {ref!r} is not a run id (or a prefix of one, at least 8 characters)",
            field="run",
        )
    statement = select(Run).where(Run.project_id == pctx.project.id)
    if len(ref) == 36:
        found = pctx.session.scalars(statement.where(Run.id == ref)).all()
    else:
        found = pctx.session.scalars(
            statement.where(Run.id.like(ref + "%")).order_by(Run.id).limit(2)
        ).all()
    if len(found) > 1:
        raise InvalidInput(f"run prefix {ref!r} matches more than one run", field="run")
    if not found or (found[0].deleted_at is not None and not include_deleted):
        raise NotFound(f"project {pctx.project.name!r} has no run {ref!r}", field="run")
    return found[0]


def _resource(project: str, run: Run) -> str:
    return f"project/{project}/run/{run.id}"


def _details(pctx: Context, run_ids: list[str]) -> dict[str, dict[str, Any]]:
    """Params, latest metrics, tags and inputs of many runs of ``pctx``'s project in
    four queries."""
    session = pctx.session
    found: dict[str, dict[str, Any]] = {
        run_id: {"params": {}, "metrics": {}, "tags": {}, "inputs": []} for run_id in run_ids
    }
    if not run_ids:
        return found
    for table, name in ((RunParam, "params"), (RunTag, "tags")):
        for run_id, key, value in session.execute(
            select(table.run_id, table.key, table.value).where(
                among(session, table.run_id, run_ids)
            )
        ):
            found[run_id][name][key] = value
    for run_id, key, number in session.execute(
        select(LatestMetric.run_id, LatestMetric.key, LatestMetric.value).where(
            among(session, LatestMetric.run_id, run_ids)
        )
    ):
        found[run_id]["metrics"][key] = float("nan") if number is None else number
    for run_id, pairs in datasets.consumed_by(pctx, "run", run_ids).items():
        found[run_id]["inputs"] = [
            schemas.RunInputOut(dataset=name, version=version) for name, version in pairs
        ]
    return found


def _run_out(
    run: Run,
    project: str,
    experiment: str,
    details: dict[str, Any],
    *,
    heartbeat_timeout_s: float | None = None,
) -> schemas.RunOut:
    return schemas.RunOut(
        id=run.id,
        project=project,
        experiment=experiment,
        name=run.name,
        status=run.status,
        status_reason=run.status_reason,
        note=run.note,
        start_time=as_utc(run.start_time),
        end_time=as_utc(run.end_time) if run.end_time else None,
        heartbeat_at=as_utc(run.heartbeat_at),
        created_by=run.created_by,
        provenance=run.provenance,
        deleted=run.deleted_at is not None,
        heartbeat_timeout_s=heartbeat_timeout_s,
        **details,
    )


def _one_out(
    pctx: Context, run: Run, *, heartbeat_timeout_s: float | None = None
) -> schemas.RunOut:
    assert pctx.project is not None
    experiment = pctx.session.scalar(
        select(Experiment.name).where(Experiment.id == run.experiment_id)
    )
    return _run_out(
        run,
        pctx.project.name,
        experiment or "",
        _details(pctx, [run.id])[run.id],
        heartbeat_timeout_s=heartbeat_timeout_s,
    )


def _checked_strings(values: dict[str, str], *, kind: str) -> dict[str, str]:
    for key, value in values.items():
        validate_key(key, kind=kind)
        if len(value) > schemas.MAX_PARAM_VALUE:
            raise InvalidInput(
                f"{kind} {key!r} is {len(value):,} characters long; the limit is "
                f"{schemas.MAX_PARAM_VALUE:,}. Log long values as an artifact "
                "(run.log_text or run.log_artifact).",
                field=f"{kind}s.{key}",
            )
        if "\x00" in value:
            raise InvalidInput(f"{kind} {key!r} contains a NUL byte", field=f"{kind}s.{key}")
    return values


def create_run(
    ctx: Context,
    project: str,
    experiment_name: str,
    request: schemas.RunCreate,
    *,
    heartbeat_timeout_s: float | None = None,
) -> schemas.RunOut:
    """Start a run. With a client-chosen ``id`` that exists already, answer that run."""
    pctx = ctx.in_project(project)
    pctx.require("run:write", resource=f"project/{project}/experiment/{experiment_name}")
    assert pctx.project is not None
    experiment = _find_experiment(pctx, experiment_name)
    if experiment is None:
        if not request.create_experiment:
            _experiment(pctx, experiment_name)  # raises NotFound
        experiment = _new_experiment(pctx, experiment_name, "")
    tags = _checked_strings(request.tags, kind="tag")
    if len(repr(request.provenance)) > _MAX_PROVENANCE_BYTES:
        raise InvalidInput("provenance is larger than 64 KiB", field="provenance")
    run_id = request.id or new_id()
    now = utcnow()
    row = {
        "id": run_id,
        "project_id": pctx.project.id,
        "experiment_id": experiment.id,
        "name": request.name or f"run-{run_id[-6:]}",
        "note": request.note,
        "status": RUNNING,
        "start_time": as_utc(request.start_time) if request.start_time else now,
        "heartbeat_at": now,
        "created_by": pctx.actor,
        "provenance": request.provenance,
    }
    inserted = pctx.session.execute(
        dialect_insert(pctx.session, Run).values(**row).on_conflict_do_nothing().returning(Run.id)
    ).scalar()
    if inserted is None:  # the id exists: a replayed creation answers the run it made
        existing = pctx.session.get(Run, run_id)
        assert existing is not None
        if existing.project_id != pctx.project.id or existing.experiment_id != experiment.id:
            raise Conflict(f"run id {run_id} is taken", field="id")
        return _one_out(pctx, existing, heartbeat_timeout_s=heartbeat_timeout_s)
    run = Run(**row)
    _upsert_tags(pctx.session, run.id, tags)
    pctx.audit("run:create", _resource(project, run), detail={"experiment": experiment_name})
    pctx.commit()
    RUNS_CREATED.inc()
    return _run_out(
        run,
        project,
        experiment_name,
        {"params": {}, "metrics": {}, "tags": tags, "inputs": []},
        heartbeat_timeout_s=heartbeat_timeout_s,
    )


def get_run(ctx: Context, project: str, ref: str) -> schemas.RunOut:
    pctx = ctx.in_project(project)
    pctx.require("run:read", resource=f"project/{project}/run/{ref}")
    return _one_out(pctx, _run(pctx, ref))


def find_run(pctx: Context, ref: str) -> schemas.RunOut:
    """For domains above (the registry): a run of ``pctx``'s project with its latest
    metrics and inputs. Needs ``run:read``."""
    assert pctx.project is not None
    pctx.require("run:read", resource=f"project/{pctx.project.name}/run/{ref}")
    return _one_out(pctx, _run(pctx, ref))


def run_id(pctx: Context, ref: str) -> str:
    """For domains above (the registry links a version to a run): the id of a run of
    ``pctx``'s project, without loading its metrics. Needs ``run:read``."""
    assert pctx.project is not None
    pctx.require("run:read", resource=f"project/{pctx.project.name}/run/{ref}")
    return _run(pctx, ref).id


def find_artifact(pctx: Context, ref: str, path: str) -> RunArtifact:
    """For domains above (the registry): the artifact at ``path`` of a run of
    ``pctx``'s project (its blob names the bytes). Needs ``run:read``."""
    assert pctx.project is not None
    pctx.require("run:read", resource=f"project/{pctx.project.name}/run/{ref}")
    run = _run(pctx, ref)
    artifact = pctx.session.get(RunArtifact, (run.id, normalise_path(path)))
    if artifact is None:
        raise NotFound(f"run {run.id} has no artifact {path!r}", field="artifact")
    return artifact


def _end(
    pctx: Context,
    run: Run,
    status: str,
    end_time: datetime | None,
    *,
    logged: dict[str, Any] | None = None,
) -> None:
    """End the run; ``logged`` describes a final batch, audited in the same row."""
    assert pctx.project is not None
    run.status = status
    run.status_reason = None
    run.end_time = as_utc(end_time) if end_time else utcnow()
    detail = {"status": status, **(logged or {})}
    pctx.audit("run:end", _resource(pctx.project.name, run), detail=detail)


def _check_open(run: Run, project: str) -> None:
    """Refuse to change an ended or deleted run, except to revive one that ghaf ended
    only because its heartbeat stopped: its client is evidently alive."""
    if run.deleted_at is not None:
        raise Conflict(f"run {run.id} is deleted; restore it first", field="run")
    if run.status == RUNNING:
        return
    if run.status == FAILED and (run.status_reason or "").startswith(HEARTBEAT_LOST):
        run.status, run.status_reason, run.end_time = RUNNING, None, None
        return
    raise Conflict(
        f"run {run.id} in {project!r} is {run.status}: nothing more can be logged to it",
        field="run",
        status_now=run.status,
    )


def update_run(ctx: Context, project: str, ref: str, request: schemas.RunUpdate) -> schemas.RunOut:
    """Rename, change the note, or end the run (ending it twice the same way is a no-op)."""
    pctx = ctx.in_project(project)
    pctx.require("run:write", resource=f"project/{project}/run/{ref}")
    run = _run(pctx, ref)
    if request.status is not None and request.status == run.status:
        request = request.model_copy(update={"status": None})
    if request.status is not None:
        _check_open(run, project)
        _end(pctx, run, request.status, request.end_time)
    if request.name is not None or request.note is not None:
        if run.deleted_at is not None:
            raise Conflict(f"run {run.id} is deleted; restore it first", field="run")
        run.name = request.name if request.name is not None else run.name
        run.note = request.note if request.note is not None else run.note
        pctx.audit("run:update", _resource(project, run))
    pctx.commit()
    return _one_out(pctx, run)


def _set_deleted(ctx: Context, project: str, ref: str, *, deleted: bool) -> schemas.RunOut:
    pctx = ctx.in_project(project)
    pctx.require("run:write", resource=f"project/{project}/run/{ref}")
    run = _run(pctx, ref)
    if (run.deleted_at is not None) != deleted:
        run.deleted_at = utcnow() if deleted else None
        pctx.audit("run:delete" if deleted else "run:restore", _resource(project, run))
        pctx.commit()
    return _one_out(pctx, run)


def delete_run(ctx: Context, project: str, ref: str) -> schemas.RunOut:
    """Hide the run from searches and lists; ``restore_run`` brings it back."""
    return _set_deleted(ctx, project, ref, deleted=True)


def restore_run(ctx: Context, project: str, ref: str) -> schemas.RunOut:
    return _set_deleted(ctx, project, ref, deleted=False)


# --- logging ---------------------------------------------------------------------------


def _claim_batch(session: Session, run_id: str, seq: int) -> bool:
    """Record batch ``seq`` as applied; False if it was applied before."""
    statement = dialect_insert(session, RunBatch).values(run_id=run_id, seq=seq)
    # RETURNING, not rowcount: drivers disagree on rowcount for ON CONFLICT DO NOTHING.
    claimed = session.execute(statement.on_conflict_do_nothing().returning(RunBatch.seq))
    return claimed.scalar() is not None


def _apply_params(session: Session, run: Run, params: dict[str, str]) -> None:
    """Params are immutable: the same value again is fine, another value is a conflict."""
    if not params:
        return
    _checked_strings(params, kind="param")
    # Insert first (the common case: all new); only keys already set need a comparison.
    statement = dialect_insert(session, RunParam).on_conflict_do_nothing()
    inserted = set(
        session.execute(
            statement.returning(RunParam.key),
            [{"run_id": run.id, "key": k, "value": v} for k, v in params.items()],
        ).scalars()
    )
    existing = [k for k in params if k not in inserted]
    if not existing:
        return
    stored = dict(
        session.execute(
            select(RunParam.key, RunParam.value).where(
                RunParam.run_id == run.id, among(session, RunParam.key, existing)
            )
        ).all()
    )
    for key in existing:
        if stored[key] != params[key]:
            raise Conflict(
                f"param {key!r} of run {run.id} is already {_clip(stored[key])!r}; params "
                f"cannot change (got {_clip(params[key])!r}). Use a tag or a metric for "
                "values that change.",
                field=f"params.{key}",
            )


def _clip(value: str) -> str:
    return value if len(value) <= 60 else value[:57] + "..."


def _upsert_tags(session: Session, run_id: str, tags: dict[str, str]) -> None:
    if not tags:
        return
    statement = dialect_insert(session, RunTag)
    session.execute(
        statement.on_conflict_do_update(
            index_elements=[RunTag.run_id, RunTag.key], set_={"value": statement.excluded.value}
        ),
        [{"run_id": run_id, "key": k, "value": v} for k, v in tags.items()],
    )


def _checked_metrics(table: pa.Table) -> list[str]:
    """Validate keys and ranges; returns the distinct keys."""
    keys = table["key"].combine_chunks()
    distinct = [str(k) for k in keys.dictionary.to_pylist()] if table.num_rows else []
    for key in distinct:
        validate_key(key, kind="metric")
    if table.num_rows:
        timestamps = table["timestamp"]
        low, high = pc.min(timestamps).as_py(), pc.max(timestamps).as_py()
        if low < 0 or high > _MAX_TIMESTAMP_MS:
            raise InvalidInput(
                "metrics.timestamp must be milliseconds since the epoch (0 to year 9999)",
                field="metrics.timestamp",
            )
    return distinct


def _latest_points(table: pa.Table) -> list[dict[str, Any]]:
    """Each key's latest point in the batch: highest step, then timestamp, then last logged."""
    keys = table["key"].combine_chunks()
    index = keys.indices.to_numpy(zero_copy_only=False)
    steps = table["step"].to_numpy()
    stamps = table["timestamp"].to_numpy()
    order = np.lexsort((np.arange(len(index)), stamps, steps, index))
    sorted_index = index[order]
    last = order[np.r_[sorted_index[1:] != sorted_index[:-1], True]]
    names = keys.dictionary.to_pylist()
    values = table["value"].to_numpy()
    return [
        {
            "key": names[index[i]],
            "value": None if np.isnan(values[i]) else float(values[i]),
            "step": int(steps[i]),
            "timestamp": int(stamps[i]),
        }
        for i in last
    ]


_LATEST_UPSERTS: dict[str, Any] = {}


def _latest_upsert(session: Session) -> Any:
    """The upsert of latest points, built once per dialect: building it (with its
    ``excluded`` columns and condition) cost 8% of a log batch's server CPU."""
    dialect = session.get_bind().dialect.name
    found = _LATEST_UPSERTS.get(dialect)
    if found is None:
        statement = dialect_insert(session, LatestMetric)
        excluded = statement.excluded
        newer = (excluded.step > LatestMetric.step) | (
            (excluded.step == LatestMetric.step) & (excluded.timestamp >= LatestMetric.timestamp)
        )
        found = statement.on_conflict_do_update(
            index_elements=[LatestMetric.run_id, LatestMetric.key],
            set_={"value": excluded.value, "step": excluded.step, "timestamp": excluded.timestamp},
            where=newer,
        ).returning(LatestMetric.key, LatestMetric.id)
        _LATEST_UPSERTS[dialect] = found
    return found


def _update_latest(session: Session, run_id: str, table: pa.Table) -> dict[str, int]:
    """Upsert each key's series row with the batch's latest point (unless the stored one
    is newer); returns the series id of every key in the batch."""
    rows = [{"run_id": run_id, **point} for point in _latest_points(table)]
    upserted = session.execute(_latest_upsert(session), rows)
    series = {key: series_id for key, series_id in upserted}
    # Keys whose stored point is newer were not touched, so not returned: look them up.
    older = [row["key"] for row in rows if row["key"] not in series]
    if older:
        series.update(
            session.execute(
                select(LatestMetric.key, LatestMetric.id).where(
                    LatestMetric.run_id == run_id, among(session, LatestMetric.key, older)
                )
            ).all()
        )
    return series


def _insert_points(session: Session, table: pa.Table, series: dict[str, int]) -> None:
    keys = table["key"].combine_chunks()
    # A dictionary may hold keys this batch does not use (-1: never indexed).
    ids = np.array([series.get(k, -1) for k in keys.dictionary.to_pylist()], dtype=np.int64)
    series_ids = ids[keys.indices.to_numpy(zero_copy_only=False)]
    values = table["value"]
    # NaN is stored as NULL (see models); +-inf are stored as themselves.
    values = pc.if_else(pc.is_nan(values), pa.scalar(None, pa.float64()), values)
    rows = list(
        zip(
            series_ids.tolist(),
            table["step"].to_pylist(),
            table["timestamp"].to_pylist(),
            values.to_pylist(),
            strict=True,
        )
    )
    insert_many(session, Metric.__table__, ["series_id", "step", "timestamp", "value"], rows)


def _log_result(run: Run, batch: LogBatch, *, applied: bool, points: int) -> schemas.LogResult:
    return schemas.LogResult(
        run_id=run.id,
        seq=batch.seq,
        applied=applied,
        points=points,
        status=run.status,
    )


def log_batch(ctx: Context, project: str, ref: str, batch: LogBatch) -> schemas.LogResult:
    """Apply one batch of a run's log atomically; an empty batch is a heartbeat."""
    pctx = ctx.in_project(project)
    pctx.require("run:write", resource=f"project/{project}/run/{ref}")
    run = _run(pctx, ref)
    if batch.points > batches.MAX_POINTS:
        raise InvalidInput(
            f"a batch holds at most {batches.MAX_POINTS:,} points; got {batch.points:,}",
            field="metrics",
        )
    session = pctx.session
    applied = batch.seq is None or _claim_batch(session, run.id, batch.seq)
    # A batch applied before, or a late heartbeat of an ended run, changes nothing.
    if not applied or (batch.empty and run.status in ENDED):
        pctx.commit()
        return _log_result(run, batch, applied=applied, points=0)
    _check_open(run, project)
    _apply_params(session, run, batch.params)
    _upsert_tags(session, run.id, _checked_strings(batch.tags, kind="tag"))
    if batch.points:
        _checked_metrics(batch.metrics)
        _insert_points(session, batch.metrics, _update_latest(session, run.id, batch.metrics))
    run.heartbeat_at = utcnow()
    logged = None
    if batch.params or batch.tags or batch.points:
        logged = {
            "seq": batch.seq,
            "points": batch.points,
            "params": len(batch.params),
            "tags": len(batch.tags),
        }
    if batch.status is not None:
        _end(pctx, run, batch.status, batch.end_time, logged=logged)
    elif logged is not None:
        pctx.audit("run:log", _resource(project, run), detail=logged)
    pctx.commit()
    POINTS_LOGGED.inc(batch.points)
    return _log_result(run, batch, applied=True, points=batch.points)


def metric_history(
    ctx: Context, project: str, ref: str, *, keys: list[str] | None = None
) -> schemas.MetricHistory:
    """Every point of the run's metrics (or of ``keys``), by key, step and time."""
    pctx = ctx.in_project(project)
    pctx.require("run:read", resource=f"project/{project}/run/{ref}")
    run = _run(pctx, ref)
    statement = (
        select(LatestMetric.key, Metric.step, Metric.value, Metric.timestamp)
        .join(LatestMetric, LatestMetric.id == Metric.series_id)
        .where(LatestMetric.run_id == run.id)
    )
    if keys:
        for key in keys:
            validate_key(key, kind="metric")
        statement = statement.where(among(pctx.session, LatestMetric.key, keys))
    rows = pctx.session.execute(
        statement.order_by(LatestMetric.key, Metric.step, Metric.timestamp, Metric.id)
    ).all()
    return schemas.MetricHistory(
        run_id=run.id,
        key=[r[0] for r in rows],
        step=[r[1] for r in rows],
        value=[float("nan") if r[2] is None else r[2] for r in rows],
        timestamp=[r[3] for r in rows],
    )


# --- search ----------------------------------------------------------------------------


def search_runs(
    ctx: Context, project: str, request: schemas.SearchRequest
) -> tuple[list[schemas.RunOut], str | None]:
    """Runs matching ``request.filter``, in ``request.order_by`` order, one page."""
    pctx = ctx.in_project(project)
    pctx.require("run:read", resource=f"project/{project}/runs")
    assert pctx.project is not None
    node = filters.parse_filter(request.filter)
    order = [filters.parse_order_by(entry) for entry in request.order_by]
    experiment_ids: list[str] | None = None
    if request.experiments:
        experiment_ids = [_experiment(pctx, name).id for name in request.experiments]
    offset = 0
    if request.cursor:
        offset = decode_cursor(request.cursor)
        if not isinstance(offset, int) or offset < 0:
            raise InvalidInput("cursor is not one this server issued", field="cursor")
    limit = check_page_size(request.page_size)
    rows = pctx.session.execute(
        query.search_statement(
            project_id=pctx.project.id,
            experiment_ids=experiment_ids,
            node=node,
            order=order,
            include_deleted=request.include_deleted,
            offset=offset,
            limit=limit + 1,
        )
    ).all()
    more = len(rows) > limit
    rows = rows[:limit]
    details = _details(pctx, [run.id for run, _ in rows])
    items = [_run_out(run, project, name, details[run.id]) for run, name in rows]
    return items, encode_cursor(offset + len(rows)) if more else None


# --- artifacts and inputs --------------------------------------------------------------


def add_artifact(
    ctx: Context, project: str, ref: str, request: schemas.ArtifactAdd
) -> schemas.RunArtifactOut:
    """Name content the project already stores (uploaded by hash) as the run's ``path``."""
    pctx = ctx.in_project(project)
    pctx.require("run:write", resource=f"project/{project}/run/{ref}")
    assert pctx.project is not None
    run = _run(pctx, ref)
    if run.deleted_at is not None:
        raise Conflict(f"run {run.id} is deleted; restore it first", field="run")
    path = normalise_path(request.path)
    blob = storage.held_blob(pctx, request.sha256, size=request.size)
    existing = pctx.session.get(RunArtifact, (run.id, path))
    if existing is not None:
        if existing.sha256 != request.sha256:
            raise Conflict(
                f"run {run.id} already has a different artifact at {path!r}", field="path"
            )
        return _artifact_out(existing)
    artifact = RunArtifact(
        run_id=run.id, path=path, size=blob.size, sha256=blob.sha256, blob_id=blob.id
    )
    pctx.session.add(artifact)
    pctx.audit(
        "run:artifact",
        _resource(project, run),
        detail={"path": path, "sha256": blob.sha256, "size": blob.size},
    )
    pctx.commit()
    return _artifact_out(artifact)


def _artifact_out(artifact: RunArtifact) -> schemas.RunArtifactOut:
    return schemas.RunArtifactOut(
        path=artifact.path,
        size=artifact.size,
        sha256=artifact.sha256,
        created_at=as_utc(artifact.created_at),
    )


def list_artifacts(
    ctx: Context, project: str, ref: str, *, limit: int, cursor: str | None
) -> tuple[list[schemas.RunArtifactOut], str | None]:
    """The run's artifacts by path, one page."""
    pctx = ctx.in_project(project)
    pctx.require("run:read", resource=f"project/{project}/run/{ref}")
    run = _run(pctx, ref)
    rows, next_cursor = paginate(
        pctx.session,
        select(RunArtifact).where(RunArtifact.run_id == run.id),
        key=RunArtifact.path,
        limit=limit,
        cursor=cursor,
    )
    return [_artifact_out(a) for a in rows], next_cursor


def add_input(ctx: Context, project: str, ref: str, request: schemas.InputAdd) -> schemas.RunOut:
    """Lineage: the run read this dataset version."""
    pctx = ctx.in_project(project)
    pctx.require("run:write", resource=f"project/{project}/run/{ref}")
    run = _run(pctx, ref)
    version = datasets.record_consumer(
        pctx, request.dataset, str(request.version), kind="run", consumer_id=run.id
    )
    pctx.audit(
        "run:input",
        _resource(project, run),
        detail={"dataset": request.dataset, "version": version},
    )
    pctx.commit()
    return _one_out(pctx, run)


# --- heartbeats ------------------------------------------------------------------------


def fail_stale_runs(ctx: Context, *, timeout_s: float) -> list[str]:
    """Mark failed every running run that has not been heard from in ``timeout_s``.

    Runs as ghaf itself (a system context, which holds ``platform:admin``) across every
    project; each run it ends is audited.
    """
    ctx.require("platform:admin", resource="runs")
    cutoff = utcnow() - timedelta(seconds=timeout_s)
    session = ctx.session
    stale = session.execute(
        select(Run.id, Project.name, Project.id)
        .join(Project, Project.id == Run.project_id)
        .where(Run.status == RUNNING, Run.heartbeat_at < cutoff)
    ).all()
    reason = f"{HEARTBEAT_LOST}: no contact for {timeout_s:g} s"
    ended = []
    for run_id, project, project_id in stale:
        result = session.execute(
            update(Run)
            .where(Run.id == run_id, Run.status == RUNNING, Run.heartbeat_at < cutoff)
            .values(
                status=FAILED, status_reason=reason, end_time=func.coalesce(Run.end_time, utcnow())
            )
        )
        if result.rowcount:  # type: ignore[attr-defined]
            ctx.audit(
                "run:expire",
                f"project/{project}/run/{run_id}",
                detail={"reason": reason},
                project=project_id,
            )
            ended.append(run_id)
    ctx.commit()
    return ended
