"""REST routes for identity: login, whoami, users, groups and the caller's tokens."""

from __future__ import annotations

from fastapi import APIRouter, status

from ghaf.core.paging import DEFAULT_LIMIT, Page
from ghaf.platform.calls import Call, Cursor, PageSize
from ghaf.security import schemas, service

router = APIRouter(tags=["identity"])


@router.post("/auth/login", status_code=status.HTTP_201_CREATED)
async def login(call: Call, body: schemas.LoginRequest) -> schemas.TokenCreated:
    """Exchange a user name and password for a short-lived token."""
    return await call.anonymous(
        service.login,
        body,
        hours=call.settings.login_token_hours,
        guard=call.runtime.login_guard,
    )


@router.get("/whoami")
async def whoami(call: Call) -> schemas.WhoAmI:
    """Who the token authenticates as, its limits and the caller's projects."""
    return await call(service.whoami)


@router.post("/users", status_code=status.HTTP_201_CREATED)
async def create_user(call: Call, body: schemas.UserCreate) -> schemas.PrincipalOut:
    return await call(service.create_user, body)


@router.get("/users")
async def list_users(
    call: Call, page_size: PageSize = DEFAULT_LIMIT, cursor: Cursor = None
) -> Page[schemas.PrincipalOut]:
    items, next_cursor = await call(service.list_users, page_size=page_size, cursor=cursor)
    return Page(items=items, next_cursor=next_cursor)


@router.post("/users/{user}:unlock")
async def unlock_user(call: Call, user: str) -> schemas.PrincipalOut:
    """Lift a user's login lockout (platform admins)."""
    return await call(service.unlock_user, user, guard=call.runtime.login_guard)


@router.get("/users/{user}")
async def get_user(call: Call, user: str) -> schemas.PrincipalOut:
    return await call(service.get_user, user)


@router.delete("/users/{user}", status_code=status.HTTP_204_NO_CONTENT)
async def delete_user(call: Call, user: str) -> None:
    await call(service.delete_user, user)


@router.put("/users/{user}/password", status_code=status.HTTP_204_NO_CONTENT)
async def set_password(call: Call, user: str, body: schemas.PasswordChange) -> None:
    await call(service.set_password, user, body.password)


@router.post("/users/{user}/tokens", status_code=status.HTTP_201_CREATED)
async def create_user_token(
    call: Call, user: str, body: schemas.TokenCreate
) -> schemas.TokenCreated:
    """Mint a token for another user (platform admins)."""
    return await call(service.create_user_token, user, body)


@router.post("/tokens", status_code=status.HTTP_201_CREATED)
async def create_token(call: Call, body: schemas.TokenCreate) -> schemas.TokenCreated:
    """A new token for the caller. The secret is in the response, and only there."""
    return await call(service.create_own_token, body)


@router.get("/tokens")
async def list_tokens(
    call: Call,
    include_revoked: bool = False,
    page_size: PageSize = DEFAULT_LIMIT,
    cursor: Cursor = None,
) -> Page[schemas.TokenOut]:
    """The caller's own tokens, oldest first."""
    items, next_cursor = await call(
        service.list_own_tokens,
        include_revoked=include_revoked,
        page_size=page_size,
        cursor=cursor,
    )
    return Page(items=items, next_cursor=next_cursor)


@router.delete("/tokens/{token}", status_code=status.HTTP_204_NO_CONTENT)
async def revoke_token(call: Call, token: str) -> None:
    """Revoke one of the caller's tokens; it stops working on the next request."""
    await call(service.revoke_own_token, token)


@router.post("/groups", status_code=status.HTTP_201_CREATED)
async def create_group(call: Call, body: schemas.GroupCreate) -> schemas.GroupOut:
    return await call(service.create_group, body)


@router.get("/groups")
async def list_groups(
    call: Call, page_size: PageSize = DEFAULT_LIMIT, cursor: Cursor = None
) -> Page[schemas.GroupOut]:
    items, next_cursor = await call(service.list_groups, page_size=page_size, cursor=cursor)
    return Page(items=items, next_cursor=next_cursor)


@router.get("/groups/{group}")
async def get_group(call: Call, group: str) -> schemas.GroupOut:
    return await call(service.get_group, group)


@router.delete("/groups/{group}", status_code=status.HTTP_204_NO_CONTENT)
async def delete_group(call: Call, group: str) -> None:
    await call(service.delete_group, group)


@router.post("/groups/{group}/members")
async def add_group_member(
    call: Call, group: str, body: schemas.GroupMemberAdd
) -> schemas.GroupOut:
    """Add a user or service account to the group."""
    return await call(service.add_group_member, group, body.member)


@router.delete("/groups/{group}/members/{member}")
async def remove_group_member(call: Call, group: str, member: str) -> schemas.GroupOut:
    return await call(service.remove_group_member, group, member)
