"""Request and response shapes for datasets and their versions."""

from __future__ import annotations

from datetime import datetime
from typing import Any

from pydantic import BaseModel, ConfigDict, Field

from ghaf.core.names import Name
from ghaf.storage.schemas import SHA256_PATTERN

MAX_MANIFEST = 1_000_000


class _Strict(BaseModel):
    model_config = ConfigDict(extra="forbid")


class DatasetCreate(_Strict):
    name: Name
    description: str = Field(default="", max_length=2000)


class DatasetOut(BaseModel):
    id: str
    project: str
    name: str
    description: str
    latest: int | None = None
    created_at: datetime
    created_by: str | None = None


class ManifestEntry(_Strict):
    path: str = Field(min_length=1, max_length=1024)
    size: int = Field(ge=0)
    sha256: str = Field(pattern=SHA256_PATTERN)


class VersionCreate(_Strict):
    files: list[ManifestEntry] = Field(min_length=1, max_length=MAX_MANIFEST)
    description: str = Field(default="", max_length=2000)
    provenance: dict[str, Any] = Field(default_factory=dict)


class VersionOut(BaseModel):
    dataset: str
    version: int
    parent: int | None
    description: str
    file_count: int
    total_bytes: int
    manifest_sha256: str
    provenance: dict[str, Any]
    tags: list[str] = []
    created_at: datetime
    created_by: str | None = None


class TagSet(_Strict):
    version: int = Field(ge=1)
