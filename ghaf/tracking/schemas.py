"""Request and response shapes for experiments, runs and their logs."""

from __future__ import annotations

from datetime import datetime
from typing import Annotated, Any, Literal

from pydantic import BaseModel, ConfigDict, Field

from ghaf.core.jsonvalues import JsonFloat, JsonObject
from ghaf.core.names import Name
from ghaf.core.paging import DEFAULT_LIMIT, MAX_LIMIT
from ghaf.storage.schemas import SHA256_PATTERN

MAX_PARAM_VALUE = 8000
MAX_NOTE = 100_000


INT64_MAX = 2**63 - 1
Int64 = Annotated[int, Field(ge=-INT64_MAX - 1, le=INT64_MAX)]
"""An integer the database stores (64-bit); a larger one is refused naming its field."""

Status = Literal["running", "finished", "failed", "killed"]
EndStatus = Literal["finished", "failed", "killed"]


class _Strict(BaseModel):
    model_config = ConfigDict(extra="forbid")


class ExperimentCreate(_Strict):
    name: Name
    description: str = Field(default="", max_length=2000)


class ExperimentOut(BaseModel):
    id: str
    project: str
    name: str
    description: str
    created_at: datetime
    created_by: str | None = None


class RunCreate(_Strict):
    id: str | None = Field(
        default=None,
        pattern=r"^[0-9a-f]{8}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{12}$",
        description="A client-chosen UUID (the SDK sends a UUIDv7); creating it again is a "
        "no-op, so a spooled run can be replayed.",
    )
    name: str | None = Field(default=None, max_length=128)
    note: str = Field(default="", max_length=MAX_NOTE)
    tags: dict[str, str] = Field(default_factory=dict, max_length=1000)
    provenance: JsonObject = Field(default_factory=dict)
    start_time: datetime | None = None
    create_experiment: bool = Field(
        default=True, description="Create the experiment if the project has none by that name."
    )


class RunUpdate(_Strict):
    name: str | None = Field(default=None, max_length=128)
    note: str | None = Field(default=None, max_length=MAX_NOTE)
    status: EndStatus | None = Field(default=None, description="End the run.")
    end_time: datetime | None = None


class MetricColumns(_Strict):
    """Points as columns; all four lists have the same length."""

    key: list[str]
    value: list[JsonFloat]
    step: list[Int64]
    timestamp: list[Int64] = Field(description="Milliseconds since the epoch, UTC.")


class LogRequest(_Strict):
    """One batch of a run's log (the JSON form; the SDK sends Arrow IPC, see docs)."""

    seq: int | None = Field(
        default=None,
        ge=0,
        le=INT64_MAX,
        description="Batch number; a batch already applied is skipped.",
    )
    params: JsonObject = Field(default_factory=dict)
    tags: dict[str, str] = Field(default_factory=dict)
    metrics: MetricColumns | None = None
    status: EndStatus | None = Field(default=None, description="End the run after this batch.")
    end_time: datetime | None = None


class LogResult(BaseModel):
    run_id: str
    seq: int | None = None
    applied: bool = Field(description="False when this batch number was applied before.")
    points: int
    status: Status


class RunInputOut(BaseModel):
    dataset: str
    version: int


class RunOut(BaseModel):
    id: str
    project: str
    experiment: str
    name: str
    status: Status
    status_reason: str | None = None
    note: str = ""
    start_time: datetime
    end_time: datetime | None = None
    heartbeat_at: datetime | None = None
    created_by: str | None = None
    provenance: dict[str, Any] = Field(default_factory=dict)
    params: dict[str, str] = Field(default_factory=dict)
    metrics: dict[str, JsonFloat] = Field(
        default_factory=dict, description="Each metric's latest value."
    )
    tags: dict[str, str] = Field(default_factory=dict)
    inputs: list[RunInputOut] = Field(default_factory=list)
    deleted: bool = False
    heartbeat_timeout_s: float | None = None


class SearchRequest(_Strict):
    experiments: list[Name] = Field(
        default_factory=list, max_length=100, description="Empty means every experiment."
    )
    filter: str = Field(default="", max_length=10_000, description="See docs/tracking.md.")
    order_by: list[str] = Field(default_factory=list, max_length=10)
    page_size: int = Field(default=DEFAULT_LIMIT, ge=1, le=MAX_LIMIT, description="Page size.")
    cursor: str | None = Field(default=None, description="next_cursor of the previous page.")
    include_deleted: bool = False


class MetricHistory(BaseModel):
    """Points as columns, ordered by key, step and time."""

    run_id: str
    key: list[str]
    step: list[int]
    value: list[JsonFloat]
    timestamp: list[int]


class ArtifactAdd(_Strict):
    path: str = Field(min_length=1, max_length=1024)
    sha256: str = Field(pattern=SHA256_PATTERN)
    size: int = Field(ge=0, le=INT64_MAX)


class RunArtifactOut(BaseModel):
    path: str
    size: int
    sha256: str
    created_at: datetime


class InputAdd(_Strict):
    dataset: Name
    version: int | str = Field(description="A version number, 'latest' or an alias.")
