"""Request and response shapes of the artifact store."""

from __future__ import annotations

from datetime import datetime

from pydantic import BaseModel, ConfigDict, Field

SHA256_PATTERN = r"^[0-9a-f]{64}$"


class ArtifactOut(BaseModel):
    id: str
    project: str
    path: str
    size: int
    sha256: str
    region: str
    created_at: datetime
    created_by: str | None = None


class ArtifactLink(BaseModel):
    """Create an artifact from content the project already stores (no upload)."""

    model_config = ConfigDict(extra="forbid")
    path: str = Field(min_length=1, max_length=1024)
    sha256: str = Field(pattern=SHA256_PATTERN)
    overwrite: bool = False


class BlobOut(BaseModel):
    sha256: str
    size: int
    region: str


class PackOut(BaseModel):
    """What one pack upload stored."""

    members: int
    stored: int = Field(description="Members the project did not hold before.")
    deduplicated: int = Field(description="Members it already held (stored once).")
    bytes: int
    region: str


class BlobQuery(BaseModel):
    model_config = ConfigDict(extra="forbid")
    sha256: list[str] = Field(max_length=100_000)


class BlobPresence(BaseModel):
    present: list[str]
    missing: list[str]


class VerifyProblem(BaseModel):
    object_id: str | None = None
    key: str | None = None
    paths: list[str] = []
    problem: str


class StorageVerifyResult(BaseModel):
    ok: bool
    checked: int
    bytes_checked: int
    missing: list[VerifyProblem] = []
    corrupt: list[VerifyProblem] = []
    orphaned: list[VerifyProblem] = []


class KeyVersionOut(BaseModel):
    version: int
    objects: int
    current: bool


class KeysOut(BaseModel):
    """One page of a project's key versions (oldest first), with its rotation state."""

    project: str
    items: list[KeyVersionOut]
    next_cursor: str | None = None
    pending_rewrap: int = Field(description="Objects not yet re-wrapped to the newest version.")


class RotationResult(BaseModel):
    project: str
    version: int
    rewrapped: int
    resumed: bool
    complete: bool
