"""Request and response shapes for datasets and their versions."""

from __future__ import annotations

from datetime import datetime
from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field

from ghaf.core.jsonvalues import JsonObject
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
    size: int = Field(ge=0, le=2**63 - 1)
    sha256: str = Field(pattern=SHA256_PATTERN)
    uri: str | None = Field(
        default=None,
        max_length=2048,
        description="For external references: s3://... or file:///...",
    )


class TableInfo(_Strict):
    """For a tabular version: its Arrow schema and statistics profile."""

    table_schema: list[JsonObject] = Field(max_length=10_000)
    profile: JsonObject


class VersionCreate(_Strict):
    files: list[ManifestEntry] = Field(
        default_factory=list,
        max_length=MAX_MANIFEST,
        description="Every file of the version; with `base`, only those added or changed.",
    )
    base: int | None = Field(
        default=None,
        ge=1,
        description="Send the changes since this version instead of the whole manifest: "
        "it becomes the new version's parent.",
    )
    removed: list[str] = Field(
        default_factory=list,
        max_length=MAX_MANIFEST,
        description="With `base`: paths of the base version that the new one drops.",
    )
    base_manifest_sha256: str | None = Field(
        default=None,
        pattern=SHA256_PATTERN,
        description="With `base`, required: the base version's manifest hash as the "
        "sender knows it, so changes never land on a different version of that number.",
    )
    table: TableInfo | None = None
    description: str = Field(default="", max_length=2000)
    provenance: JsonObject = Field(default_factory=dict)


class VersionOut(BaseModel):
    dataset: str
    version: int
    parent: int | None
    description: str
    file_count: int
    total_bytes: int
    manifest_sha256: str
    provenance: dict[str, Any]
    external: bool = Field(default=False, description="Files are referenced, not stored.")
    row_count: int | None = None
    table_schema: list[dict[str, Any]] | None = None
    profile: dict[str, Any] | None = None
    classifications: dict[str, str] = {}
    aliases: list[str] = Field(
        default=[], description="Aliases naming this version, `latest` included."
    )
    created_at: datetime
    created_by: str | None = None


class AliasSet(_Strict):
    version: int = Field(ge=1)


class AliasOut(BaseModel):
    """Where an alias points now, and where it pointed before this change."""

    dataset: str
    alias: str
    version: int
    previous: int | None = None
    updated_by: str | None = None
    updated_at: datetime


Classification = Literal["public", "internal", "pii", "sensitive"]


class ClassificationSet(_Strict):
    classification: Classification


class SchemaChange(BaseModel):
    column: str
    change: Literal["added", "removed", "retyped"]
    before: str | None = None
    after: str | None = None


class StatShift(BaseModel):
    column: str
    score: float = Field(
        description="Mean shift in old standard deviations, plus the change in null rate."
    )
    before: dict[str, Any]
    after: dict[str, Any]


class VersionDiff(BaseModel):
    dataset: str
    before: int
    after: int
    added: list[str]
    removed: list[str]
    changed: list[str]
    schema_changes: list[SchemaChange] = []
    rows_before: int | None = None
    rows_after: int | None = None
    moved_columns: list[StatShift] = []


class Lineage(BaseModel):
    dataset: str
    version: int
    parents: list[int]
    consumers: list[dict[str, str]]
