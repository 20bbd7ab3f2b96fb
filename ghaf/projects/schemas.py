"""Request and response shapes for projects, members and service accounts."""

from __future__ import annotations

from datetime import datetime
from typing import Literal

from pydantic import BaseModel, ConfigDict, Field, model_validator

from ghaf.core.names import Name

Role = Literal["viewer", "member", "maintainer", "owner"]


class _Strict(BaseModel):
    model_config = ConfigDict(extra="forbid")


class ProjectCreate(_Strict):
    name: Name
    description: str = Field(default="", max_length=2000)
    allowed_regions: list[Name] | None = Field(
        default=None,
        max_length=50,
        description="Regions where this project's data and compute may live; "
        "defaults to the installation's region.",
    )


class ProjectUpdate(_Strict):
    description: str | None = Field(default=None, max_length=2000)
    allowed_regions: list[Name] | None = Field(default=None, min_length=1, max_length=50)


class ProjectOut(BaseModel):
    id: str
    name: str
    description: str
    allowed_regions: list[str]
    role: str | None = Field(default=None, description="The caller's effective role.")
    created_at: datetime
    deleted_at: datetime | None = None
    purge_after: datetime | None = None


class MemberAdd(_Strict):
    principal: Name | None = None
    group: Name | None = None
    role: Role

    @model_validator(mode="after")
    def _exactly_one(self) -> MemberAdd:
        if (self.principal is None) == (self.group is None):
            raise ValueError("give exactly one of principal or group")
        return self


class RoleChange(_Strict):
    role: Role


class MemberOut(BaseModel):
    subject: str = Field(description="A principal name, or 'group:NAME' for a group.")
    kind: Literal["user", "service", "group"]
    role: str
    created_at: datetime


class ServiceAccountCreate(_Strict):
    name: Name
    role: Role = "member"
