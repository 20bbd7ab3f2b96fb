"""The interface every deployment host implements: start a replica serving one model
version from a bundle, tell whether it still runs, stop it."""

from __future__ import annotations

from abc import ABC, abstractmethod
from dataclasses import dataclass
from functools import cached_property
from pathlib import Path

from ghaf.deployments.schemas import Resources, RuntimeOptions, Scaling


@dataclass(frozen=True)
class ReplicaSpec:
    """What one replica serves and how: the variant's model version and options."""

    project: str
    deployment: str  # the deployment's id
    variant: str
    model: str
    version: int
    sha256: str
    runtime: RuntimeOptions
    resources: Resources
    scaling: Scaling  # not part of the key: a new range does not restart replicas
    host: str = "embedded"

    @cached_property
    def key(self) -> tuple[object, ...]:
        """Replicas with the same key are interchangeable. Kept once computed: the
        gateway looks it up on every request."""
        return (
            self.deployment,
            self.variant,
            self.model,
            self.version,
            self.sha256,
            self.runtime.model_dump_json(),
            self.resources.model_dump_json(),
            self.host,
        )


@dataclass(eq=False)
class Replica:
    """A started replica: where it answers and the key it takes as a bearer token.

    Compared and hashed by identity: tables of replicas are keyed by the object itself,
    never by ``id()``, which a later replica may reuse once this one is freed."""

    spec: ReplicaSpec
    url: str  # http://127.0.0.1:PORT
    authorization: str  # "Bearer <key>", never logged
    started_s: float  # how long it took to answer ready (the cold start)
    prefix: str = ""  # before every path (an application's route on a shared proxy)

    def __repr__(self) -> str:  # the key never reaches a log line
        return f"Replica({self.spec.variant} {self.spec.model}:{self.spec.version} {self.url})"


class Host(ABC):
    """Runs replicas. ``start`` returns once the replica answers ready."""

    @abstractmethod
    async def start(self, spec: ReplicaSpec, bundle: Path) -> Replica:
        """Start a replica serving the bundle in ``bundle`` (which the caller removes
        once this returns: the replica has loaded the model by then)."""

    def check(self, spec: ReplicaSpec) -> None:  # noqa: B027 - most hosts run any spec
        """Refuse (a ``GhafError``) a spec this host cannot run, before anything is
        exported or evicted for it."""

    @abstractmethod
    def running(self, replica: Replica) -> bool:
        """Whether the replica is still up (a crashed one is restarted by the fleet)."""

    @abstractmethod
    async def stop(self, replica: Replica) -> None:
        """Stop the replica (idempotent)."""

    def memory_bytes(self, replica: Replica) -> int | None:
        """The replica's resident memory, where this host can tell (None otherwise)."""
        return None

    @property
    def scales_itself(self) -> bool:
        """Whether the host runs a variant's replicas and autoscaling itself (one
        ``Replica`` is then the whole variant, and the fleet leaves its count alone)."""
        return False

    async def close(self) -> None:  # noqa: B027 - most hosts hold nothing to release
        """Release what the host holds (after every replica was stopped)."""
