"""Standing: what a principal holds, and the people behind a service account.

Three rules live here, each in one function that every route reaches through its service:

- :func:`require_authenticated`: **an authenticated caller may read itself.** Whoami and
  the caller's own tokens need no permission, only a caller; changing them (minting or
  revoking one's own tokens) also needs a token that is not read-only. Anonymous and
  system contexts have no self and are refused.

- :func:`require_not_stronger`: **no one acts on a principal stronger than themselves.**
  Nobody may create, change, delete, list or revoke the tokens of, or take a token for, a
  principal that holds more than they hold. A principal's standing in a project is its
  strongest role there, granted directly or through a group; a platform admin outranks
  every project role. Outside a project only an unrestricted platform-admin token counts
  (a project-limited token holds nothing outside its project).
- :func:`people_behind`: **four-eyes counts people, not accounts.** A service account
  stands for whoever created it and whoever issued its tokens (they hold, or held, its
  secrets), transitively, so nobody approves their own work through an account they
  made or hold a token of.
"""

from __future__ import annotations

from collections.abc import Iterable

from sqlalchemy import or_, select
from sqlalchemy.orm import Session

from ghaf.core.errors import PermissionDenied, Unauthenticated
from ghaf.security.context import Caller, Context
from ghaf.security.models import SERVICE, GroupMember, Principal, Token
from ghaf.security.permissions import PLATFORM_ADMIN, ROLE_RANK, highest_role
from ghaf.security.tenancy import ProjectMember

RULE = "no one may act on a principal that holds more than they do"
_TOP = max(ROLE_RANK.values()) + 1  # platform-admin outranks every project role


def require_authenticated(
    ctx: Context, *, action: str, resource: str, change: str | None = None
) -> Caller:
    """The door for a caller acting on itself: return the caller, or refuse (audited).

    ``change`` says what the caller is about to change of itself ("create tokens"): a
    read-only token may read itself but not change itself (403).
    """
    caller = ctx.caller
    if caller is None:
        ctx.deny(action, resource, Unauthenticated("this needs an authenticated caller"))
    if change is not None and caller.read_only:
        ctx.deny(
            action,
            resource,
            PermissionDenied(f"a read-only token cannot {change}"),
        )
    return caller


def rank(role: str | None) -> int:
    """Order of standings: none < viewer < member < maintainer < owner < platform-admin."""
    if role == PLATFORM_ADMIN:
        return _TOP
    return ROLE_RANK.get(role or "", -1)


def project_role(session: Session, project_id: str, principal_id: str) -> str | None:
    """The principal's strongest role in the project, direct or through its groups."""
    groups = select(GroupMember.group_id).where(GroupMember.principal_id == principal_id)
    roles = session.scalars(
        select(ProjectMember.role).where(
            ProjectMember.project_id == project_id,
            or_(ProjectMember.principal_id == principal_id, ProjectMember.group_id.in_(groups)),
        )
    ).all()
    return highest_role(list(roles))


def standing_of(ctx: Context, principal: Principal) -> str | None:
    """What ``principal`` holds where ``ctx`` acts (its project, or the platform)."""
    if principal.is_platform_admin:
        return PLATFORM_ADMIN
    if ctx.project is None:
        return None
    return project_role(ctx.session, ctx.project.id, principal.id)


def caller_standing(ctx: Context) -> str | None:
    """What the caller holds where ``ctx`` acts, as narrowed by the caller's token."""
    caller = ctx.caller
    if caller is None:
        return PLATFORM_ADMIN if ctx.system_actor else None
    if ctx.project is not None:
        return ctx.role
    if caller.is_platform_admin and caller.token_project_id is None:
        return PLATFORM_ADMIN
    return None


def require_not_stronger(
    ctx: Context,
    target: Principal | None = None,
    *,
    action: str,
    resource: str,
    verb: str,
    role: str | None = None,
    subject: str | None = None,
) -> None:
    """Refuse (403, audited) unless the caller holds at least what the target holds.

    The target holds ``target``'s standing (see :func:`standing_of`) or ``role`` (the role
    it has or is about to get), whichever is stronger; ``subject`` names it when there is
    no principal (a group's grant, an account not created yet). ``verb`` says what the
    caller tried, for the message: "mint a token for", "remove", ...
    """
    held = standing_of(ctx, target) if target is not None else None
    if rank(role) > rank(held):
        held = role
    mine = caller_standing(ctx)
    if rank(held) <= rank(mine):
        return
    name = subject or (target.name if target is not None else "that principal")
    where = f" in project {ctx.project.name!r}" if ctx.project is not None else ""
    ctx.deny(
        action,
        resource,
        PermissionDenied(
            f"{RULE}: you cannot {verb} {name!r}, who would hold {held}{where}, "
            f"more than you ({mine or 'no role'})",
            permission=action,
        ),
    )


# --- four-eyes: the people behind a principal ------------------------------------------


def people_behind(session: Session, principal_id: str) -> frozenset[str]:
    """The principal and, for a service account, everyone who created it or issued one
    of its tokens (revoked ones too), followed through accounts made by accounts."""
    seen = {principal_id}
    frontier = [principal_id]
    while frontier:
        services = session.scalars(
            select(Principal.id).where(Principal.id.in_(frontier), Principal.kind == SERVICE)
        ).all()
        if not services:
            break
        found = set(
            session.scalars(
                select(Principal.created_by).where(
                    Principal.id.in_(services), Principal.created_by.is_not(None)
                )
            )
        )
        found |= set(
            session.scalars(
                select(Token.created_by)
                .where(Token.principal_id.in_(services), Token.created_by.is_not(None))
                .distinct()
            )
        )
        frontier = [p for p in found if p is not None and p not in seen]
        seen.update(frontier)
    return frozenset(seen)


def count_people(session: Session, principal_ids: Iterable[str | None]) -> int:
    """How many distinct people ``principal_ids`` stand for: principals whose people
    overlap (an account and the human behind it) count once."""
    groups: list[frozenset[str]] = []
    for principal_id in {p for p in principal_ids if p is not None}:
        merged = people_behind(session, principal_id)
        apart = []
        for group in groups:
            if group & merged:
                merged = merged | group
            else:
                apart.append(group)
        groups = [*apart, merged]
    return len(groups)


def names_of(session: Session, principal_ids: Iterable[str]) -> list[str]:
    """Principal names, people (users) first, for messages."""
    rows = session.execute(
        select(Principal.name, Principal.kind).where(Principal.id.in_(list(principal_ids)))
    ).all()
    return [name for name, kind in sorted(rows, key=lambda r: (r[1] == SERVICE, r[0]))]
