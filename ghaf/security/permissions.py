"""The one table that maps roles to permissions. docs/security.md renders it as a matrix.

Permissions are ``resource:action`` strings. Project roles are ordered
viewer < member < maintainer < owner; each role holds every permission of the roles below
it. ``platform-admin`` is global and holds every permission in every project plus the
platform-wide ones (users, groups, the whole audit trail).
"""

from __future__ import annotations

VIEWER = "viewer"
MEMBER = "member"
MAINTAINER = "maintainer"
OWNER = "owner"
PLATFORM_ADMIN = "platform-admin"

PROJECT_ROLES: tuple[str, ...] = (VIEWER, MEMBER, MAINTAINER, OWNER)
ROLE_RANK: dict[str, int] = {role: rank for rank, role in enumerate(PROJECT_ROLES)}

# What each role adds on top of the role below it.
_GRANTS: dict[str, frozenset[str]] = {
    VIEWER: frozenset(
        {
            "project:read",
            "member:read",
            "artifact:read",
            "dataset:read",
            "feature:read",
            "experiment:read",
            "run:read",
            "model:read",
            "job:read",
            "deployment:read",
            "monitor:read",
        }
    ),
    MEMBER: frozenset(
        {
            "artifact:write",
            "dataset:write",
            "feature:write",
            "experiment:write",
            "run:write",
            "model:write",
            "job:write",
            "monitor:write",
            # Calling a served model (ghaf serve, deployments): members and the service
            # accounts given a member role run the applications that send requests.
            "deployment:invoke",
        }
    ),
    MAINTAINER: frozenset(
        {
            "project:write",
            "member:write",
            "service-account:write",
            "deployment:write",
            # Forcing a request onto a variant of one's choosing (x-ghaf-variant), as
            # the people who run the deployment do when they look into one variant.
            "deployment:debug",
            "model:approve",
            "audit:read",
            "key:read",
            # Re-reading every object of a project is an integrity audit that costs a
            # full read of its storage: not something each viewer may start at will.
            "artifact:verify",
            "artifact:delete",
            "dataset:delete",
            "model:delete",
        }
    ),
    OWNER: frozenset(
        {
            "project:delete",
            "member:grant-owner",
            "policy:write",
            "key:rotate",
            "model:trust",
        }
    ),
}

PLATFORM_PERMISSIONS: frozenset[str] = frozenset(
    {
        "user:read",
        "user:write",
        "group:read",
        "group:write",
        "audit:verify",
        "platform:admin",
        "project:create",
    }
)


def _cumulative() -> dict[str, frozenset[str]]:
    table: dict[str, frozenset[str]] = {}
    held: frozenset[str] = frozenset()
    for role in PROJECT_ROLES:
        held = held | _GRANTS[role]
        table[role] = held
    table[PLATFORM_ADMIN] = held | PLATFORM_PERMISSIONS
    return table


ROLE_PERMISSIONS: dict[str, frozenset[str]] = _cumulative()
ALL_PERMISSIONS: tuple[str, ...] = tuple(sorted(ROLE_PERMISSIONS[PLATFORM_ADMIN]))


def is_read_permission(permission: str) -> bool:
    return permission.endswith(":read")


def highest_role(roles: list[str]) -> str | None:
    """The strongest of several project roles (direct grant plus group grants)."""
    ranked = [role for role in roles if role in ROLE_RANK]
    return max(ranked, key=ROLE_RANK.__getitem__) if ranked else None


def render_matrix() -> str:
    """The roles x permissions table as Markdown (kept in docs/security.md)."""
    roles = [*PROJECT_ROLES, PLATFORM_ADMIN]
    lines = ["| permission | " + " | ".join(roles) + " |", "|---" * (len(roles) + 1) + "|"]
    for permission in ALL_PERMISSIONS:
        marks = ["yes" if permission in ROLE_PERMISSIONS[r] else "" for r in roles]
        lines.append(f"| `{permission}` | " + " | ".join(marks) + " |")
    return "\n".join(lines)


if __name__ == "__main__":
    print(render_matrix())
