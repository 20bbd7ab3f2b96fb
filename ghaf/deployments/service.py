"""Deployments: create, change, list, roll back and remove, each change a numbered,
audited revision holding the whole spec and the model version each variant serves.

Every variant's version is checked with the registry (``deployable_version``): never a
rejected or archived version, and in a production deployment only an approved one whose
gates pass. A variant that names an alias follows it: when the alias moves, the
registry's event rolls the deployment to a new revision in the same transaction (or the
move is refused, where the deployment could not take the new version).
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

from pydantic import ValidationError
from sqlalchemy import func, select

from ghaf.core.clock import as_utc, utcnow
from ghaf.core.database import insert_new, insert_unique
from ghaf.core.errors import Conflict, InvalidInput, NotFound, StoredObjectCorrupt
from ghaf.core.names import validate_name
from ghaf.core.paging import paginate
from ghaf.deployments import abtest, schemas
from ghaf.deployments.hosts.base import ReplicaSpec
from ghaf.deployments.hosts.embedded import refuse_missing_gpu
from ghaf.deployments.hosts.ray import refuse_without_ray
from ghaf.deployments.models import (
    AbTestState,
    Deployment,
    DeploymentRevision,
    RequestAssignment,
    RequestOutcome,
    RolloutState,
    VariantTraffic,
)
from ghaf.deployments.split import Splitter
from ghaf.deployments.traffic import Where
from ghaf.registry import service as registry
from ghaf.security.context import Context
from ghaf.security.standing import require_authenticated
from ghaf.security.tenancy import Project

MAX_REASON = 500


def _resource(project: str, name: str) -> str:
    return f"project/{project}/deployment/{name}"


def find_deployment(pctx: Context, name: str) -> Deployment:
    assert pctx.project is not None
    validate_name(name, field="deployment")
    found = pctx.session.scalar(
        select(Deployment).where(Deployment.project_id == pctx.project.id, Deployment.name == name)
    )
    if found is None:
        raise NotFound(
            f"project {pctx.project.name!r} has no deployment {name!r}", field="deployment"
        )
    return found


def _revision(pctx: Context, deployment: Deployment, number: int) -> DeploymentRevision:
    found = pctx.session.scalar(
        select(DeploymentRevision).where(
            DeploymentRevision.deployment_id == deployment.id,
            DeploymentRevision.revision == number,
        )
    )
    if found is None:
        raise NotFound(
            f"deployment {deployment.name!r} has no revision {number} (it has 1 to "
            f"{deployment.revision})",
            field="revision",
        )
    return found


Resolved = dict[str, schemas.ResolvedVariant]
"""What each variant serves in a revision, by variant name."""


def resolve_variants(pctx: Context, project: str, spec: schemas.DeploymentSpec) -> Resolved:
    """Each variant's served version, checked by the registry; refusals name the variant.
    On the embedded host a variant needing a GPU this machine lacks is refused too."""
    if spec.host == "embedded":
        refuse_missing_gpu(spec.variants)
    else:
        refuse_without_ray()
    resolved: Resolved = {}
    for i, variant in enumerate(spec.variants):
        found = registry.deployable_version(
            pctx,
            project,
            variant.model,
            variant.version,
            production=spec.production,
            field=f"variants[{i}].version",
        )
        resolved[variant.name] = schemas.ResolvedVariant(
            model=found.model, version=found.version, sha256=found.sha256, follows=found.alias
        )
    return resolved


def _recheck(
    pctx: Context, project: str, spec: schemas.DeploymentSpec, resolved: Resolved
) -> Resolved:
    """``resolved`` again, each version by its number, still deployable under ``spec``
    (a version rejected or archived since, or no longer releasable, is refused)."""
    checked: Resolved = {}
    for i, variant in enumerate(spec.variants):
        held = resolved[variant.name]
        found = registry.deployable_version(
            pctx,
            project,
            held.model,
            held.version,
            production=spec.production,
            field=f"variants[{i}].version",
        )
        checked[variant.name] = held.model_copy(update={"sha256": found.sha256})
    return checked


def _stored(row: DeploymentRevision) -> tuple[schemas.DeploymentSpec, Resolved]:
    """A revision's spec and resolved versions, checked: a row that was damaged or
    rewritten in the database is reported as such, never acted on."""
    try:
        spec = schemas.DeploymentSpec.model_validate(row.spec)
        resolved = {k: schemas.ResolvedVariant.model_validate(v) for k, v in row.resolved.items()}
    except (ValidationError, AttributeError) as error:
        raise StoredObjectCorrupt(
            f"revision {row.revision} of a deployment is damaged in the metadata database "
            f"({type(error).__name__}); restore it from a backup or roll back to another"
        ) from None
    if sorted(resolved) != sorted(v.name for v in spec.variants):
        raise StoredObjectCorrupt(
            f"revision {row.revision} of a deployment is damaged in the metadata database: "
            f"it names versions for variants {sorted(resolved)} but its spec has "
            f"{sorted(v.name for v in spec.variants)}; restore it from a backup or roll back"
        )
    return spec, resolved


def _current(pctx: Context, deployment: Deployment) -> DeploymentRevision:
    try:
        return _revision(pctx, deployment, deployment.revision)
    except NotFound:
        raise StoredObjectCorrupt(
            f"deployment {deployment.name!r} is at revision {deployment.revision}, which is "
            "missing from the metadata database; roll back to a revision that exists"
        ) from None


def stored_spec(pctx: Context, deployment: Deployment) -> tuple[schemas.DeploymentSpec, Resolved]:
    """The deployment's current spec and what each variant serves, checked."""
    return _stored(_current(pctx, deployment))


def refuse_while_rolling_out(pctx: Context, deployment: Deployment, what: str) -> None:
    """``Conflict`` while a canary rollout runs: a change by hand would fight it over the
    weights (ghaf/deployments/rollouts.py)."""
    state = pctx.session.get(RolloutState, deployment.id)
    if state is not None and state.state == "running":
        raise Conflict(
            f"deployment {deployment.name!r} is rolling out {state.canary!r}: wait for it to "
            f"finish or abort it (ghaf deploy rollout abort) to {what}",
            field="rollout",
        )


def add_revision(
    pctx: Context,
    deployment: Deployment,
    spec: schemas.DeploymentSpec,
    resolved: Resolved,
    reason: str,
) -> DeploymentRevision:
    now = utcnow()
    number = deployment.revision + 1 if deployment.revision else 1
    row = DeploymentRevision(
        deployment_id=deployment.id,
        revision=number,
        spec=spec.model_dump(mode="json"),
        resolved={k: v.model_dump() for k, v in resolved.items()},
        reason=reason[:MAX_REASON],
        created_at=now,
        created_by=pctx.actor,
    )
    # Two concurrent changes to one deployment both read revision N; the unique
    # (deployment, revision) key lets one commit and answers the other 409.
    insert_unique(
        pctx.session,
        row,
        field="deployment",
        conflict=f"deployment {deployment.name!r} changed meanwhile; read it again and retry",
    )
    deployment.revision = number
    deployment.production = spec.production
    deployment.updated_at = now
    deployment.updated_by = pctx.actor
    _keep_abtest(pctx, deployment, spec)
    return row


def _keep_abtest(pctx: Context, deployment: Deployment, spec: schemas.DeploymentSpec) -> None:
    """Start, keep or end the deployment's A/B test with its spec: a changed test
    (kind, control, alpha) starts afresh, counting only outcomes from then on."""
    state = pctx.session.get(AbTestState, deployment.id)
    config = spec.abtest.model_dump() if spec.abtest is not None else None
    if state is not None and state.config == config:
        return
    if state is not None:
        pctx.session.delete(state)
        pctx.session.flush()
    if config is not None:
        pctx.session.add(
            AbTestState(
                deployment_id=deployment.id,
                config=config,
                sequential={},
                unknown=0,
                duplicate=0,
                started_at=utcnow(),
            )
        )


def _out(project: str, deployment: Deployment, row: DeploymentRevision) -> schemas.DeploymentOut:
    _, resolved = _stored(row)
    return schemas.DeploymentOut(
        name=deployment.name,
        project=project,
        description=deployment.description,
        production=deployment.production,
        revision=deployment.revision,
        spec=row.spec,
        resolved=resolved,
        created_at=as_utc(deployment.created_at),
        created_by=deployment.created_by,
        updated_at=as_utc(deployment.updated_at),
        updated_by=deployment.updated_by,
    )


def _revision_out(row: DeploymentRevision) -> schemas.RevisionOut:
    _, resolved = _stored(row)
    return schemas.RevisionOut(
        revision=row.revision,
        spec=row.spec,
        resolved=resolved,
        reason=row.reason,
        created_at=as_utc(row.created_at),
        created_by=row.created_by,
    )


def served(resolved: Resolved) -> list[str]:
    """For the audit row (flat values only): which version each variant serves."""
    return [f"{name}={v.model}:{v.version}" for name, v in resolved.items()]


# --- user actions ----------------------------------------------------------------------


def create_deployment(
    ctx: Context, project: str, request: schemas.DeploymentCreate
) -> schemas.DeploymentOut:
    """A new deployment at revision 1. Needs deployment:write (and model:read)."""
    pctx = ctx.in_project(project)
    assert pctx.project is not None
    pctx.require("deployment:write", resource=_resource(project, request.name))
    spec = schemas.DeploymentSpec.model_validate(
        request.model_dump(exclude={"name", "description", "reason"})
    )
    resolved = resolve_variants(pctx, project, spec)
    now = utcnow()
    deployment = Deployment(
        project_id=pctx.project.id,
        name=request.name,
        description=request.description,
        production=spec.production,
        revision=0,
        created_at=now,
        created_by=pctx.actor,
        updated_at=now,
        updated_by=pctx.actor,
    )
    insert_unique(
        pctx.session,
        deployment,
        field="name",
        conflict=f"deployment {request.name!r} already exists in project {project!r}",
    )
    row = add_revision(pctx, deployment, spec, resolved, request.reason or "created")
    pctx.audit(
        "deployment:create",
        _resource(project, request.name),
        detail={"revision": 1, "serves": served(resolved), "production": spec.production},
    )
    pctx.commit()
    return _out(project, deployment, row)


def list_deployments(
    ctx: Context, project: str, *, limit: int, cursor: str | None
) -> tuple[list[schemas.DeploymentOut], str | None]:
    pctx = ctx.in_project(project)
    assert pctx.project is not None
    pctx.require("deployment:read", resource=f"project/{project}/deployments")
    rows, next_cursor = paginate(
        pctx.session,
        select(Deployment).where(Deployment.project_id == pctx.project.id),
        key=Deployment.name,
        limit=limit,
        cursor=cursor,
    )
    return [_out(project, d, _current(pctx, d)) for d in rows], next_cursor


def get_deployment(ctx: Context, project: str, name: str) -> schemas.DeploymentOut:
    pctx = ctx.in_project(project)
    pctx.require("deployment:read", resource=_resource(project, name))
    deployment = find_deployment(pctx, name)
    return _out(project, deployment, _current(pctx, deployment))


def update_deployment(
    ctx: Context, project: str, name: str, request: schemas.DeploymentUpdate
) -> schemas.DeploymentOut:
    """A new revision from the current one with ``request``'s changes. Variants are
    resolved again, so a variant naming an alias or ``latest`` picks up where it points."""
    pctx = ctx.in_project(project)
    pctx.require("deployment:write", resource=_resource(project, name))
    deployment = find_deployment(pctx, name)
    refuse_while_rolling_out(pctx, deployment, "change it")
    current, _ = _stored(_current(pctx, deployment))
    # What the request leaves out (None) stays as it is.
    changes = {
        key: value
        for key, value in request.model_dump(
            include={"variants", "production", "sticky", "host"}
        ).items()
        if value is not None
    }
    if request.clear_sticky:
        changes["sticky"] = None
    if request.abtest is not None:
        changes["abtest"] = request.abtest.model_dump()
    if request.clear_abtest:
        changes["abtest"] = None
    try:
        spec = schemas.DeploymentSpec.model_validate(current.model_dump() | changes)
    except ValidationError as error:  # the change is valid alone, not with the rest
        first = error.errors()[0]
        where = ".".join(str(p) for p in first["loc"]) or "body"
        message = str(first["msg"]).removeprefix("Value error, ")
        raise InvalidInput(f"{where}: {message}", field=where) from None
    if request.description is not None:
        deployment.description = request.description
    resolved = resolve_variants(pctx, project, spec)
    row = add_revision(pctx, deployment, spec, resolved, request.reason or "updated")
    pctx.audit(
        "deployment:update",
        _resource(project, name),
        detail={
            "revision": row.revision,
            "serves": served(resolved),
            "production": spec.production,
        },
    )
    pctx.commit()
    return _out(project, deployment, row)


def delete_deployment(ctx: Context, project: str, name: str) -> None:
    """Remove a deployment and its revisions (the audit trail keeps its history)."""
    pctx = ctx.in_project(project)
    pctx.require("deployment:write", resource=_resource(project, name))
    deployment = find_deployment(pctx, name)
    revision = deployment.revision
    pctx.session.delete(deployment)
    pctx.audit("deployment:delete", _resource(project, name), detail={"revision": revision})
    pctx.commit()


def list_revisions(
    ctx: Context, project: str, name: str, *, limit: int, cursor: str | None
) -> tuple[list[schemas.RevisionOut], str | None]:
    """The deployment's history, newest first."""
    pctx = ctx.in_project(project)
    pctx.require("deployment:read", resource=_resource(project, name))
    deployment = find_deployment(pctx, name)
    rows, next_cursor = paginate(
        pctx.session,
        select(DeploymentRevision).where(DeploymentRevision.deployment_id == deployment.id),
        key=DeploymentRevision.revision,
        limit=limit,
        cursor=cursor,
        descending=True,
    )
    return [_revision_out(r) for r in rows], next_cursor


def get_revision(ctx: Context, project: str, name: str, revision: int) -> schemas.RevisionOut:
    pctx = ctx.in_project(project)
    pctx.require("deployment:read", resource=_resource(project, name))
    return _revision_out(_revision(pctx, find_deployment(pctx, name), revision))


def rollback(
    ctx: Context, project: str, name: str, request: schemas.Rollback
) -> schemas.DeploymentOut:
    """A new revision with an earlier one's spec and the very versions it served, each
    checked again (one rejected or archived since is refused, naming it)."""
    pctx = ctx.in_project(project)
    pctx.require("deployment:write", resource=_resource(project, name))
    deployment = find_deployment(pctx, name)
    refuse_while_rolling_out(pctx, deployment, "roll it back")
    earlier = _revision(pctx, deployment, request.revision)
    spec, held = _stored(earlier)
    resolved = _recheck(pctx, project, spec, held)
    reason = request.reason or f"rolled back to revision {earlier.revision}"
    row = add_revision(pctx, deployment, spec, resolved, reason)
    pctx.audit(
        "deployment:rollback",
        _resource(project, name),
        detail={"revision": row.revision, "to": earlier.revision, "serves": served(resolved)},
    )
    pctx.commit()
    return _out(project, deployment, row)


# --- events ----------------------------------------------------------------------------


def follow_alias(pctx: Context, data: Mapping[str, Any]) -> None:
    """The registry moved an alias (ghaf/platform/events.py): every deployment of the
    project with a variant following it rolls to a new revision serving the new version,
    in the alias move's transaction. A production deployment that cannot take the
    version refuses the move (``Conflict`` naming the deployment)."""
    assert pctx.project is not None
    project, model, alias = data["project"], data["model"], data["alias"]
    deployments = pctx.session.scalars(
        select(Deployment).where(Deployment.project_id == pctx.project.id).order_by(Deployment.name)
    ).all()
    for deployment in deployments:
        spec, held = _stored(_current(pctx, deployment))
        following = [n for n, v in held.items() if v.model == model and v.follows == alias]
        if all(held[n].version == data["version"] for n in following):
            continue  # none follows it, or the move changes nothing here
        resolved = dict(held)
        for name in following:
            try:
                found = registry.deployable_version(
                    pctx,
                    project,
                    model,
                    int(data["version"]),
                    production=spec.production,
                    field="alias",
                )
            except Conflict as refused:
                raise Conflict(
                    f"deployment {deployment.name!r} follows {model}@{alias} and cannot take "
                    f"the move: {refused.detail}",
                    field="alias",
                ) from None
            resolved[name] = held[name].model_copy(
                update={"version": found.version, "sha256": found.sha256}
            )
        previous = [f"{n}={model}:{held[n].version}" for n in following]
        row = add_revision(
            pctx,
            deployment,
            spec,
            resolved,
            f"alias {model}@{alias} moved to version {data['version']}",
        )
        pctx.audit(
            "deployment:roll",
            _resource(project, deployment.name),
            detail={
                "revision": row.revision,
                "alias": f"{model}@{alias}",
                "from": previous,
                "to": data["version"],
            },
        )


def refuse_retiring_served(pctx: Context, data: Mapping[str, Any]) -> None:
    """The registry is about to reject or archive a version, or delete a model: refused
    while a deployment of the project serves it, naming the deployment and variant."""
    assert pctx.project is not None
    model, version = data["model"], data["version"]
    deployments = pctx.session.scalars(
        select(Deployment).where(Deployment.project_id == pctx.project.id).order_by(Deployment.name)
    ).all()
    for deployment in deployments:
        _, resolved = _stored(_current(pctx, deployment))
        for variant, held in resolved.items():
            if held.model == model and version in (None, held.version):
                what = f"version {held.version} of {model!r}" if version else f"{model!r}"
                raise Conflict(
                    f"deployment {deployment.name!r} serves {what} (variant {variant!r}), so "
                    f"it cannot be {data['action']}; change or remove the deployment first",
                    field=data["field"],
                )


# --- A/B tests: assignments, outcomes, the report and promotion -------------------------

_CHUNK = 500  # request ids per IN (...) lookup, well under every database's bind limit


def record_assignments(ctx: Context, project: str, name: str, request: schemas.Assignments) -> int:
    """Record which variant answered each request (the gateway's part), so outcomes
    posted later are credited to it. Known request ids are kept as first recorded.
    Needs deployment:invoke. Returns how many were new."""
    pctx = ctx.in_project(project)
    pctx.require("deployment:invoke", resource=_resource(project, name))
    deployment = find_deployment(pctx, name)
    spec, _ = _stored(_revision(pctx, deployment, request.revision))
    shadows = {v.name for v in spec.variants if v.shadow}
    known = {v.name for v in spec.variants}
    for i, item in enumerate(request.items):
        if item.variant not in known:
            raise InvalidInput(
                f"revision {request.revision} of {name!r} has no variant {item.variant!r}",
                field=f"items[{i}].variant",
            )
    now = utcnow()
    rows = {
        item.request_id: {
            "deployment_id": deployment.id,
            "request_id": item.request_id,
            "variant": item.variant,
            "revision": request.revision,
            "shadow": item.variant in shadows,
            "at": now,
        }
        for item in request.items
    }
    before = _count(pctx, RequestAssignment, deployment.id, list(rows))
    insert_new(pctx.session, RequestAssignment, list(rows.values()))
    pctx.commit()
    return len(rows) - before


def record_traffic(
    ctx: Context,
    project: str,
    deployment_id: str,
    *,
    variant: str,
    revision: int,
    shadow: bool,
    tally: dict[str, Any],
) -> bool:
    """Store one tally of a variant's answers (the gateway's part; ``tally`` is
    ``Tally.to_row()``). False when the deployment is gone (or was re-created since:
    its id is what counts). Needs deployment:invoke."""
    pctx = ctx.in_project(project)
    assert pctx.project is not None
    deployment = pctx.session.get(Deployment, deployment_id)
    if deployment is None or deployment.project_id != pctx.project.id:
        return False
    pctx.require("deployment:invoke", resource=_resource(project, deployment.name))
    pctx.session.add(
        VariantTraffic(
            deployment_id=deployment_id,
            variant=variant[:64],
            revision=revision,
            shadow=shadow,
            at=utcnow(),
            **tally,
        )
    )
    pctx.commit()
    return True


def _count(pctx: Context, table: type[Any], deployment_id: str, request_ids: list[str]) -> int:
    found = 0
    for start in range(0, len(request_ids), _CHUNK):
        found += len(
            pctx.session.scalars(
                select(table.request_id).where(
                    table.deployment_id == deployment_id,
                    table.request_id.in_(request_ids[start : start + _CHUNK]),
                )
            ).all()
        )
    return found


def _state(pctx: Context, deployment: Deployment) -> AbTestState:
    state = pctx.session.get(AbTestState, deployment.id)
    if state is None:
        raise Conflict(
            f"deployment {deployment.name!r} runs no A/B test; give its spec an abtest "
            "(kind and control) first",
            field="abtest",
        )
    return state


def _config(state: AbTestState) -> schemas.AbTest:
    try:
        return schemas.AbTest.model_validate(state.config)
    except ValidationError:
        raise StoredObjectCorrupt(
            "a deployment's A/B test settings are damaged in the metadata database; set "
            "its abtest again (ghaf deploy update --spec)"
        ) from None


def post_outcomes(
    ctx: Context, project: str, name: str, request: schemas.Outcomes
) -> schemas.OutcomesResult:
    """Credit each outcome to the variant that answered its request. Outcomes for
    request ids no variant answered, or that already have one, are counted and reported
    (never an error storm); binary tests take only 0 and 1. Needs deployment:invoke."""
    return _post(ctx, project, name, request.items)


def _post(
    ctx: Context, project: str, name: str, items: list[schemas.Outcome]
) -> schemas.OutcomesResult:
    pctx = ctx.in_project(project)
    pctx.require("deployment:invoke", resource=_resource(project, name))
    deployment = find_deployment(pctx, name)
    state = _state(pctx, deployment)
    if _config(state).kind == "binary":
        for i, item in enumerate(items):
            if item.value not in (0.0, 1.0):
                raise InvalidInput(
                    f"the A/B test of {name!r} counts conversions: an outcome is 0 or 1, "
                    f"not {item.value:g}",
                    field=f"items[{i}].value",
                )
    counts = {"recorded": 0, "unknown": 0, "duplicate": 0, "shadow": 0}
    for start in range(0, len(items), schemas.MAX_OUTCOMES):
        part = _credit(pctx, deployment, state, items[start : start + schemas.MAX_OUTCOMES])
        for key in counts:
            counts[key] += getattr(part, key)
    _look(pctx, deployment, state)
    result = schemas.OutcomesResult(**counts)
    pctx.audit("deployment:outcomes", _resource(project, name), detail=result.model_dump())
    pctx.commit()
    return result


MAX_UPLOAD_ROWS = 1_000_000
MAX_REQUEST_ID = 64


MAX_UPLOAD_DECODED = 256 << 20  # bytes the two columns may take once decompressed


def _parquet_outcomes(data: bytes) -> list[schemas.Outcome]:
    """The ``request_id`` and ``value`` columns of a Parquet file, checked as they are
    read: the rows the file holds (not what its footer says), every id's length before
    any id becomes a Python string, and what the pages decompress to."""
    import pyarrow as pa
    import pyarrow.compute as pc
    import pyarrow.parquet as pq

    def refuse(why: str) -> InvalidInput:
        return InvalidInput(why, field="body")

    try:
        parquet = pq.ParquetFile(pa.BufferReader(data), read_dictionary=["request_id"])
        names = parquet.schema_arrow.names
        groups = [parquet.metadata.row_group(g) for g in range(parquet.metadata.num_row_groups)]
    except (pa.ArrowException, OSError) as error:
        raise refuse(f"the body is not a Parquet file ({error})") from None
    for wanted in ("request_id", "value"):
        if wanted not in names:
            raise refuse(f"the file has no column {wanted} (it has {', '.join(names)})")
        if names.count(wanted) > 1:
            raise refuse(f"the file has {names.count(wanted)} columns named {wanted}")
    declared = max(parquet.metadata.num_rows, sum(g.num_rows for g in groups))
    decoded = sum(
        g.column(c).total_uncompressed_size
        for g in groups
        for c in range(g.num_columns)
        if g.column(c).path_in_schema in ("request_id", "value")
    )
    if declared > MAX_UPLOAD_ROWS or decoded > MAX_UPLOAD_DECODED:
        raise refuse(
            f"the file holds {declared:,} rows ({decoded:,} bytes decoded); send at most "
            f"{MAX_UPLOAD_ROWS:,} rows per upload"
        )
    items: list[schemas.Outcome] = []
    try:
        for batch in parquet.iter_batches(
            batch_size=schemas.MAX_OUTCOMES, columns=["request_id", "value"]
        ):
            if len(items) + batch.num_rows > MAX_UPLOAD_ROWS:
                raise refuse(f"the file holds more than {MAX_UPLOAD_ROWS:,} rows")
            ids = batch.column("request_id")
            words = ids.dictionary if pa.types.is_dictionary(ids.type) else ids
            words = words.cast(pa.string())
            longest = pc.max(pc.binary_length(words)).as_py() if len(words) else 0
            if longest is not None and longest > MAX_REQUEST_ID:
                raise refuse(f"a request_id is {longest:,} bytes long; ids have at most 64")
            values = batch.column("value").cast(pa.float64()).to_pylist()
            for request_id, value in zip(ids.cast(pa.string()).to_pylist(), values, strict=True):
                try:
                    items.append(schemas.Outcome(request_id=request_id, value=value))
                except ValidationError as error:
                    message = error.errors()[0]["msg"]
                    raise refuse(f"row {len(items)}: {message}") from None
    except (pa.ArrowException, OSError) as error:
        raise refuse(f"the file cannot be read as outcomes ({error})") from None
    return items


def upload_outcomes(ctx: Context, project: str, name: str, data: bytes) -> schemas.OutcomesResult:
    """:func:`post_outcomes` for a Parquet file with ``request_id`` and ``value``
    columns (up to a million rows), credited in one transaction."""
    pctx = ctx.in_project(project)
    pctx.require("deployment:invoke", resource=_resource(project, name))
    _state(pctx, find_deployment(pctx, name))  # no test: refused before the file is read
    items = _parquet_outcomes(data)
    if not items:
        raise InvalidInput("the file has no rows", field="body")
    return _post(pctx, project, name, items)


def _credit(
    pctx: Context,
    deployment: Deployment,
    state: AbTestState,
    items: list[schemas.Outcome],
) -> schemas.OutcomesResult:
    values: dict[str, float] = {}
    duplicate = 0
    for item in items:
        if item.request_id in values:
            duplicate += 1  # twice in one batch: the first one counts
        else:
            values[item.request_id] = item.value
    ids = list(values)
    assigned: dict[str, RequestAssignment] = {}
    taken: set[str] = set()
    for start in range(0, len(ids), _CHUNK):
        chunk = ids[start : start + _CHUNK]
        assigned.update(
            (a.request_id, a)
            for a in pctx.session.scalars(
                select(RequestAssignment).where(
                    RequestAssignment.deployment_id == deployment.id,
                    RequestAssignment.request_id.in_(chunk),
                )
            )
        )
        taken.update(
            pctx.session.scalars(
                select(RequestOutcome.request_id).where(
                    RequestOutcome.deployment_id == deployment.id,
                    RequestOutcome.request_id.in_(chunk),
                )
            )
        )
    now = utcnow()
    rows, unknown, shadow = [], 0, 0
    started = as_utc(state.started_at)
    for request_id, value in values.items():
        found = assigned.get(request_id)
        if found is None or as_utc(found.at) < started:
            unknown += 1  # answered by no variant, or before this test started
        elif found.shadow:
            shadow += 1
        elif request_id in taken:
            duplicate += 1
        else:
            rows.append(
                {
                    "deployment_id": deployment.id,
                    "request_id": request_id,
                    "variant": found.variant,
                    "value": value,
                    "at": now,
                }
            )
    insert_new(pctx.session, RequestOutcome, rows)
    state.unknown += unknown
    state.duplicate += duplicate
    return schemas.OutcomesResult(
        recorded=len(rows), unknown=unknown, duplicate=duplicate, shadow=shadow
    )


def _summaries(
    pctx: Context, deployment: Deployment, state: AbTestState
) -> dict[str, abtest.Summary]:
    """Each variant's outcome aggregates since the test (as it is now) started."""
    rows = pctx.session.execute(
        select(
            RequestOutcome.variant,
            func.count(),
            func.coalesce(func.sum(RequestOutcome.value), 0.0),
            func.coalesce(func.sum(RequestOutcome.value * RequestOutcome.value), 0.0),
        )
        .where(
            RequestOutcome.deployment_id == deployment.id,
            RequestOutcome.at >= state.started_at,
        )
        .group_by(RequestOutcome.variant)
    ).all()
    return {
        variant: abtest.Summary(n=int(n), total=float(total), total_sq=float(total_sq))
        for variant, n, total, total_sq in rows
    }


@dataclass(frozen=True)
class _Look:
    config: schemas.AbTest
    summaries: dict[str, abtest.Summary]
    comparisons: list[abtest.Comparison]


def _compare(pctx: Context, deployment: Deployment, state: AbTestState) -> _Look:
    """Every live treatment against the control, on the outcomes so far."""
    spec, _ = _stored(_current(pctx, deployment))
    config = _config(state)
    summaries = _summaries(pctx, deployment, state)
    empty = abtest.Summary(n=0, total=0.0, total_sq=0.0)
    control = summaries.get(config.control, empty)
    comparisons = [
        abtest.compare(
            control,
            summaries.get(v.name, empty),
            kind=config.kind,
            alpha=config.alpha,
            previous_sequential_p=float(state.sequential.get(v.name, 1.0)),
            control_name=config.control,
            treatment_name=v.name,
        )
        for v in spec.variants
        if not v.shadow and v.name != config.control
    ]
    return _Look(config, summaries, comparisons)


def _look(pctx: Context, deployment: Deployment, state: AbTestState) -> None:
    """A look of the sequential test: keep each treatment's running-minimum p-value."""
    pctx.session.flush()
    state.sequential = {
        c.treatment_name: c.sequential_p_value
        if c.sequential_p_value is not None
        else float(state.sequential.get(c.treatment_name, 1.0))
        for c in _compare(pctx, deployment, state).comparisons
    }


def _interval(found: abtest.Interval | None) -> tuple[float, float] | None:
    return (found.low, found.high) if found is not None else None


def abtest_report(ctx: Context, project: str, name: str) -> schemas.AbTestReport:
    """Per variant: n, mean and interval; per treatment: lift against the control, the
    fixed-horizon p-value and the always-valid one; a winner only when significant under
    the sequential test. Needs deployment:read."""
    pctx = ctx.in_project(project)
    pctx.require("deployment:read", resource=_resource(project, name))
    deployment = find_deployment(pctx, name)
    state = _state(pctx, deployment)
    look = _compare(pctx, deployment, state)
    config, summaries, comparisons = look.config, look.summaries, look.comparisons
    control = summaries.get(config.control, abtest.Summary(n=0, total=0.0, total_sq=0.0))
    first = comparisons[0] if comparisons else None
    variants = [
        schemas.VariantResult(
            variant=config.control,
            n=control.n,
            mean=control.mean if control.n else None,
            interval=_interval(first.control_interval) if first else None,
            note="control",
        )
    ]
    for c in comparisons:
        significant = c.sequential_p_value is not None and c.sequential_p_value <= config.alpha
        variants.append(
            schemas.VariantResult(
                variant=c.treatment_name,
                n=c.treatment.n,
                mean=c.treatment_mean,
                interval=_interval(c.treatment_interval),
                lift=c.difference,
                relative_lift=c.relative_lift,
                lift_interval=_interval(c.difference_interval),
                p_value=c.p_value,
                sequential_p_value=c.sequential_p_value,
                significant=significant,
                note=c.reason,
            )
        )
    winner = abtest.decide(
        comparisons, alpha=config.alpha, higher_is_better=config.higher_is_better
    )
    return schemas.AbTestReport(
        deployment=name,
        revision=deployment.revision,
        kind=config.kind,
        control=config.control,
        alpha=config.alpha,
        variants=variants,
        winner=winner,
        unknown_outcomes=state.unknown,
        duplicate_outcomes=state.duplicate,
    )


def promote_winner(
    ctx: Context, project: str, name: str, request: schemas.Promote
) -> schemas.DeploymentOut:
    """Give the A/B test's winner 100% of live traffic, as a new revision checked like
    any other (a production deployment still takes only released versions); refused
    while no variant has won. Needs deployment:write."""
    pctx = ctx.in_project(project)
    pctx.require("deployment:write", resource=_resource(project, name))
    report = abtest_report(pctx, project, name)
    if report.winner is None:
        shown = ", ".join(
            f"{v.variant} p={v.sequential_p_value:.3g}"
            for v in report.variants
            if v.sequential_p_value is not None
        )
        raise Conflict(
            f"the A/B test of {name!r} has no winner yet (always-valid p-values: "
            f"{shown or 'too few outcomes'}; alpha {report.alpha:g})",
            field="abtest",
        )
    deployment = find_deployment(pctx, name)
    spec, _ = _stored(_current(pctx, deployment))
    variants = [
        v.model_copy(update={"weight": 100.0 if v.name == report.winner else 0.0})
        if not v.shadow
        else v
        for v in spec.variants
    ]
    update = schemas.DeploymentUpdate(
        variants=variants,
        reason=request.reason or f"promoted {report.winner}, the A/B test's winner",
    )
    return update_deployment(pctx, project, name, update)


# --- the gateway's route ----------------------------------------------------------------


@dataclass(frozen=True)
class Route:
    """How the gateway answers a deployment's requests at its current revision."""

    project: str
    deployment: str
    deployment_id: str
    revision: int
    spec: schemas.DeploymentSpec
    replicas: dict[str, ReplicaSpec]  # by variant
    splitter: Splitter
    may_debug: bool  # the caller may force a variant (deployment:debug)
    where: dict[str, Where]  # each variant's traffic series
    shadows: tuple[str, ...]  # the shadow variants, which get a copy of each request


def route(ctx: Context, project: str, name: str) -> Route:
    """The deployment's current revision as the gateway needs it. Needs
    deployment:invoke; the answer is cached for the revision."""
    pctx = ctx.in_project(project)
    pctx.require("deployment:invoke", resource=_resource(project, name))
    deployment = find_deployment(pctx, name)
    spec, resolved = _stored(_current(pctx, deployment))
    replicas = _replica_specs(project, deployment, spec, resolved)
    live = [(v.name, v.weight) for v in spec.variants if not v.shadow and v.weight > 0]
    return Route(
        project=project,
        deployment=name,
        deployment_id=deployment.id,
        revision=deployment.revision,
        spec=spec,
        replicas=replicas,
        splitter=Splitter(live),
        may_debug="deployment:debug" in pctx.permissions,
        where={
            v.name: Where(
                project=project,
                deployment=name,
                deployment_id=deployment.id,
                variant=v.name,
                shadow=v.shadow,
            )
            for v in spec.variants
        },
        shadows=tuple(v.name for v in spec.variants if v.shadow),
    )


def token_project(ctx: Context) -> str | None:
    """The project the caller's token is scoped to (a service account's), if any: the
    caller reads itself (any authenticated caller may)."""
    caller = require_authenticated(ctx, action="deployment:invoke", resource="token/project")
    if caller.token_project_id is None:
        return None
    return ctx.session.scalar(
        select(Project.name).where(
            Project.id == caller.token_project_id, Project.deleted_at.is_(None)
        )
    )


def served_specs(ctx: Context, deployment_ids: set[str]) -> dict[str, set[tuple[object, ...]]]:
    """For each of ``deployment_ids`` that still exists, the replica keys its current
    revision needs (a server stops the rest). Across projects: ghaf's own work, or a
    platform admin's."""
    ctx.require("platform:admin", resource="deployments")
    found: dict[str, set[tuple[object, ...]]] = {}
    rows = ctx.session.execute(
        select(Deployment, Project.name)
        .join(Project, Project.id == Deployment.project_id)
        .where(Deployment.id.in_(sorted(deployment_ids)))
    ).all()
    for deployment, project in rows:
        spec, resolved = _stored(_current(ctx, deployment))
        specs = _replica_specs(project, deployment, spec, resolved)
        found[deployment.id] = {r.key for r in specs.values()}
    return found


def _replica_specs(
    project: str, deployment: Deployment, spec: schemas.DeploymentSpec, resolved: Resolved
) -> dict[str, ReplicaSpec]:
    return {
        v.name: ReplicaSpec(
            project=project,
            deployment=deployment.id,
            variant=v.name,
            model=resolved[v.name].model,
            version=resolved[v.name].version,
            sha256=resolved[v.name].sha256,
            runtime=v.runtime,
            resources=v.resources,
            scaling=v.scaling,
            host=spec.host,
        )
        for v in spec.variants
    }
