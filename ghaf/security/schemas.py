"""Request and response shapes for users, service accounts, groups and tokens."""

from __future__ import annotations

from datetime import datetime

from pydantic import BaseModel, ConfigDict, Field

from ghaf.core.names import Name


class _Strict(BaseModel):
    model_config = ConfigDict(extra="forbid")


class UserCreate(_Strict):
    name: Name
    email: str | None = Field(default=None, max_length=320)
    password: str | None = Field(default=None, min_length=1, max_length=1024)
    platform_admin: bool = False


class PasswordChange(_Strict):
    password: str = Field(min_length=1, max_length=1024)


class PrincipalOut(BaseModel):
    id: str
    name: str
    kind: str
    email: str | None = None
    platform_admin: bool = False
    project: str | None = None
    created_at: datetime
    locked_until: datetime | None = Field(
        default=None, description="Set while repeated failed logins keep the user locked out."
    )


class WhoAmI(BaseModel):
    id: str
    name: str
    kind: str
    platform_admin: bool
    token_name: str | None = None
    token_project: str | None = None
    read_only: bool = False
    projects: dict[str, str] = {}


class GroupCreate(_Strict):
    name: Name
    description: str = Field(default="", max_length=1000)


class GroupMemberAdd(_Strict):
    member: Name = Field(description="The user or service account to add.")


class GroupOut(BaseModel):
    id: str
    name: str
    description: str
    members: list[str] = []
    created_at: datetime


class TokenCreate(_Strict):
    name: Name
    project: Name | None = Field(default=None, description="Limit the token to one project.")
    read_only: bool = False
    expires_in_days: float | None = Field(default=None, gt=0, le=3650)


class TokenOut(BaseModel):
    id: str
    name: str
    principal: str
    hint: str
    project: str | None = None
    read_only: bool
    expires_at: datetime | None = None
    created_at: datetime
    revoked_at: datetime | None = None


class TokenCreated(TokenOut):
    token: str = Field(description="The secret. Shown once; store it now.")


class LoginRequest(_Strict):
    name: str = Field(min_length=1, max_length=64)
    password: str = Field(min_length=1, max_length=1024)
