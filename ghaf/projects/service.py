"""Projects, role grants and service accounts. All writes to these tables go through here."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import TypeVar

from sqlalchemy import delete, func, or_, select, update

from ghaf.core.clock import as_utc, utcnow
from ghaf.core.database import insert_unique
from ghaf.core.errors import Conflict, InvalidInput, NotFound
from ghaf.core.paging import DEFAULT_LIMIT, check_page_size, decode_cursor, encode_cursor, paginate
from ghaf.projects import schemas
from ghaf.security import schemas as security_schemas
from ghaf.security import service as security
from ghaf.security import standing
from ghaf.security.context import Context
from ghaf.security.models import SERVICE, Group, GroupMember, Principal, Token
from ghaf.security.permissions import OWNER, PLATFORM_ADMIN
from ghaf.security.tenancy import Project, ProjectMember
from ghaf.storage.residency import regions_in_use

GROUP_PREFIX = "group:"
T = TypeVar("T")


def project_out(project: Project, *, role: str | None) -> schemas.ProjectOut:
    return schemas.ProjectOut(
        id=project.id,
        name=project.name,
        description=project.description,
        allowed_regions=list(project.allowed_regions),
        role=role,
        created_at=as_utc(project.created_at),
        deleted_at=as_utc(project.deleted_at) if project.deleted_at else None,
        purge_after=as_utc(project.purge_after) if project.purge_after else None,
    )


# --- projects ----------------------------------------------------------------------


def create_project(
    ctx: Context, request: schemas.ProjectCreate, *, default_region: str
) -> schemas.ProjectOut:
    """Create a project; its creator becomes its owner."""
    ctx.require("project:create", resource=f"project/{request.name}")
    assert ctx.caller is not None
    regions = sorted(set(request.allowed_regions or [default_region]))
    project = Project(
        name=request.name,
        description=request.description,
        allowed_regions=regions,
        created_by=ctx.caller.principal_id,
    )
    insert_unique(
        ctx.session,
        project,
        field="name",
        conflict=f"a project named {request.name!r} already exists "
        "(names of deleted projects stay reserved until purged)",
    )
    ctx.session.add(
        ProjectMember(project_id=project.id, principal_id=ctx.caller.principal_id, role=OWNER)
    )
    ctx.audit(
        "project:create",
        f"project/{project.name}",
        project=project.id,
        detail={"allowed_regions": regions},
    )
    ctx.commit()
    return project_out(project, role=PLATFORM_ADMIN if ctx.is_platform_admin else OWNER)


def list_projects(
    ctx: Context, *, limit: int, cursor: str | None, deleted: bool = False
) -> tuple[list[schemas.ProjectOut], str | None]:
    """The projects the caller can see (all of them for a platform admin); any
    authenticated caller may list them, since each sees only its own."""
    caller = standing.require_authenticated(ctx, action="project:list", resource="projects")
    statement = select(Project).where(
        Project.deleted_at.is_not(None) if deleted else Project.deleted_at.is_(None)
    )
    if caller.token_project_id is not None:
        statement = statement.where(Project.id == caller.token_project_id)
    roles: dict[str, str] = {}
    if not caller.is_platform_admin:
        roles = ctx.project_roles()
        statement = statement.where(Project.id.in_(list(roles)))
        if deleted:  # only owners see what they can restore
            statement = statement.where(Project.id.in_([p for p, r in roles.items() if r == OWNER]))
    rows, next_cursor = paginate(
        ctx.session, statement, key=Project.name, limit=limit, cursor=cursor
    )
    return [
        project_out(p, role=PLATFORM_ADMIN if caller.is_platform_admin else roles.get(p.id))
        for p in rows
    ], next_cursor


def get_project(ctx: Context, name: str) -> schemas.ProjectOut:
    pctx = ctx.in_project(name)
    pctx.require("project:read", resource=f"project/{name}")
    assert pctx.project is not None
    return project_out(pctx.project, role=pctx.role)


def update_project(ctx: Context, name: str, request: schemas.ProjectUpdate) -> schemas.ProjectOut:
    """Change the description (maintainers) or the allowed regions (owners).

    Narrowing the regions is refused while data still lives outside the new set; the
    refusal says what lives where.
    """
    pctx = ctx.in_project(name)
    project = pctx.project
    assert project is not None
    changes: dict[str, object] = {}
    if request.description is None and request.allowed_regions is None:
        # An empty change is still a write: a viewer or a read-only token is refused.
        pctx.require("project:write", resource=f"project/{name}")
    if request.description is not None:
        pctx.require("project:write", resource=f"project/{name}")
        changes["description"] = request.description
    if request.allowed_regions is not None:
        pctx.require("policy:write", resource=f"project/{name}/allowed_regions")
        regions = sorted(set(request.allowed_regions))
        stranded = {
            region: usage
            for region, usage in regions_in_use(pctx.session, project.id).items()
            if region not in regions
        }
        if stranded:
            where = "; ".join(
                f"{region}: {n} object(s), {size} bytes"
                for region, (n, size) in sorted(stranded.items())
            )
            raise Conflict(
                f"project {name!r} still stores data outside {', '.join(regions)} "
                f"({where}); move or delete it before narrowing allowed_regions",
                field="allowed_regions",
            )
        changes["allowed_regions"] = regions
    for key, value in changes.items():
        setattr(project, key, value)
    if changes:
        pctx.audit("project:update", f"project/{name}", detail=changes)
        pctx.commit()
    return project_out(project, role=pctx.role)


def delete_project(ctx: Context, name: str, *, retention_days: float) -> schemas.ProjectOut:
    """Soft-delete: hidden at once, restorable until ``purge_after``, then purged."""
    pctx = ctx.in_project(name)
    pctx.require("project:delete", resource=f"project/{name}")
    project = pctx.project
    assert project is not None
    now = utcnow()
    project.deleted_at = now
    project.purge_after = now + timedelta(days=retention_days)
    pctx.audit(
        "project:delete", f"project/{name}", detail={"purge_after": project.purge_after.isoformat()}
    )
    pctx.commit()
    return project_out(project, role=pctx.role)


def restore_project(ctx: Context, name: str) -> schemas.ProjectOut:
    pctx = ctx.in_project(name, include_deleted=True)
    pctx.require("project:delete", resource=f"project/{name}")
    project = pctx.project
    assert project is not None
    if project.deleted_at is None:
        raise Conflict(f"project {name!r} is not deleted", field="project")
    project.deleted_at = None
    project.purge_after = None
    pctx.audit("project:restore", f"project/{name}")
    pctx.commit()
    return project_out(project, role=pctx.role)


@dataclass(frozen=True)
class Purged:
    """A project whose rows are gone; its stored bytes go next (ghaf/projects/flows.py)."""

    id: str
    name: str


def purge_projects(ctx: Context, *, now: datetime | None = None) -> list[Purged]:
    """Permanently remove the rows of deleted projects whose retention has passed.

    Their stored bytes stay until :func:`ghaf.projects.flows.purge`, which calls this,
    removes them.
    """
    ctx.require("platform:admin", resource="projects")
    cutoff = now or utcnow()
    due = ctx.session.scalars(
        select(Project).where(Project.deleted_at.is_not(None), Project.purge_after <= cutoff)
    ).all()
    purged = [Purged(p.id, p.name) for p in due]
    for project in due:
        ids = [project.id]
        service_accounts = select(Principal.id).where(Principal.project_id.in_(ids))
        ctx.session.execute(
            delete(Token).where(
                or_(Token.project_id.in_(ids), Token.principal_id.in_(service_accounts))
            )
        )
        ctx.session.execute(delete(ProjectMember).where(ProjectMember.project_id.in_(ids)))
        ctx.session.execute(
            delete(GroupMember).where(GroupMember.principal_id.in_(service_accounts))
        )
        ctx.session.execute(delete(Principal).where(Principal.project_id.in_(ids)))
        ctx.session.delete(project)
        ctx.audit(
            "project:purge",
            f"project/{project.name}",
            project=project.id,
            detail={"name": project.name},
        )
    ctx.commit()
    return purged


# --- members -----------------------------------------------------------------------


def _member_out(member: ProjectMember, subject: str, kind: str) -> schemas.MemberOut:
    return schemas.MemberOut(
        subject=subject,
        kind=kind,
        role=member.role,
        created_at=as_utc(member.created_at),
    )


def list_members(
    ctx: Context, project: str, *, limit: int = DEFAULT_LIMIT, cursor: str | None = None
) -> tuple[list[schemas.MemberOut], str | None]:
    """One page of the project's members (principals and groups), by name."""
    pctx = ctx.in_project(project)
    pctx.require("member:read", resource=f"project/{project}/members")
    assert pctx.project is not None
    out: list[schemas.MemberOut] = []
    for member, name, kind in ctx.session.execute(
        select(ProjectMember, Principal.name, Principal.kind)
        .join(Principal, Principal.id == ProjectMember.principal_id)
        .where(ProjectMember.project_id == pctx.project.id, Principal.deleted_at.is_(None))
        .order_by(Principal.name)
    ):
        out.append(_member_out(member, name, kind))
    for member, name in ctx.session.execute(
        select(ProjectMember, Group.name)
        .join(Group, Group.id == ProjectMember.group_id)
        .where(ProjectMember.project_id == pctx.project.id)
        .order_by(Group.name)
    ):
        out.append(_member_out(member, GROUP_PREFIX + name, "group"))
    return _page_of(sorted(out, key=_by_member), _by_member, limit=limit, cursor=cursor)


def _by_member(member: schemas.MemberOut) -> str:
    return member.subject


def _page_of(
    items: list[T], key: Callable[[T], str], *, limit: int, cursor: str | None
) -> tuple[list[T], str | None]:
    """One page of ``items`` (few, sorted by the unique ``key``), as ``paginate`` pages."""
    check_page_size(limit)
    if cursor:
        last = decode_cursor(cursor)
        if not isinstance(last, str):
            raise InvalidInput("cursor is not one this server issued", field="cursor")
        items = [item for item in items if key(item) > last]
    if len(items) <= limit:
        return items, None
    return items[:limit], encode_cursor(key(items[limit - 1]))


def _check_grant(pctx: Context, resource: str, *, old: str | None, new: str | None) -> None:
    """The escalation rules, in one place.

    - changing grants needs ``member:write`` (maintainers and owners);
    - granting, changing or removing ``owner`` needs ``member:grant-owner`` (owners);
    - nobody grants a role above their own (and, in :func:`_check_subject`, nobody acts
      on a principal stronger than themselves: ghaf/security/standing.py).
    """
    pctx.require("member:write", resource=resource)
    if OWNER in (old, new):
        pctx.require("member:grant-owner", resource=resource)
    if new is not None:
        standing.require_not_stronger(
            pctx,
            action="member:write",
            resource=resource,
            verb=f"grant {new} to",
            role=new,
            subject=resource.rsplit("/", 1)[-1],
        )


def _check_subject(
    pctx: Context, resource: str, column: str, subject_id: str, *, verb: str, role: str | None
) -> None:
    """Refuse acting on a member that holds more than the caller: a principal by its
    standing in the project (direct, via groups, platform admin), a group by its grant."""
    target = pctx.session.get(Principal, subject_id) if column == "principal_id" else None
    standing.require_not_stronger(
        pctx,
        target,
        action="member:write",
        resource=resource,
        verb=verb,
        role=role,
        subject=resource.rsplit("/", 1)[-1],
    )


def _subject(pctx: Context, subject: str) -> tuple[str, str, str]:
    """Resolve a member subject to (column, id, kind)."""
    if subject.startswith(GROUP_PREFIX):
        group = security.get_group_by_name(pctx.session, subject[len(GROUP_PREFIX) :])
        return "group_id", group.id, "group"
    principal = security.get_principal(pctx.session, subject)
    if principal.kind == SERVICE and pctx.project and principal.project_id != pctx.project.id:
        raise InvalidInput(
            f"service account {subject!r} belongs to another project", field="principal"
        )
    return "principal_id", principal.id, principal.kind


def _find_member(pctx: Context, column: str, subject_id: str) -> ProjectMember | None:
    assert pctx.project is not None
    return pctx.session.scalar(
        select(ProjectMember).where(
            ProjectMember.project_id == pctx.project.id,
            getattr(ProjectMember, column) == subject_id,
        )
    )


def _ensure_an_owner_remains(pctx: Context, leaving: ProjectMember) -> None:
    assert pctx.project is not None
    owners = pctx.session.scalar(
        select(func.count())
        .select_from(ProjectMember)
        .where(
            ProjectMember.project_id == pctx.project.id,
            ProjectMember.role == OWNER,
            ProjectMember.id != leaving.id,
        )
    )
    if not owners:
        raise Conflict(f"project {pctx.project.name!r} must keep at least one owner", field="role")


def add_member(ctx: Context, project: str, request: schemas.MemberAdd) -> schemas.MemberOut:
    pctx = ctx.in_project(project)
    subject = request.principal or GROUP_PREFIX + str(request.group)
    resource = f"project/{project}/member/{subject}"
    _check_grant(pctx, resource, old=None, new=request.role)
    column, subject_id, kind = _subject(pctx, subject)
    _check_subject(pctx, resource, column, subject_id, verb="add a grant to", role=None)
    assert pctx.project is not None
    member = ProjectMember(project_id=pctx.project.id, role=request.role, **{column: subject_id})
    insert_unique(
        pctx.session,
        member,
        field="principal" if request.principal else "group",
        conflict=f"{subject!r} is already a member of {project!r}; change the role instead",
    )
    pctx.audit("member:add", resource, detail={"role": request.role})
    pctx.commit()
    return _member_out(member, subject, kind)


def update_member(
    ctx: Context, project: str, subject: str, request: schemas.RoleChange
) -> schemas.MemberOut:
    """Change a member's role (``subject``: a principal name or ``group:NAME``)."""
    pctx = ctx.in_project(project)
    resource = f"project/{project}/member/{subject}"
    pctx.require("member:write", resource=resource)  # before revealing who is a member
    column, subject_id, kind = _subject(pctx, subject)
    member = _find_member(pctx, column, subject_id)
    if member is None:
        raise NotFound(f"{subject!r} is not a member of {project!r}", field="member")
    _check_grant(pctx, resource, old=member.role, new=request.role)
    _check_subject(pctx, resource, column, subject_id, verb="change the role of", role=member.role)
    if member.role == OWNER and request.role != OWNER:
        _ensure_an_owner_remains(pctx, member)
    old = member.role
    member.role = request.role
    pctx.audit("member:set-role", resource, detail={"from": old, "to": request.role})
    pctx.commit()
    return _member_out(member, subject, kind)


def remove_member(ctx: Context, project: str, subject: str) -> None:
    pctx = ctx.in_project(project)
    resource = f"project/{project}/member/{subject}"
    pctx.require("member:write", resource=resource)
    column, subject_id, _kind = _subject(pctx, subject)
    member = _find_member(pctx, column, subject_id)
    if member is None:
        raise NotFound(f"{subject!r} is not a member of {project!r}", field="member")
    _check_grant(pctx, resource, old=member.role, new=None)
    _check_subject(pctx, resource, column, subject_id, verb="remove", role=member.role)
    if member.role == OWNER:
        _ensure_an_owner_remains(pctx, member)
    pctx.session.delete(member)
    pctx.audit("member:remove", resource, detail={"role": member.role})
    pctx.commit()


# --- service accounts --------------------------------------------------------------


def create_service_account(
    ctx: Context, project: str, request: schemas.ServiceAccountCreate
) -> security_schemas.PrincipalOut:
    """A non-human principal owned by this project, granted ``role`` in it."""
    pctx = ctx.in_project(project)
    resource = f"project/{project}/service-account/{request.name}"
    pctx.require("service-account:write", resource=resource)
    _check_grant(pctx, resource, old=None, new=request.role)
    assert pctx.project is not None
    principal = security.add_service_account(pctx, name=request.name)
    pctx.session.add(
        ProjectMember(project_id=pctx.project.id, principal_id=principal.id, role=request.role)
    )
    pctx.audit("service-account:create", resource, detail={"role": request.role})
    pctx.commit()
    return security.principal_out(principal, project=project)


def _service_account(pctx: Context, name: str) -> Principal:
    principal = security.get_principal(pctx.session, name, field="service_account")
    if (
        principal.kind != SERVICE
        or pctx.project is None
        or (principal.project_id != pctx.project.id)
    ):
        raise NotFound(
            f"project {pctx.project.name if pctx.project else '?'!r} has no "
            f"service account named {name!r}",
            field="service_account",
        )
    return principal


def list_service_accounts(
    ctx: Context, project: str, *, limit: int = DEFAULT_LIMIT, cursor: str | None = None
) -> tuple[list[security_schemas.PrincipalOut], str | None]:
    """One page of the project's service accounts, by name."""
    pctx = ctx.in_project(project)
    pctx.require("member:read", resource=f"project/{project}/service-accounts")
    assert pctx.project is not None
    accounts = [
        security.principal_out(p, project=project)
        for p in security.service_accounts_of(pctx.session, pctx.project)
    ]
    return _page_of(accounts, _by_name, limit=limit, cursor=cursor)


def _by_name(account: security_schemas.PrincipalOut) -> str:
    return account.name


def delete_service_account(ctx: Context, project: str, name: str) -> None:
    pctx = ctx.in_project(project)
    resource = f"project/{project}/service-account/{name}"
    pctx.require("service-account:write", resource=resource)
    principal = _service_account(pctx, name)
    standing.require_not_stronger(
        pctx, principal, action="service-account:delete", resource=resource, verb="delete"
    )
    now = utcnow()
    principal.deleted_at = now
    pctx.session.execute(
        update(Token)
        .where(Token.principal_id == principal.id, Token.revoked_at.is_(None))
        .values(revoked_at=now)
    )
    pctx.session.execute(delete(ProjectMember).where(ProjectMember.principal_id == principal.id))
    pctx.audit("service-account:delete", resource)
    pctx.commit()


def create_service_account_token(
    ctx: Context, project: str, name: str, request: security_schemas.TokenCreate
) -> security_schemas.TokenCreated:
    """Service-account tokens are always limited to the account's project."""
    pctx = ctx.in_project(project)
    resource = f"project/{project}/service-account/{name}/token/{request.name}"
    pctx.require("service-account:write", resource=resource)
    principal = _service_account(pctx, name)
    standing.require_not_stronger(
        pctx, principal, action="token:create", resource=resource, verb="mint a token for"
    )
    if request.project not in (None, project):
        raise InvalidInput(
            "a service account's tokens are limited to its own project", field="project"
        )
    scoped = request.model_copy(update={"project": project})
    return security.issue_account_token(pctx, principal, scoped)


def list_service_account_tokens(
    ctx: Context,
    project: str,
    name: str,
    *,
    limit: int = DEFAULT_LIMIT,
    cursor: str | None = None,
) -> tuple[list[security_schemas.TokenOut], str | None]:
    """One page of a service account's tokens (never their secrets)."""
    pctx = ctx.in_project(project)
    resource = f"project/{project}/service-account/{name}"
    pctx.require("member:read", resource=resource)
    principal = _service_account(pctx, name)
    standing.require_not_stronger(
        pctx, principal, action="token:list", resource=resource, verb="list the tokens of"
    )
    return security.list_account_tokens(pctx, principal, page_size=limit, cursor=cursor)


def revoke_service_account_token(ctx: Context, project: str, name: str, token: str) -> None:
    pctx = ctx.in_project(project)
    resource = f"project/{project}/service-account/{name}/token/{token}"
    pctx.require("service-account:write", resource=resource)
    principal = _service_account(pctx, name)
    standing.require_not_stronger(
        pctx, principal, action="token:revoke", resource=resource, verb="revoke a token of"
    )
    security.revoke_account_token(pctx, principal, token)
