"""REST routes for identity: login, whoami, users, groups and the caller's tokens."""

from __future__ import annotations

from fastapi import APIRouter, status

from ghaf.core.paging import Page
from ghaf.security import schemas, service
from ghaf.server.dependencies import DEFAULT_PAGE, AnonymousCtx, Ctx, Cursor, Limit, SettingsDep

router = APIRouter(tags=["identity"])


@router.post("/auth/login", status_code=status.HTTP_201_CREATED)
def login(
    ctx: AnonymousCtx, settings: SettingsDep, body: schemas.LoginRequest
) -> schemas.TokenCreated:
    """Exchange a user name and password for a short-lived token."""
    return service.login(ctx, body, hours=settings.login_token_hours)


@router.get("/whoami")
def whoami(ctx: Ctx) -> schemas.WhoAmI:
    return service.whoami(ctx)


@router.post("/users", status_code=status.HTTP_201_CREATED)
def create_user(ctx: Ctx, body: schemas.UserCreate) -> schemas.PrincipalOut:
    return service.create_user(ctx, body)


@router.get("/users")
def list_users(
    ctx: Ctx, limit: Limit = DEFAULT_PAGE, cursor: Cursor = None
) -> Page[schemas.PrincipalOut]:
    items, next_cursor = service.list_users(ctx, limit=limit, cursor=cursor)
    return Page(items=items, next_cursor=next_cursor)


@router.get("/users/{name}")
def get_user(ctx: Ctx, name: str) -> schemas.PrincipalOut:
    return service.get_user(ctx, name)


@router.delete("/users/{name}", status_code=status.HTTP_204_NO_CONTENT)
def delete_user(ctx: Ctx, name: str) -> None:
    service.delete_user(ctx, name)


@router.put("/users/{name}/password", status_code=status.HTTP_204_NO_CONTENT)
def set_password(ctx: Ctx, name: str, body: schemas.PasswordChange) -> None:
    service.set_password(ctx, name, body.password)


@router.post("/users/{name}/tokens", status_code=status.HTTP_201_CREATED)
def create_user_token(ctx: Ctx, name: str, body: schemas.TokenCreate) -> schemas.TokenCreated:
    """Mint a token for another user (platform admins)."""
    return service.create_user_token(ctx, name, body)


@router.post("/tokens", status_code=status.HTTP_201_CREATED)
def create_token(ctx: Ctx, body: schemas.TokenCreate) -> schemas.TokenCreated:
    """A new token for the caller. The secret is in the response, and only there."""
    return service.create_own_token(ctx, body)


@router.get("/tokens")
def list_tokens(ctx: Ctx, include_revoked: bool = False) -> list[schemas.TokenOut]:
    return service.list_own_tokens(ctx, include_revoked=include_revoked)


@router.delete("/tokens/{name}", status_code=status.HTTP_204_NO_CONTENT)
def revoke_token(ctx: Ctx, name: str) -> None:
    service.revoke_own_token(ctx, name)


@router.post("/groups", status_code=status.HTTP_201_CREATED)
def create_group(ctx: Ctx, body: schemas.GroupCreate) -> schemas.GroupOut:
    return service.create_group(ctx, body)


@router.get("/groups")
def list_groups(
    ctx: Ctx, limit: Limit = DEFAULT_PAGE, cursor: Cursor = None
) -> Page[schemas.GroupOut]:
    items, next_cursor = service.list_groups(ctx, limit=limit, cursor=cursor)
    return Page(items=items, next_cursor=next_cursor)


@router.get("/groups/{name}")
def get_group(ctx: Ctx, name: str) -> schemas.GroupOut:
    return service.get_group(ctx, name)


@router.delete("/groups/{name}", status_code=status.HTTP_204_NO_CONTENT)
def delete_group(ctx: Ctx, name: str) -> None:
    service.delete_group(ctx, name)


@router.post("/groups/{name}/members")
def add_group_member(ctx: Ctx, name: str, body: schemas.GroupMemberAdd) -> schemas.GroupOut:
    return service.add_group_member(ctx, name, body.principal)


@router.delete("/groups/{name}/members/{principal}")
def remove_group_member(ctx: Ctx, name: str, principal: str) -> schemas.GroupOut:
    return service.remove_group_member(ctx, name, principal)
