"""Users, service-account tokens, groups and authentication. The only writer of these
tables; every entry point (REST, CLI, SDK) reaches them through here."""

from __future__ import annotations

import math
from collections.abc import Sequence
from datetime import datetime, timedelta
from typing import NoReturn

from sqlalchemy import bindparam, select, update
from sqlalchemy.orm import Session

from ghaf.core.clock import as_utc, utcnow
from ghaf.core.database import insert_unique
from ghaf.core.errors import (
    GhafError,
    InvalidInput,
    NotFound,
    TooManyRequests,
    Unauthenticated,
)
from ghaf.core.metrics import LOGINS
from ghaf.core.names import validate_name
from ghaf.core.paging import DEFAULT_LIMIT, paginate
from ghaf.security import schemas, standing
from ghaf.security.audit.service import DENIED
from ghaf.security.cache import CachedToken
from ghaf.security.context import Caller, Context
from ghaf.security.models import SERVICE, USER, Group, GroupMember, Principal, Token
from ghaf.security.passwords import hash_password, verify_password
from ghaf.security.permissions import highest_role
from ghaf.security.ratelimit import LOCKED, Lockout, LoginGuard
from ghaf.security.tenancy import Project, ProjectMember
from ghaf.security.tokens import generate_token, hash_token, looks_like_token, token_hint

# --- authentication ------------------------------------------------------------------


def authenticate(ctx: Context, authorization: str | None) -> Caller:
    """Resolve an ``Authorization: Bearer`` header to a caller, or raise (audited)."""
    if not authorization:
        raise Unauthenticated(
            "authentication required: send 'Authorization: Bearer ghaf_...'",
            field="Authorization",
        )
    scheme, _, value = authorization.partition(" ")
    value = value.strip()
    if scheme.lower() != "bearer" or not value:
        _refuse(ctx, "malformed Authorization header: expected 'Bearer <token>'")
    if not looks_like_token(value):
        _refuse(ctx, "malformed token: a ghaf token is 'ghaf_' followed by 43 characters")
    secret_hash = hash_token(value)
    if ctx.cache is not None:
        ctx.epoch = ctx.cache.read_epoch(ctx.database)
        hit = ctx.cache.token(ctx.epoch, secret_hash)
        if hit is not None and (hit.expires_at is None or hit.expires_at > utcnow()):
            return hit.caller
    row = ctx.session.execute(_TOKEN_LOOKUP, {"secret_hash": secret_hash}).first()
    if row is None:
        _refuse(ctx, "unknown token")
    principal = Principal(id=row.principal_id, name=row.principal_name, kind=row.kind)
    if row.revoked_at is not None:
        _refuse(ctx, f"token {row.token_name!r} has been revoked", principal)
    expires_at = as_utc(row.expires_at) if row.expires_at is not None else None
    if expires_at is not None and expires_at <= utcnow():
        _refuse(ctx, f"token {row.token_name!r} has expired", principal)
    if row.deleted_at is not None:
        _refuse(ctx, "the token's owner has been deleted", principal)
    caller = Caller(
        principal_id=row.principal_id,
        name=row.principal_name,
        kind=row.kind,
        is_platform_admin=row.is_platform_admin,
        token_id=row.token_id,
        token_project_id=row.project_id,
        read_only=row.read_only,
    )
    if ctx.cache is not None and ctx.epoch is not None:
        ctx.cache.put_token(ctx.epoch, secret_hash, CachedToken(caller, expires_at))
    return caller


_TOKEN_LOOKUP = (
    select(
        Token.id.label("token_id"),
        Token.name.label("token_name"),
        Token.project_id,
        Token.read_only,
        Token.expires_at,
        Token.revoked_at,
        Principal.id.label("principal_id"),
        Principal.name.label("principal_name"),
        Principal.kind,
        Principal.is_platform_admin,
        Principal.deleted_at,
    )
    .join(Principal, Principal.id == Token.principal_id)
    .where(Token.secret_hash == bindparam("secret_hash"))
)


def _refuse(ctx: Context, reason: str, principal: Principal | None = None) -> NoReturn:
    # The attempt is attributed to the token's owner where the token is known.
    if principal is not None:
        ctx.caller = Caller(principal.id, principal.name, principal.kind, False)
    ctx.deny("auth:token", "token", Unauthenticated(reason, field="Authorization"))


def login(
    ctx: Context,
    request: schemas.LoginRequest,
    *,
    hours: float,
    guard: LoginGuard | None = None,
) -> schemas.TokenCreated:
    """Exchange a user's name and password for a short-lived token.

    No CPU-heavy work runs while the write lock is held: the rate limits are checked
    first (no argon2 for a refused attempt), the user is read in a read session, the
    password is verified with no transaction open, and only then does a short write
    transaction issue the token or count the failure. A locked account is refused
    without looking at the password, so the answer never says whether it was right.
    """
    if guard is not None:
        guard.hit(client=ctx.client, name=request.name)
    lockout = guard.lockout if guard is not None else Lockout()
    with ctx.database.transaction(write=False) as session:
        found = session.execute(_LOGIN_LOOKUP, {"name": request.name}).first()
    now = utcnow()
    if found is None:
        retry = guard.unknown_locked(request.name) if guard is not None else None
        if retry is not None:
            _refuse_login(ctx, request.name, retry_after=retry)
        verify_password(None, request.password)  # the same work as a wrong password
        if guard is not None:
            guard.unknown_failed(request.name)
        _refuse_login(ctx, request.name)
    locked_until = as_utc(found.locked_until) if found.locked_until is not None else None
    if locked_until is not None and locked_until > now:
        _refuse_login(ctx, request.name, retry_after=_seconds(locked_until))
    if not verify_password(found.password_hash, request.password):
        _count_failure(ctx, found.id, request.name, lockout)
    # The short write transaction starts here (BEGIN IMMEDIATE on SQLite).
    principal = ctx.session.get(Principal, found.id, with_for_update=True)
    if (
        principal is None
        or principal.deleted_at is not None
        or principal.password_hash != found.password_hash  # changed while we verified
    ):
        _refuse_login(ctx, request.name)
    if principal.locked_until is not None and as_utc(principal.locked_until) > utcnow():
        _refuse_login(ctx, request.name, retry_after=_seconds(principal.locked_until))
    principal.failed_logins = 0
    principal.first_failed_at = None
    principal.locked_until = None
    ctx.caller = Caller(principal.id, principal.name, principal.kind, principal.is_platform_admin)
    stamp = utcnow().strftime("%Y%m%dT%H%M%S%f")
    issued = _issue(
        ctx,
        principal,
        name=f"login-{stamp}",
        project=None,
        read_only=False,
        expires_at=utcnow() + timedelta(hours=hours),
        action="auth:login",
    )
    LOGINS.inc(value="success")
    return issued


_LOGIN_LOOKUP = select(Principal.id, Principal.password_hash, Principal.locked_until).where(
    Principal.name == bindparam("name"),
    Principal.kind == USER,
    Principal.deleted_at.is_(None),
)


def _seconds(until: datetime) -> int:
    return max(1, math.ceil((as_utc(until) - utcnow()).total_seconds()))


def _refuse_login(ctx: Context, name: str, *, retry_after: int | None = None) -> NoReturn:
    """Refuse a login (audited). A locked name answers 429 whatever the password."""
    error: GhafError = (
        Unauthenticated("wrong user name or password")
        if retry_after is None
        else TooManyRequests(LOCKED, retry_after=retry_after)
    )
    LOGINS.inc(value="failure" if retry_after is None else "locked")
    ctx.deny("auth:login", f"user/{name}", error)


def _count_failure(ctx: Context, principal_id: str, name: str, lockout: Lockout) -> NoReturn:
    """Count a wrong password in one short write transaction; lock at the threshold."""
    error = Unauthenticated("wrong user name or password")
    principal = ctx.session.get(Principal, principal_id, with_for_update=True)
    locked_until: datetime | None = None
    if principal is not None:
        now = utcnow()
        first = as_utc(principal.first_failed_at) if principal.first_failed_at else None
        if first is None or first < now - timedelta(seconds=lockout.window_s):
            principal.failed_logins, principal.first_failed_at = 1, now
        else:
            principal.failed_logins = (principal.failed_logins or 0) + 1
        if principal.failed_logins >= lockout.failures:
            locked_until = now + timedelta(seconds=lockout.duration_s)
            principal.locked_until = locked_until
            principal.failed_logins, principal.first_failed_at = 0, None
    ctx.audit("auth:login", f"user/{name}", outcome=DENIED, detail={"reason": str(error)})
    if locked_until is not None:
        ctx.audit(
            "auth:lockout",
            f"user/{name}",
            detail={
                "failures": lockout.failures,
                "window_s": lockout.window_s,
                "locked_until": locked_until.isoformat(),
            },
        )
    ctx.commit()
    LOGINS.inc(value="failure")
    raise error


def unlock_user(
    ctx: Context, name: str, *, guard: LoginGuard | None = None
) -> schemas.PrincipalOut:
    """Lift a login lockout and forget the failures counted so far (platform admins)."""
    ctx.require("user:write", resource=f"user/{name}")
    principal = get_principal(ctx.session, name, field="user")
    if principal.kind != USER:
        raise NotFound(f"no user named {name!r}", field="user")
    was_locked = principal.locked_until is not None and as_utc(principal.locked_until) > utcnow()
    principal.failed_logins, principal.first_failed_at, principal.locked_until = 0, None, None
    ctx.audit("user:unlock", f"user/{name}", detail={"was_locked": was_locked})
    ctx.commit()
    if guard is not None:
        guard.reset(name)
    return principal_out(principal)


# --- principals --------------------------------------------------------------------


def get_principal(session: Session, name: str, *, field: str = "principal") -> Principal:
    validate_name(name, field=field)
    principal = session.scalar(
        select(Principal).where(Principal.name == name, Principal.deleted_at.is_(None))
    )
    if principal is None:
        raise NotFound(f"no user or service account named {name!r}", field=field)
    return principal


def principal_out(principal: Principal, *, project: str | None = None) -> schemas.PrincipalOut:
    return schemas.PrincipalOut(
        id=principal.id,
        name=principal.name,
        kind=principal.kind,
        email=principal.email,
        platform_admin=principal.is_platform_admin,
        project=project,
        created_at=as_utc(principal.created_at),
        locked_until=_still_locked(principal),
    )


def _still_locked(principal: Principal) -> datetime | None:
    until = principal.locked_until
    return as_utc(until) if until is not None and as_utc(until) > utcnow() else None


def _add_principal(
    ctx: Context,
    *,
    name: str,
    kind: str,
    email: str | None = None,
    password: str | None = None,
    platform_admin: bool = False,
    project_id: str | None = None,
) -> Principal:
    """Insert a principal in the caller's transaction (names are global).

    The password is hashed before the first statement, so a request that has not read
    anything yet hashes (argon2, tens of milliseconds) before it takes the write lock.
    """
    password_hash = hash_password(password) if password is not None else None
    principal = Principal(
        name=name,
        kind=kind,
        email=email,
        is_platform_admin=platform_admin,
        password_hash=password_hash,
        project_id=project_id,
        created_by=ctx.caller.principal_id if ctx.caller else None,
    )
    insert_unique(
        ctx.session,
        principal,
        field="name",
        conflict=f"a user or service account named {name!r} already exists",
    )
    return principal


def add_service_account(ctx: Context, *, name: str) -> Principal:
    """Insert a service account owned by ``ctx``'s project, in the caller's transaction
    (the projects domain grants it its role and commits). Needs
    ``service-account:write`` in that project."""
    project = _project_of(ctx)
    ctx.require("service-account:write", resource=f"project/{project.name}/service-account/{name}")
    return _add_principal(ctx, name=name, kind=SERVICE, project_id=project.id)


def _project_of(ctx: Context) -> Project:
    if ctx.project is None:
        # A programming error, not bad input: service accounts live in one project.
        raise RuntimeError("a service account's context must be narrowed to its project")
    return ctx.project


def create_user(ctx: Context, request: schemas.UserCreate) -> schemas.PrincipalOut:
    """Create a user (platform admins)."""
    ctx.require("user:write", resource=f"user/{request.name}")
    principal = _add_principal(
        ctx,
        name=request.name,
        kind=USER,
        email=request.email,
        password=request.password,
        platform_admin=request.platform_admin,
    )
    ctx.audit(
        "user:create", f"user/{request.name}", detail={"platform_admin": request.platform_admin}
    )
    ctx.commit()
    return principal_out(principal)


def list_users(
    ctx: Context, *, page_size: int, cursor: str | None
) -> tuple[list[schemas.PrincipalOut], str | None]:
    """One page of users by name (platform admins)."""
    ctx.require("user:read", resource="users")
    rows, next_cursor = paginate(
        ctx.session,
        select(Principal).where(Principal.kind == USER, Principal.deleted_at.is_(None)),
        key=Principal.name,
        limit=page_size,
        cursor=cursor,
    )
    return [principal_out(p) for p in rows], next_cursor


def get_user(ctx: Context, name: str) -> schemas.PrincipalOut:
    """A user's metadata: your own, or anyone's with ``user:read``."""
    if ctx.actor != name:
        ctx.require("user:read", resource=f"user/{name}")
    principal = get_principal(ctx.session, name, field="user")
    if principal.kind != USER:
        raise NotFound(f"no user named {name!r}", field="user")
    return principal_out(principal)


def delete_user(ctx: Context, name: str) -> None:
    """Soft-delete: the name stays reserved and every token stops working at once."""
    ctx.require("user:write", resource=f"user/{name}")
    principal = get_principal(ctx.session, name, field="user")
    if principal.kind != USER:
        raise NotFound(f"no user named {name!r}", field="user")
    if ctx.caller and principal.id == ctx.caller.principal_id:
        raise InvalidInput("you cannot delete yourself", field="user")
    standing.require_not_stronger(
        ctx, principal, action="user:delete", resource=f"user/{name}", verb="delete"
    )
    now = utcnow()
    principal.deleted_at = now
    ctx.session.execute(
        update(Token)
        .where(Token.principal_id == principal.id, Token.revoked_at.is_(None))
        .values(revoked_at=now)
    )
    ctx.audit("user:delete", f"user/{name}")
    ctx.commit()


def set_password(ctx: Context, name: str, password: str) -> None:
    """Set a user's password: your own (with a writable token), or anyone's with
    ``user:write``."""
    if ctx.actor != name or (ctx.caller and ctx.caller.read_only):
        ctx.require("user:write", resource=f"user/{name}")
    # Hash before the write transaction starts (its first statement takes the lock).
    password_hash = hash_password(password)
    principal = get_principal(ctx.session, name, field="user")
    if principal.kind != USER:
        raise InvalidInput("only users have passwords", field="user")
    principal.password_hash = password_hash
    ctx.audit("user:set-password", f"user/{name}")
    ctx.commit()


def whoami(ctx: Context) -> schemas.WhoAmI:
    """The caller, its token's limits and its role in each project it can see (any
    authenticated caller may read itself: ghaf/security/standing.py)."""
    caller = standing.require_authenticated(ctx, action="auth:whoami", resource="whoami")
    token = ctx.session.get(Token, caller.token_id) if caller.token_id else None
    token_project = (
        ctx.session.get(Project, caller.token_project_id) if (caller.token_project_id) else None
    )
    roles = ctx.project_roles()
    names = dict(
        ctx.session.execute(
            select(Project.id, Project.name).where(
                Project.id.in_(list(roles)), Project.deleted_at.is_(None)
            )
        ).all()
    )
    projects = {names[pid]: role for pid, role in roles.items() if pid in names}
    return schemas.WhoAmI(
        id=caller.principal_id,
        name=caller.name,
        kind=caller.kind,
        platform_admin=caller.is_platform_admin,
        token_name=token.name if token else None,
        token_project=token_project.name if token_project else None,
        read_only=caller.read_only,
        projects=dict(sorted(projects.items())),
    )


# --- tokens ------------------------------------------------------------------------


def _issue(
    ctx: Context,
    principal: Principal,
    *,
    name: str,
    project: Project | None,
    read_only: bool,
    expires_at: datetime | None,
    action: str = "token:create",
) -> schemas.TokenCreated:
    caller = ctx.caller
    # A token can only be as strong as the token that made it.
    narrower = (
        project is not None and caller is not None and (project.id == caller.token_project_id)
    )
    if caller is not None and caller.token_project_id is not None and not narrower:
        raise InvalidInput(
            "your token is limited to one project, so new tokens must be too",
            field="project",
        )
    secret = generate_token()
    token = Token(
        principal_id=principal.id,
        name=name,
        secret_hash=hash_token(secret),
        hint=token_hint(secret),
        project_id=project.id if project else None,
        read_only=read_only,
        expires_at=expires_at,
        created_by=caller.principal_id if caller else None,
    )
    insert_unique(
        ctx.session,
        token,
        field="name",
        conflict=f"{principal.name} already has a token named {name!r}",
    )
    ctx.audit(
        action,
        f"{principal.kind}/{principal.name}/token/{name}",
        detail={"project": project.name if project else None, "read_only": read_only},
        project=project.id if project else None,
    )
    ctx.commit()
    out = token_out(token, principal.name, project.name if project else None)
    return schemas.TokenCreated(**out.model_dump(), token=secret)


def token_out(token: Token, principal: str, project: str | None) -> schemas.TokenOut:
    return schemas.TokenOut(
        id=token.id,
        name=token.name,
        principal=principal,
        hint=token.hint,
        project=project,
        read_only=token.read_only,
        expires_at=as_utc(token.expires_at) if token.expires_at else None,
        created_at=as_utc(token.created_at),
        revoked_at=as_utc(token.revoked_at) if token.revoked_at else None,
    )


def _issue_token(
    ctx: Context, principal: Principal, request: schemas.TokenCreate
) -> schemas.TokenCreated:
    """Create a token for ``principal``; the caller's authority was checked already."""
    project = ctx.in_project(request.project).project if request.project else None
    expires_at = (
        utcnow() + timedelta(days=request.expires_in_days) if request.expires_in_days else None
    )
    return _issue(
        ctx,
        principal,
        name=request.name,
        project=project,
        read_only=request.read_only,
        expires_at=expires_at,
    )


def _self(ctx: Context, caller: Caller) -> Principal:
    principal = ctx.session.get(Principal, caller.principal_id)
    if principal is None or principal.deleted_at is not None:
        raise NotFound("your user or service account no longer exists", field="Authorization")
    return principal


def create_own_token(ctx: Context, request: schemas.TokenCreate) -> schemas.TokenCreated:
    """A new token for the caller. Read-only tokens cannot mint tokens."""
    caller = standing.require_authenticated(
        ctx, action="token:create", resource=f"token/{request.name}", change="create tokens"
    )
    return _issue_token(ctx, _self(ctx, caller), request)


def create_user_token(
    ctx: Context, user: str, request: schemas.TokenCreate
) -> schemas.TokenCreated:
    """A token for another user (platform admins only; service accounts get theirs
    through their project)."""
    resource = f"user/{user}/token/{request.name}"
    ctx.require("user:write", resource=resource)
    principal = get_principal(ctx.session, user, field="user")
    if principal.kind != USER:
        raise NotFound(f"no user named {user!r}", field="user")
    standing.require_not_stronger(
        ctx, principal, action="token:create", resource=resource, verb="mint a token for"
    )
    return _issue_token(ctx, principal, request)


def _list_tokens(
    ctx: Context,
    principal: Principal,
    *,
    include_revoked: bool,
    page_size: int,
    cursor: str | None,
) -> tuple[list[schemas.TokenOut], str | None]:
    """One page of a principal's tokens, oldest first (ids are time-ordered)."""
    statement = select(Token).where(Token.principal_id == principal.id)
    if not include_revoked:
        statement = statement.where(Token.revoked_at.is_(None))
    rows, next_cursor = paginate(
        ctx.session, statement, key=Token.id, limit=page_size, cursor=cursor
    )
    project_ids = {t.project_id for t in rows if t.project_id is not None}
    names = (
        dict(
            ctx.session.execute(
                select(Project.id, Project.name).where(Project.id.in_(project_ids))
            ).all()
        )
        if project_ids
        else {}
    )
    items = [token_out(t, principal.name, names.get(t.project_id or "")) for t in rows]
    return items, next_cursor


def list_own_tokens(
    ctx: Context,
    *,
    include_revoked: bool = False,
    page_size: int = DEFAULT_LIMIT,
    cursor: str | None = None,
) -> tuple[list[schemas.TokenOut], str | None]:
    """One page of the caller's own tokens (any authenticated caller may read itself)."""
    caller = standing.require_authenticated(ctx, action="token:list", resource="tokens")
    return _list_tokens(
        ctx,
        _self(ctx, caller),
        include_revoked=include_revoked,
        page_size=page_size,
        cursor=cursor,
    )


def _revoke_token(ctx: Context, principal: Principal, name: str) -> None:
    token = ctx.session.scalar(
        select(Token).where(Token.principal_id == principal.id, Token.name == name)
    )
    if token is None:
        raise NotFound(f"{principal.name} has no token named {name!r}", field="token")
    if token.revoked_at is None:
        token.revoked_at = utcnow()
        ctx.audit("token:revoke", f"{principal.kind}/{principal.name}/token/{name}")
        ctx.commit()


def revoke_own_token(ctx: Context, name: str) -> None:
    """Revoke one of the caller's own tokens (not with a read-only token)."""
    caller = standing.require_authenticated(
        ctx, action="token:revoke", resource=f"token/{name}", change="revoke tokens"
    )
    _revoke_token(ctx, _self(ctx, caller), name)


# --- a project's service accounts' tokens (called by the projects domain) ------------


def _require_account(ctx: Context, account: Principal, permission: str, *, what: str) -> None:
    """``permission`` in the account's own project, which ``ctx`` is narrowed to."""
    project = _project_of(ctx)
    ctx.require(permission, resource=f"project/{project.name}/service-account/{account.name}{what}")
    if account.kind != SERVICE or account.project_id != project.id:
        raise NotFound(
            f"project {project.name!r} has no service account named {account.name!r}",
            field="service_account",
        )


def issue_account_token(
    ctx: Context, account: Principal, request: schemas.TokenCreate
) -> schemas.TokenCreated:
    """A token for one of ``ctx``'s project's service accounts, limited to that project
    (needs ``service-account:write`` there)."""
    _require_account(ctx, account, "service-account:write", what=f"/token/{request.name}")
    project = _project_of(ctx)
    if request.project not in (None, project.name):
        raise InvalidInput(
            "a service account's tokens are limited to its own project", field="project"
        )
    return _issue_token(ctx, account, request.model_copy(update={"project": project.name}))


def list_account_tokens(
    ctx: Context,
    account: Principal,
    *,
    include_revoked: bool = False,
    page_size: int = DEFAULT_LIMIT,
    cursor: str | None = None,
) -> tuple[list[schemas.TokenOut], str | None]:
    """One page of a service account's tokens (needs ``member:read`` in its project)."""
    _require_account(ctx, account, "member:read", what="")
    return _list_tokens(
        ctx, account, include_revoked=include_revoked, page_size=page_size, cursor=cursor
    )


def revoke_account_token(ctx: Context, account: Principal, name: str) -> None:
    """Revoke a service account's token (needs ``service-account:write`` in its project)."""
    _require_account(ctx, account, "service-account:write", what=f"/token/{name}")
    _revoke_token(ctx, account, name)


# --- groups ------------------------------------------------------------------------


def get_group_by_name(session: Session, name: str) -> Group:
    validate_name(name, field="group")
    group = session.scalar(select(Group).where(Group.name == name))
    if group is None:
        raise NotFound(f"no group named {name!r}", field="group")
    return group


def _group_out(session: Session, group: Group) -> schemas.GroupOut:
    members = session.scalars(
        select(Principal.name)
        .join(GroupMember, GroupMember.principal_id == Principal.id)
        .where(GroupMember.group_id == group.id, Principal.deleted_at.is_(None))
        .order_by(Principal.name)
    ).all()
    return schemas.GroupOut(
        id=group.id,
        name=group.name,
        description=group.description,
        members=list(members),
        created_at=as_utc(group.created_at),
    )


def create_group(ctx: Context, request: schemas.GroupCreate) -> schemas.GroupOut:
    """Create a group (platform admins); grant it roles in projects with ``members``."""
    ctx.require("group:write", resource=f"group/{request.name}")
    group = Group(name=request.name, description=request.description)
    insert_unique(
        ctx.session, group, field="name", conflict=f"a group named {request.name!r} already exists"
    )
    ctx.audit("group:create", f"group/{request.name}")
    ctx.commit()
    return _group_out(ctx.session, group)


def list_groups(
    ctx: Context, *, page_size: int, cursor: str | None
) -> tuple[list[schemas.GroupOut], str | None]:
    """One page of groups by name."""
    ctx.require("group:read", resource="groups")
    rows, next_cursor = paginate(
        ctx.session, select(Group), key=Group.name, limit=page_size, cursor=cursor
    )
    return [_group_out(ctx.session, g) for g in rows], next_cursor


def get_group(ctx: Context, name: str) -> schemas.GroupOut:
    """A group with its members."""
    ctx.require("group:read", resource=f"group/{name}")
    return _group_out(ctx.session, get_group_by_name(ctx.session, name))


def delete_group(ctx: Context, name: str) -> None:
    """Delete a group (platform admins)."""
    ctx.require("group:write", resource=f"group/{name}")
    group = get_group_by_name(ctx.session, name)
    ctx.session.delete(group)
    ctx.audit("group:delete", f"group/{name}")
    ctx.commit()


def add_group_member(ctx: Context, name: str, member: str) -> schemas.GroupOut:
    """Add a user or service account to a group (never one stronger than yourself)."""
    ctx.require("group:write", resource=f"group/{name}/member/{member}")
    group = get_group_by_name(ctx.session, name)
    principal = get_principal(ctx.session, member, field="member")
    granted = ctx.session.scalars(
        select(ProjectMember.role).where(ProjectMember.group_id == group.id)
    ).all()
    standing.require_not_stronger(
        ctx,
        principal,
        action="group:add-member",
        resource=f"group/{name}/member/{member}",
        verb=f"add to group {name!r}",
        role=highest_role(list(granted)),
    )
    if ctx.session.get(GroupMember, (group.id, principal.id)) is None:
        ctx.session.add(GroupMember(group_id=group.id, principal_id=principal.id))
        ctx.audit("group:add-member", f"group/{name}/member/{member}")
        ctx.commit()
    return _group_out(ctx.session, group)


def remove_group_member(ctx: Context, name: str, member: str) -> schemas.GroupOut:
    """Remove a member from a group (never one stronger than yourself)."""
    ctx.require("group:write", resource=f"group/{name}/member/{member}")
    group = get_group_by_name(ctx.session, name)
    principal = get_principal(ctx.session, member, field="member")
    standing.require_not_stronger(
        ctx,
        principal,
        action="group:remove-member",
        resource=f"group/{name}/member/{member}",
        verb=f"remove from group {name!r}",
    )
    row = ctx.session.get(GroupMember, (group.id, principal.id))
    if row is None:
        raise NotFound(f"{member!r} is not in group {name!r}", field="member")
    ctx.session.delete(row)
    ctx.audit("group:remove-member", f"group/{name}/member/{member}")
    ctx.commit()
    return _group_out(ctx.session, group)


# --- bootstrap ---------------------------------------------------------------------


def bootstrap_admin(
    ctx: Context, *, name: str, password: str | None = None
) -> schemas.TokenCreated | None:
    """Create the first platform admin and its token; None if an admin already exists.

    Runs as ghaf's own installation context (``system:admin-init``), which holds
    platform authority; any other caller needs ``user:write`` like ``create_user``."""
    validate_name(name, field="admin")
    ctx.require("user:write", resource=f"user/{name}")
    existing = ctx.session.scalar(
        select(Principal)
        .where(Principal.is_platform_admin.is_(True), Principal.deleted_at.is_(None))
        .limit(1)
    )
    if existing is not None:
        return None
    principal = _add_principal(ctx, name=name, kind=USER, password=password, platform_admin=True)
    ctx.audit("user:create", f"user/{name}", detail={"platform_admin": True, "bootstrap": True})
    return _issue(ctx, principal, name="bootstrap", project=None, read_only=False, expires_at=None)


def service_accounts_of(session: Session, project: Project) -> Sequence[Principal]:
    return session.scalars(
        select(Principal)
        .where(
            Principal.project_id == project.id,
            Principal.kind == SERVICE,
            Principal.deleted_at.is_(None),
        )
        .order_by(Principal.name)
    ).all()
