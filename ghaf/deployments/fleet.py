"""The replicas one server runs for its deployments, and the calls it forwards to them.

A replica is started on the first request that needs it (the request is held while it
starts: scale from zero) and shared by every later one; concurrent first requests wait
for the same start. A replica that crashed, or whose connection fails mid-request, is
dropped (that request is answered 503 with its request id) and the next request starts
another. Replicas that no current revision needs are stopped (``retire``).
"""

from __future__ import annotations

import asyncio
import logging
import tempfile
import time
from collections.abc import Awaitable, Callable, Mapping
from dataclasses import dataclass, field
from pathlib import Path

from ghaf.core.errors import Unavailable
from ghaf.deployments.hosts.base import Host, Replica, ReplicaSpec
from ghaf.deployments.upstream import Upstream, UpstreamError

log = logging.getLogger("ghaf.deployments")

Export = Callable[[ReplicaSpec, Path], Awaitable[None]]
"""Write the bundle a replica of ``spec`` serves into the (new) folder."""

# Headers a replica's answer may pass on to the caller; everything else (its server,
# date, connection handling) is the gateway's own.
PASSED_ON = ("content-type", "inference-header-content-length", "retry-after")


class ReplicaUnavailable(Unavailable):
    """A replica went away during a request (it is restarted for the next one)."""


class ReplicaTimeout(Unavailable):
    """A replica took longer than the gateway waits."""

    status = 504
    code = "timeout"
    title = "Gateway timeout"


class TooManyReplicas(Unavailable):
    """Starting one more replica would pass the server's bound."""


@dataclass
class _Group:
    """The replicas of one variant's spec, and the start under way, if any."""

    spec: ReplicaSpec
    replicas: list[Replica] = field(default_factory=list)
    starting: asyncio.Task[Replica] | None = None
    turn: int = 0
    in_flight: int = 0
    last_used: float = field(default_factory=time.monotonic)


@dataclass(frozen=True)
class Forwarded:
    status: int
    headers: dict[str, str]
    body: bytes


class Fleet:
    """Replicas by spec, started through ``host`` from bundles ``export`` writes."""

    def __init__(
        self,
        host: Host,
        export: Export,
        *,
        bundles: Path,
        timeout_s: float = 60.0,
        most: int = 16,
        most_per_project: int = 8,
        on_cold_start: Callable[[ReplicaSpec, float], None] | None = None,
    ) -> None:
        self.host = host
        self._export = export
        self._bundles = bundles
        self._groups: dict[tuple[object, ...], _Group] = {}
        self._on_cold_start = on_cold_start
        self._most = most
        self._most_per_project = most_per_project
        self._timeout_s = timeout_s
        self._upstreams: dict[int, Upstream] = {}  # by id(replica)

    async def replica(self, spec: ReplicaSpec) -> Replica:
        """A running replica of ``spec``, started if there is none (round robin)."""
        group = self._groups.get(spec.key)
        if group is None:
            group = self._groups[spec.key] = _Group(spec)
        group.spec = spec  # the newest scaling range
        group.last_used = time.monotonic()
        group.replicas = [r for r in group.replicas if self.host.running(r)]
        if group.replicas:
            group.turn = (group.turn + 1) % len(group.replicas)
            return group.replicas[group.turn]
        if group.starting is None:
            await self._make_room(spec)
            group.starting = asyncio.create_task(self._start(spec))
            group.starting.add_done_callback(lambda _: setattr(group, "starting", None))
        # Shielded: a caller that goes away must not cancel a start others wait for.
        start = group.starting
        try:
            replica = await asyncio.shield(start)
        except asyncio.CancelledError:
            if not start.cancelled():
                raise  # this caller was cancelled, not the start
            raise ReplicaUnavailable(
                f"the replica of variant {spec.variant!r} stopped starting: the deployment "
                "changed meanwhile; retry"
            ) from None
        if replica not in group.replicas:
            group.replicas.append(replica)
        return replica

    def _count(self, project: str | None = None) -> int:
        return sum(
            len(g.replicas) + (g.starting is not None)
            for g in self._groups.values()
            if project is None or g.spec.project == project
        )

    async def _make_room(self, spec: ReplicaSpec) -> None:
        """Refuse a project past its share; at the server's bound, stop the replicas
        of the variant used least recently (idle ones only) to make room."""
        if self._count(spec.project) >= self._most_per_project:
            raise TooManyReplicas(
                f"project {spec.project!r} runs as many replicas as a project may on this "
                "server (GHAF_DEPLOYMENT_MAX_PROJECT_REPLICAS); remove deployments or "
                "variants it no longer needs"
            )
        while self._count() >= self._most:
            idle = [
                (g.last_used, key)
                for key, g in self._groups.items()
                if g.replicas and g.in_flight == 0 and g.starting is None
            ]
            if not idle:
                raise TooManyReplicas(
                    "this server runs as many replicas as it may and all of them are busy "
                    "(GHAF_DEPLOYMENT_MAX_REPLICAS); retry shortly"
                )
            _, key = min(idle)
            evicted = self._groups.pop(key)
            for replica in evicted.replicas:
                await self._stop(replica)
            log.info("stopped the idle replicas of variant %s to make room", key[1])

    async def _start(self, spec: ReplicaSpec) -> Replica:
        with tempfile.TemporaryDirectory(prefix="bundle-", dir=self._bundles) as folder:
            bundle = Path(folder) / "bundle"
            await self._export(spec, bundle)
            # The replica has read the model into memory once it answers ready: the
            # decrypted file goes with the folder.
            replica = await self.host.start(spec, bundle)
        log.info(
            "started a replica of %s:%s for variant %s in %.2f s",
            spec.model,
            spec.version,
            spec.variant,
            replica.started_s,
        )
        if self._on_cold_start is not None:
            self._on_cold_start(spec, replica.started_s)
        return replica

    async def forward(
        self, replica: Replica, path: str, body: bytes, headers: Mapping[str, str]
    ) -> Forwarded:
        """POST ``body`` to the replica; a replica that fails mid-call is dropped."""
        sent = {**headers, "authorization": replica.authorization}
        group = self._groups.get(replica.spec.key)
        if group is not None:
            group.in_flight += 1
        upstream = self._upstream(replica)
        try:
            answer = await asyncio.wait_for(upstream.post(path, body, sent), self._timeout_s)
        except TimeoutError:
            # Slow, not gone: it keeps serving the requests it can answer.
            raise ReplicaTimeout(
                f"the replica of variant {replica.spec.variant!r} did not answer within "
                f"{self._timeout_s:g} s (GHAF_DEPLOYMENT_REQUEST_TIMEOUT_S)"
            ) from None
        except UpstreamError:
            if self.host.running(replica):
                # Up, but it closed this connection (e.g. it refused the body midway):
                # this request failed, the replica serves on.
                raise ReplicaUnavailable(
                    f"the replica of variant {replica.spec.variant!r} closed the connection "
                    "before answering; retry"
                ) from None
            await self.drop(replica)
            raise ReplicaUnavailable(
                f"the replica of variant {replica.spec.variant!r} went away during the "
                "request; it is being restarted, retry shortly"
            ) from None
        finally:
            if group is not None:
                group.in_flight -= 1
                group.last_used = time.monotonic()
        passed = {k: v for k, v in answer.headers.items() if k in PASSED_ON}
        return Forwarded(answer.status, passed, b"".join(answer.body))

    def _upstream(self, replica: Replica) -> Upstream:
        found = self._upstreams.get(id(replica))
        if found is None:
            host, _, port = replica.url.removeprefix("http://").partition(":")
            found = self._upstreams[id(replica)] = Upstream(host, int(port))
        return found

    async def _stop(self, replica: Replica) -> None:
        upstream = self._upstreams.pop(id(replica), None)
        if upstream is not None:
            upstream.close()
        await self.host.stop(replica)

    async def drop(self, replica: Replica) -> None:
        group = self._groups.get(replica.spec.key)
        if group is not None and replica in group.replicas:
            group.replicas.remove(replica)
        await self._stop(replica)

    async def retire(self, deployment: str, keep: set[tuple[object, ...]]) -> None:
        """Stop the replicas of ``deployment`` (an id) whose spec is not in ``keep``."""
        for key, group in list(self._groups.items()):
            if key[0] == deployment and key not in keep:
                del self._groups[key]
                if group.starting is not None:
                    group.starting.cancel()  # its replica is stopped as the start fails
                for replica in group.replicas:
                    await self._stop(replica)

    async def scale_to_zero(self) -> None:
        """Stop the replicas of variants that may run none (``min_replicas`` 0) once
        nothing was asked of them for their ``scale_to_zero_after_s``."""
        now = time.monotonic()
        for key, group in list(self._groups.items()):
            scaling = group.spec.scaling
            idle = now - group.last_used
            if (
                group.replicas
                and scaling.min_replicas == 0
                and group.in_flight == 0
                and group.starting is None
                and idle >= scaling.scale_to_zero_after_s
            ):
                del self._groups[key]
                for replica in group.replicas:
                    await self._stop(replica)
                log.info("variant %s scaled to zero after %.0f s idle", key[1], idle)

    def deployments(self) -> set[str]:
        """The ids of the deployments that have replicas running or starting."""
        return {str(key[0]) for key, g in self._groups.items() if g.replicas or g.starting}

    def replicas(self) -> dict[tuple[object, ...], int]:
        """How many replicas run for each spec (for metrics and tests)."""
        return {key: len(g.replicas) for key, g in self._groups.items() if g.replicas}

    async def close(self) -> None:
        for group in self._groups.values():
            if group.starting is not None:
                group.starting.cancel()
            for replica in group.replicas:
                await self._stop(replica)
        self._groups.clear()
