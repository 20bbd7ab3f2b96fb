"""REST routes for projects, members and service accounts (thin: logic is in service)."""

from __future__ import annotations

from fastapi import APIRouter, status

from ghaf.core.paging import Page
from ghaf.projects import schemas, service
from ghaf.security import schemas as security_schemas
from ghaf.server.dependencies import DEFAULT_PAGE, Ctx, Cursor, Limit, SettingsDep

router = APIRouter(tags=["projects"])


@router.post("/projects", status_code=status.HTTP_201_CREATED)
def create_project(
    ctx: Ctx, settings: SettingsDep, body: schemas.ProjectCreate
) -> schemas.ProjectOut:
    return service.create_project(ctx, body, default_region=settings.region)


@router.get("/projects")
def list_projects(
    ctx: Ctx, limit: Limit = DEFAULT_PAGE, cursor: Cursor = None, deleted: bool = False
) -> Page[schemas.ProjectOut]:
    """Projects the caller can see; ``deleted=true`` lists those awaiting purge."""
    items, next_cursor = service.list_projects(ctx, limit=limit, cursor=cursor, deleted=deleted)
    return Page(items=items, next_cursor=next_cursor)


@router.get("/projects/{name}")
def get_project(ctx: Ctx, name: str) -> schemas.ProjectOut:
    return service.get_project(ctx, name)


@router.delete("/projects/{name}")
def delete_project(ctx: Ctx, settings: SettingsDep, name: str) -> schemas.ProjectOut:
    """Soft-delete; restorable until ``purge_after``."""
    return service.delete_project(ctx, name, retention_days=settings.project_retention_days)


@router.post("/projects/{name}/restore")
def restore_project(ctx: Ctx, name: str) -> schemas.ProjectOut:
    return service.restore_project(ctx, name)


@router.post("/admin/purge")
def purge_projects(ctx: Ctx) -> dict[str, list[str]]:
    """Remove deleted projects whose retention period has passed (platform admins)."""
    return {"purged": service.purge_projects(ctx)}


@router.get("/projects/{name}/members")
def list_members(ctx: Ctx, name: str) -> list[schemas.MemberOut]:
    return service.list_members(ctx, name)


@router.post("/projects/{name}/members", status_code=status.HTTP_201_CREATED)
def add_member(ctx: Ctx, name: str, body: schemas.MemberAdd) -> schemas.MemberOut:
    return service.add_member(ctx, name, body)


@router.patch("/projects/{name}/members/{subject}")
def set_member_role(
    ctx: Ctx, name: str, subject: str, body: schemas.RoleChange
) -> schemas.MemberOut:
    """``subject`` is a principal name, or ``group:NAME``."""
    return service.set_member_role(ctx, name, subject, body)


@router.delete("/projects/{name}/members/{subject}", status_code=status.HTTP_204_NO_CONTENT)
def remove_member(ctx: Ctx, name: str, subject: str) -> None:
    service.remove_member(ctx, name, subject)


@router.get("/projects/{name}/service-accounts")
def list_service_accounts(ctx: Ctx, name: str) -> list[security_schemas.PrincipalOut]:
    return service.list_service_accounts(ctx, name)


@router.post("/projects/{name}/service-accounts", status_code=status.HTTP_201_CREATED)
def create_service_account(
    ctx: Ctx, name: str, body: schemas.ServiceAccountCreate
) -> security_schemas.PrincipalOut:
    return service.create_service_account(ctx, name, body)


@router.delete(
    "/projects/{name}/service-accounts/{account}", status_code=status.HTTP_204_NO_CONTENT
)
def delete_service_account(ctx: Ctx, name: str, account: str) -> None:
    service.delete_service_account(ctx, name, account)


@router.post(
    "/projects/{name}/service-accounts/{account}/tokens", status_code=status.HTTP_201_CREATED
)
def create_service_account_token(
    ctx: Ctx, name: str, account: str, body: security_schemas.TokenCreate
) -> security_schemas.TokenCreated:
    return service.create_service_account_token(ctx, name, account, body)


@router.get("/projects/{name}/service-accounts/{account}/tokens")
def list_service_account_tokens(
    ctx: Ctx, name: str, account: str
) -> list[security_schemas.TokenOut]:
    return service.list_service_account_tokens(ctx, name, account)


@router.delete(
    "/projects/{name}/service-accounts/{account}/tokens/{token}",
    status_code=status.HTTP_204_NO_CONTENT,
)
def revoke_service_account_token(ctx: Ctx, name: str, account: str, token: str) -> None:
    service.revoke_service_account_token(ctx, name, account, token)
