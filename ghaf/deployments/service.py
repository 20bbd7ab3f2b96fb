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
from typing import Any

from pydantic import ValidationError
from sqlalchemy import select

from ghaf.core.clock import as_utc, utcnow
from ghaf.core.database import insert_unique
from ghaf.core.errors import Conflict, NotFound, StoredObjectCorrupt
from ghaf.core.names import validate_name
from ghaf.core.paging import paginate
from ghaf.deployments import schemas
from ghaf.deployments.models import Deployment, DeploymentRevision
from ghaf.registry import service as registry
from ghaf.security.context import Context

MAX_REASON = 500


def _resource(project: str, name: str) -> str:
    return f"project/{project}/deployment/{name}"


def _deployment(pctx: Context, name: str) -> Deployment:
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


def _resolve(pctx: Context, project: str, spec: schemas.DeploymentSpec) -> Resolved:
    """Each variant's served version, checked by the registry; refusals name the variant."""
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


def _add_revision(
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
    return row


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


def _served(resolved: Resolved) -> list[str]:
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
    resolved = _resolve(pctx, project, spec)
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
    row = _add_revision(pctx, deployment, spec, resolved, request.reason or "created")
    pctx.audit(
        "deployment:create",
        _resource(project, request.name),
        detail={"revision": 1, "serves": _served(resolved), "production": spec.production},
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
    deployment = _deployment(pctx, name)
    return _out(project, deployment, _current(pctx, deployment))


def update_deployment(
    ctx: Context, project: str, name: str, request: schemas.DeploymentUpdate
) -> schemas.DeploymentOut:
    """A new revision from the current one with ``request``'s changes. Variants are
    resolved again, so a variant naming an alias or ``latest`` picks up where it points."""
    pctx = ctx.in_project(project)
    pctx.require("deployment:write", resource=_resource(project, name))
    deployment = _deployment(pctx, name)
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
    spec = schemas.DeploymentSpec.model_validate(current.model_dump() | changes)
    if request.description is not None:
        deployment.description = request.description
    resolved = _resolve(pctx, project, spec)
    row = _add_revision(pctx, deployment, spec, resolved, request.reason or "updated")
    pctx.audit(
        "deployment:update",
        _resource(project, name),
        detail={
            "revision": row.revision,
            "serves": _served(resolved),
            "production": spec.production,
        },
    )
    pctx.commit()
    return _out(project, deployment, row)


def delete_deployment(ctx: Context, project: str, name: str) -> None:
    """Remove a deployment and its revisions (the audit trail keeps its history)."""
    pctx = ctx.in_project(project)
    pctx.require("deployment:write", resource=_resource(project, name))
    deployment = _deployment(pctx, name)
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
    deployment = _deployment(pctx, name)
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
    return _revision_out(_revision(pctx, _deployment(pctx, name), revision))


def rollback(
    ctx: Context, project: str, name: str, request: schemas.Rollback
) -> schemas.DeploymentOut:
    """A new revision with an earlier one's spec and the very versions it served, each
    checked again (one rejected or archived since is refused, naming it)."""
    pctx = ctx.in_project(project)
    pctx.require("deployment:write", resource=_resource(project, name))
    deployment = _deployment(pctx, name)
    earlier = _revision(pctx, deployment, request.revision)
    spec, held = _stored(earlier)
    resolved = _recheck(pctx, project, spec, held)
    reason = request.reason or f"rolled back to revision {earlier.revision}"
    row = _add_revision(pctx, deployment, spec, resolved, reason)
    pctx.audit(
        "deployment:rollback",
        _resource(project, name),
        detail={"revision": row.revision, "to": earlier.revision, "serves": _served(resolved)},
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
        row = _add_revision(
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
