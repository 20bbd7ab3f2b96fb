"""REST routes for projects, members and service accounts (thin: logic is in service)."""

from __future__ import annotations

from fastapi import APIRouter, Response, status

from ghaf.core.paging import Page
from ghaf.platform.calls import DEFAULT_PAGE, Call, Cursor, PageSize, json_response
from ghaf.projects import flows, schemas, service
from ghaf.security import schemas as security_schemas

router = APIRouter(tags=["projects"])


@router.post("/projects", status_code=status.HTTP_201_CREATED)
async def create_project(call: Call, body: schemas.ProjectCreate) -> schemas.ProjectOut:
    return await call(service.create_project, body, default_region=call.settings.region)


@router.get("/projects")
async def list_projects(
    call: Call, page_size: PageSize = DEFAULT_PAGE, cursor: Cursor = None, deleted: bool = False
) -> Page[schemas.ProjectOut]:
    """Projects the caller can see; ``deleted=true`` lists those awaiting purge."""
    items, next_cursor = await call(
        service.list_projects, limit=page_size, cursor=cursor, deleted=deleted
    )
    return Page(items=items, next_cursor=next_cursor)


@router.post("/projects:purge")
async def purge_projects(call: Call) -> dict[str, list[str]]:
    """Remove deleted projects whose retention period has passed (platform admins)."""
    return {"purged": await call(flows.purge)}


@router.get("/projects/{project}", response_model=schemas.ProjectOut)
async def get_project(call: Call, project: str) -> Response:
    """Also a hot route (the projects manifest): served before FastAPI's routing."""
    return json_response(await call(service.get_project, project))


@router.patch("/projects/{project}")
async def update_project(
    call: Call, project: str, body: schemas.ProjectUpdate
) -> schemas.ProjectOut:
    """Change the description, or (owners) the regions where the project's data may live."""
    return await call(service.update_project, project, body)


@router.delete("/projects/{project}")
async def delete_project(call: Call, project: str) -> schemas.ProjectOut:
    """Soft-delete; restorable until ``purge_after``."""
    return await call(
        service.delete_project, project, retention_days=call.settings.project_retention_days
    )


@router.post("/projects/{project}:restore")
async def restore_project(call: Call, project: str) -> schemas.ProjectOut:
    """Undo a delete before the project is purged (owners)."""
    return await call(service.restore_project, project)


@router.get("/projects/{project}/members")
async def list_members(
    call: Call, project: str, page_size: PageSize = DEFAULT_PAGE, cursor: Cursor = None
) -> Page[schemas.MemberOut]:
    items, next_cursor = await call(service.list_members, project, limit=page_size, cursor=cursor)
    return Page(items=items, next_cursor=next_cursor)


@router.post("/projects/{project}/members", status_code=status.HTTP_201_CREATED)
async def add_member(call: Call, project: str, body: schemas.MemberAdd) -> schemas.MemberOut:
    return await call(service.add_member, project, body)


@router.patch("/projects/{project}/members/{member}")
async def update_member(
    call: Call, project: str, member: str, body: schemas.RoleChange
) -> schemas.MemberOut:
    """``member`` is a principal name, or ``group:NAME``."""
    return await call(service.update_member, project, member, body)


@router.delete("/projects/{project}/members/{member}", status_code=status.HTTP_204_NO_CONTENT)
async def remove_member(call: Call, project: str, member: str) -> None:
    await call(service.remove_member, project, member)


@router.get("/projects/{project}/service-accounts")
async def list_service_accounts(
    call: Call, project: str, page_size: PageSize = DEFAULT_PAGE, cursor: Cursor = None
) -> Page[security_schemas.PrincipalOut]:
    items, next_cursor = await call(
        service.list_service_accounts, project, limit=page_size, cursor=cursor
    )
    return Page(items=items, next_cursor=next_cursor)


@router.post("/projects/{project}/service-accounts", status_code=status.HTTP_201_CREATED)
async def create_service_account(
    call: Call, project: str, body: schemas.ServiceAccountCreate
) -> security_schemas.PrincipalOut:
    return await call(service.create_service_account, project, body)


@router.delete(
    "/projects/{project}/service-accounts/{account}", status_code=status.HTTP_204_NO_CONTENT
)
async def delete_service_account(call: Call, project: str, account: str) -> None:
    await call(service.delete_service_account, project, account)


@router.post(
    "/projects/{project}/service-accounts/{account}/tokens", status_code=status.HTTP_201_CREATED
)
async def create_service_account_token(
    call: Call, project: str, account: str, body: security_schemas.TokenCreate
) -> security_schemas.TokenCreated:
    return await call(service.create_service_account_token, project, account, body)


@router.get("/projects/{project}/service-accounts/{account}/tokens")
async def list_service_account_tokens(
    call: Call,
    project: str,
    account: str,
    page_size: PageSize = DEFAULT_PAGE,
    cursor: Cursor = None,
) -> Page[security_schemas.TokenOut]:
    items, next_cursor = await call(
        service.list_service_account_tokens, project, account, limit=page_size, cursor=cursor
    )
    return Page(items=items, next_cursor=next_cursor)


@router.delete(
    "/projects/{project}/service-accounts/{account}/tokens/{token}",
    status_code=status.HTTP_204_NO_CONTENT,
)
async def revoke_service_account_token(call: Call, project: str, account: str, token: str) -> None:
    await call(service.revoke_service_account_token, project, account, token)
