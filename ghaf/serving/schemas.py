"""Response shapes of the serving routes (Open Inference Protocol v2 metadata) and of the
platform's invoke check. Infer bodies are parsed by hand (ghaf/serving/tensors.py): they
are the hot path, and their errors must name the tensor that is wrong."""

from __future__ import annotations

from typing import Any

from pydantic import BaseModel, Field


class TensorMetadata(BaseModel):
    name: str
    datatype: str
    shape: list[int]


class ServerMetadata(BaseModel):
    name: str = "ghaf"
    version: str
    extensions: list[str] = Field(default_factory=list)


class ModelMetadata(BaseModel):
    name: str
    versions: list[str]
    platform: str
    inputs: list[TensorMetadata]
    outputs: list[TensorMetadata] = Field(default_factory=list)
    parameters: dict[str, Any] = Field(default_factory=dict)


class ModelReady(BaseModel):
    name: str
    version: str | None = None
    ready: bool


class InvokeGrant(BaseModel):
    """The answer of the platform's invoke check: who the token is, allowed to invoke
    models of ``project`` (what a standalone serving process caches)."""

    project: str
    model: str | None = None
    principal: str
    kind: str
    permission: str = "deployment:invoke"
