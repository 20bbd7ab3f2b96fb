"""REST routes for identity: login, whoami, users, groups and the caller's tokens."""

from __future__ import annotations

from fastapi import APIRouter, status

from ghaf.core.paging import Page
from ghaf.platform.calls import DEFAULT_PAGE, Call, Cursor, Limit
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
    return await call(service.whoami)


@router.post("/users", status_code=status.HTTP_201_CREATED)
async def create_user(call: Call, body: schemas.UserCreate) -> schemas.PrincipalOut:
    return await call(service.create_user, body)


@router.get("/users")
async def list_users(
    call: Call, limit: Limit = DEFAULT_PAGE, cursor: Cursor = None
) -> Page[schemas.PrincipalOut]:
    items, next_cursor = await call(service.list_users, limit=limit, cursor=cursor)
    return Page(items=items, next_cursor=next_cursor)


@router.get("/users/{name}")
async def get_user(call: Call, name: str) -> schemas.PrincipalOut:
    return await call(service.get_user, name)


@router.delete("/users/{name}", status_code=status.HTTP_204_NO_CONTENT)
async def delete_user(call: Call, name: str) -> None:
    await call(service.delete_user, name)


@router.put("/users/{name}/password", status_code=status.HTTP_204_NO_CONTENT)
async def set_password(call: Call, name: str, body: schemas.PasswordChange) -> None:
    await call(service.set_password, name, body.password)


@router.post("/users/{name}/unlock")
async def unlock_user(call: Call, name: str) -> schemas.PrincipalOut:
    """Lift a user's login lockout (platform admins)."""
    return await call(service.unlock_user, name, guard=call.runtime.login_guard)


@router.post("/users/{name}/tokens", status_code=status.HTTP_201_CREATED)
async def create_user_token(
    call: Call, name: str, body: schemas.TokenCreate
) -> schemas.TokenCreated:
    """Mint a token for another user (platform admins)."""
    return await call(service.create_user_token, name, body)


@router.post("/tokens", status_code=status.HTTP_201_CREATED)
async def create_token(call: Call, body: schemas.TokenCreate) -> schemas.TokenCreated:
    """A new token for the caller. The secret is in the response, and only there."""
    return await call(service.create_own_token, body)


@router.get("/tokens")
async def list_tokens(call: Call, include_revoked: bool = False) -> list[schemas.TokenOut]:
    return await call(service.list_own_tokens, include_revoked=include_revoked)


@router.delete("/tokens/{name}", status_code=status.HTTP_204_NO_CONTENT)
async def revoke_token(call: Call, name: str) -> None:
    await call(service.revoke_own_token, name)


@router.post("/groups", status_code=status.HTTP_201_CREATED)
async def create_group(call: Call, body: schemas.GroupCreate) -> schemas.GroupOut:
    return await call(service.create_group, body)


@router.get("/groups")
async def list_groups(
    call: Call, limit: Limit = DEFAULT_PAGE, cursor: Cursor = None
) -> Page[schemas.GroupOut]:
    items, next_cursor = await call(service.list_groups, limit=limit, cursor=cursor)
    return Page(items=items, next_cursor=next_cursor)


@router.get("/groups/{name}")
async def get_group(call: Call, name: str) -> schemas.GroupOut:
    return await call(service.get_group, name)


@router.delete("/groups/{name}", status_code=status.HTTP_204_NO_CONTENT)
async def delete_group(call: Call, name: str) -> None:
    await call(service.delete_group, name)


@router.post("/groups/{name}/members")
async def add_group_member(call: Call, name: str, body: schemas.GroupMemberAdd) -> schemas.GroupOut:
    return await call(service.add_group_member, name, body.principal)


@router.delete("/groups/{name}/members/{principal}")
async def remove_group_member(call: Call, name: str, principal: str) -> schemas.GroupOut:
    return await call(service.remove_group_member, name, principal)
