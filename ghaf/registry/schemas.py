"""Request and response bodies of the model registry."""

from __future__ import annotations

from datetime import datetime
from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field, model_validator

from ghaf.core.jsonvalues import JsonFloat, JsonObject
from ghaf.core.names import Name
from ghaf.registry.cards import ModelCard

Status = Literal["pending", "approved", "rejected", "archived"]
SHA256 = Field(pattern=r"^[0-9a-f]{64}$")


class _Strict(BaseModel):
    model_config = ConfigDict(extra="forbid")


class TensorSpec(_Strict):
    """One named tensor of a declared signature (a version's inputs or outputs)."""

    name: str = Field(min_length=1, max_length=250)
    dtype: str = Field(min_length=1, max_length=32)
    shape: list[int]
    allow_nan: bool = Field(
        default=False,
        description="Inputs: serving accepts NaN and infinities here (refused otherwise).",
    )

    def stored(self) -> dict[str, Any]:
        """The entry as a version keeps it: ``allow_nan`` only when true, so signatures
        that do not use it are stored and answered exactly as before it existed."""
        return self.model_dump(exclude=None if self.allow_nan else {"allow_nan"})


class ModelCreate(_Strict):
    name: Name
    description: str = Field(default="", max_length=2000)


class ModelOut(BaseModel):
    name: str
    project: str
    description: str
    created_at: datetime
    created_by: str | None = None
    latest_version: int | None = None
    aliases: dict[str, int] = Field(default_factory=dict)


class UploadedFile(_Strict):
    sha256: str = SHA256
    size: int = Field(ge=0, le=2**63 - 1)
    filename: str = Field(min_length=1, max_length=255)


class RunSource(_Strict):
    run: str = Field(min_length=8, max_length=36)
    artifact: str = Field(default="model/model.skops", min_length=1, max_length=1024)


class VersionCreate(_Strict):
    """A new version from an uploaded file (``file``) or a run's artifact (``run``)."""

    file: UploadedFile | None = None
    run: RunSource | None = None
    link_run: str | None = Field(
        default=None, description="With file: the run that trained it (lineage, metrics)."
    )
    sample: JsonObject | None = Field(
        default=None,
        description="Named tensors {name: {dtype, shape, data}}; a run's model/sample.npz "
        "when omitted.",
    )
    inputs: list[TensorSpec] | None = Field(default=None, description="Inferred when omitted.")
    outputs: list[TensorSpec] | None = None
    description: str = Field(default="", max_length=2000)
    tags: dict[str, str] = Field(default_factory=dict, max_length=100)
    card: ModelCard | None = None
    convert_onnx: bool = False

    @model_validator(mode="after")
    def _one_source(self) -> VersionCreate:
        if (self.file is None) == (self.run is None):
            raise ValueError("give exactly one of file (an uploaded file) or run")
        if self.run is not None and self.link_run is not None:
            raise ValueError("link_run is only for file sources; run already links one")
        return self


class Conversion(BaseModel):
    sha256: str
    size: int
    output: str | None = None
    max_abs_diff: float | None = None
    rtol: float
    atol: float


class VersionOut(BaseModel):
    id: str
    project: str
    model: str
    version: int
    status: Status
    description: str
    tags: dict[str, str]
    format: str
    filename: str
    size: int
    sha256: str
    run: str | None = None
    source: str
    inputs: list[dict[str, Any]]
    outputs: list[dict[str, Any]]
    checks: dict[str, Any] = Field(default_factory=dict)
    onnx: Conversion | None = None
    card: ModelCard
    aliases: list[str] = Field(default_factory=list)
    approvals: int = 0
    approvals_required: int = 1
    gates: dict[str, Any] | None = None
    created_at: datetime
    created_by: str | None = None
    updated_at: datetime


class VersionUpdate(_Strict):
    description: str | None = Field(default=None, max_length=2000)
    tags: dict[str, str] | None = Field(default=None, max_length=100)
    status: Literal["archived"] | None = Field(
        default=None, description="Archive a version; approval goes through reviews."
    )


class AliasSet(_Strict):
    version: int = Field(ge=1)


class AliasOut(BaseModel):
    model: str
    alias: str
    version: int
    previous: int | None = None
    updated_by: str | None = None
    updated_at: datetime


class ReviewCreate(_Strict):
    comment: str = Field(default="", max_length=4000)


class ReviewOut(BaseModel):
    kind: Literal["request", "approve", "reject"]
    principal: str | None
    comment: str
    created_at: datetime


class GateResult(BaseModel):
    rule: str
    kind: str
    passed: bool
    measured: JsonFloat | str | None = None
    expected: str
    detail: str = ""


class GateReport(BaseModel):
    model: str
    version: int
    passed: bool
    policy_sha256: str
    results: list[GateResult]
    checked_at: datetime
    checked_by: str | None = None


class PolicyIn(_Strict):
    text: str = Field(max_length=100_000, description="The policy as YAML.")


class PolicyOut(BaseModel):
    project: str
    text: str
    policy: dict[str, Any]
    sha256: str
    updated_at: datetime | None = None
    updated_by: str | None = None


class LineageOut(BaseModel):
    model: str
    version: int
    run: dict[str, Any] | None = None
    datasets: list[dict[str, Any]] = Field(default_factory=list)
    aliases: list[str] = Field(default_factory=list)
    onnx: dict[str, Any] | None = None
    deployments: list[dict[str, Any]] = Field(default_factory=list)


class CardOut(BaseModel):
    model: str
    version: int
    card: ModelCard
    missing: list[str]
    markdown: str
    html: str
