"""The replicas one server runs for its deployments, and the calls it forwards to them.

A replica is started on the first request that needs it (the request is held while it
starts: scale from zero) and shared by every later one; concurrent first requests wait
for the same start. A replica that crashed, or whose connection fails mid-request, is
dropped (that request is answered 503 with its request id) and the next request starts
another. Replicas that no current revision needs are stopped (``retire``).

From then on ``autoscale`` (every half second, from the gateway) samples each variant's
in-flight requests and asks the policy (ghaf/deployments/autoscale.py) how many replicas
it wants between its ``min_replicas`` (at least one: going to zero is
``scale_to_zero``'s) and ``max_replicas``: more are started beside the running ones,
surplus idle ones stopped. A request goes to the replica with the fewest in flight.
"""

from __future__ import annotations

import asyncio
import logging
import tempfile
import time
from collections import deque
from collections.abc import Awaitable, Callable, Mapping
from dataclasses import dataclass, field
from pathlib import Path

from ghaf.core.errors import Unavailable
from ghaf.deployments.autoscale import Policy, Sample, desired_replicas
from ghaf.deployments.hosts.base import Host, Replica, ReplicaSpec
from ghaf.deployments.upstream import Upstream, UpstreamError

log = logging.getLogger("ghaf.deployments")

Export = Callable[[ReplicaSpec, Path], Awaitable[None]]
"""Write the bundle a replica of ``spec`` serves into the (new) folder."""

# Headers a replica's answer may pass on to the caller; everything else (its server,
# date, connection handling) is the gateway's own.
PASSED_ON = ("content-type", "inference-header-content-length", "retry-after")


MEMORY_RESTARTS = 3  # restarts for memory within the window before the fleet gives up
MEMORY_WINDOW_S = 600.0


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
    growing: set[asyncio.Task[None]] = field(default_factory=set)  # starts beside running
    turn: int = 0
    in_flight: int = 0
    busy: dict[Replica, int] = field(default_factory=dict)  # in flight, by replica
    memory_restarts: deque[float] = field(default_factory=lambda: deque(maxlen=8))
    samples: deque[Sample] = field(default_factory=lambda: deque(maxlen=4096))
    last_used: float = field(default_factory=time.monotonic)

    @property
    def size(self) -> int:
        """Replicas running or on their way."""
        return len(self.replicas) + (self.starting is not None) + len(self.growing)

    def policy(self) -> Policy:
        scaling = self.spec.scaling
        return Policy(
            # Zero is scale_to_zero's decision (after its idle period), never this one's.
            min_replicas=max(1, scaling.min_replicas),
            max_replicas=scaling.max_replicas,
            target_in_flight=scaling.target_in_flight,
            upscale_window_s=scaling.upscale_window_s,
            downscale_window_s=scaling.downscale_window_s,
            scale_to_zero_after_s=scaling.scale_to_zero_after_s,
        )

    def cancel_starts(self) -> None:
        if self.starting is not None:
            self.starting.cancel()  # its replica is stopped as the start fails
        for task in self.growing:
            task.cancel()


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
        on_restart: Callable[[ReplicaSpec, str], None] | None = None,
        drain_s: float = 10.0,
        hosts: Mapping[str, Host] | None = None,
    ) -> None:
        self.host = host  # for specs of a host ``hosts`` does not name
        self._hosts = dict(hosts or {})
        self._export = export
        self._bundles = bundles
        self._groups: dict[tuple[object, ...], _Group] = {}
        self._on_cold_start = on_cold_start
        self._on_restart = on_restart
        self._drain_s = drain_s
        self._most = most
        self._most_per_project = most_per_project
        self._timeout_s = timeout_s
        self._upstreams: dict[Replica, Upstream] = {}

    def host_of(self, spec: ReplicaSpec) -> Host:
        return self._hosts.get(spec.host, self.host)

    async def replica(self, spec: ReplicaSpec) -> Replica:
        """A running replica of ``spec``, started if there is none (round robin)."""
        group = self._groups.get(spec.key)
        if group is None:
            group = self._groups[spec.key] = _Group(spec)
        group.spec = spec  # the newest scaling range
        group.last_used = time.monotonic()
        await self._drop_dead(group)
        if len(group.replicas) == 1:
            return group.replicas[0]
        if group.replicas:
            # The fewest in flight; among equals, the next in turn.
            group.turn = (group.turn + 1) % len(group.replicas)
            count = len(group.replicas)
            ordered = [group.replicas[(group.turn + i) % count] for i in range(count)]
            return min(ordered, key=lambda r: group.busy.get(r, 0))
        if group.starting is None:
            self.host_of(spec).check(spec)  # before anything is exported or evicted
            await self._make_room(spec)
            if group.replicas:  # another request's start finished meanwhile
                return group.replicas[0]
        if group.starting is None:  # still: no other first request started one meanwhile
            start = asyncio.create_task(self._start(spec))
            group.starting = start

            def started(
                _: object, group: _Group = group, start: asyncio.Task[Replica] = start
            ) -> None:
                if group.starting is start:
                    group.starting = None

            start.add_done_callback(started)
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
            g.size for g in self._groups.values() if project is None or g.spec.project == project
        )

    async def _drop_dead(self, group: _Group) -> None:
        """Stop (and forget everything kept for) the replicas that no longer run."""
        for replica in [r for r in group.replicas if not self.host_of(r.spec).running(r)]:
            await self.drop(replica)

    async def _make_room(self, spec: ReplicaSpec) -> None:
        """Refuse a project past its share; at the server's bound, stop the replicas
        of another variant used least recently (idle ones only) to make room."""
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
                if key != spec.key
                and g.replicas
                and g.in_flight == 0
                and g.starting is None
                and not g.growing
            ]
            if not idle:
                raise TooManyReplicas(
                    "this server runs as many replicas as it may and all of them are busy "
                    "(GHAF_DEPLOYMENT_MAX_REPLICAS); retry shortly"
                )
            _, key = min(idle)
            evicted = self._groups.pop(key)
            evicted.cancel_starts()
            for replica in evicted.replicas:
                await self._stop(replica)
            log.info("stopped the idle replicas of variant %s to make room", key[1])

    async def _start(self, spec: ReplicaSpec) -> Replica:
        with tempfile.TemporaryDirectory(prefix="bundle-", dir=self._bundles) as folder:
            bundle = Path(folder) / "bundle"
            await self._export(spec, bundle)
            # The replica has read the model into memory once it answers ready: the
            # decrypted file goes with the folder.
            replica = await self.host_of(spec).start(spec, bundle)
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
        self,
        replica: Replica,
        path: str,
        body: bytes,
        headers: Mapping[str, str],
        *,
        method: str = "POST",
    ) -> Forwarded:
        """Send ``body`` to the replica; a replica that fails mid-call is dropped."""
        sent = {**headers, "authorization": replica.authorization}
        group = self._groups.get(replica.spec.key)
        if group is not None:
            group.in_flight += 1
            group.busy[replica] = group.busy.get(replica, 0) + 1
        upstream = self._upstream(replica)
        try:
            answer = await asyncio.wait_for(
                upstream.send(method, replica.prefix + path, body, sent), self._timeout_s
            )
        except TimeoutError:
            # Slow, not gone: it keeps serving the requests it can answer.
            raise ReplicaTimeout(
                f"the replica of variant {replica.spec.variant!r} did not answer within "
                f"{self._timeout_s:g} s (GHAF_DEPLOYMENT_REQUEST_TIMEOUT_S)"
            ) from None
        except UpstreamError:
            if self.host_of(replica.spec).running(replica):
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
                left = group.busy.get(replica, 0) - 1
                if left > 0:
                    group.busy[replica] = left
                else:  # done, or the replica was dropped meanwhile
                    group.busy.pop(replica, None)
                group.last_used = time.monotonic()
        passed = {k: v for k, v in answer.headers.items() if k in PASSED_ON}
        return Forwarded(answer.status, passed, b"".join(answer.body))

    def _upstream(self, replica: Replica) -> Upstream:
        found = self._upstreams.get(replica)
        if found is None:
            host, _, port = replica.url.removeprefix("http://").partition(":")
            found = self._upstreams[replica] = Upstream(host, int(port))
        return found

    async def _stop(self, replica: Replica) -> None:
        upstream = self._upstreams.pop(replica, None)
        if upstream is not None:
            upstream.close()
        await self.host_of(replica.spec).stop(replica)

    async def drop(self, replica: Replica) -> None:
        group = self._groups.get(replica.spec.key)
        if group is not None and replica in group.replicas:
            group.replicas.remove(replica)
            group.busy.pop(replica, None)
        await self._stop(replica)

    async def watch_memory(self) -> list[Replica]:
        """Restart every replica over its variant's ``memory_mb``: out of rotation at
        once, stopped once its requests are answered (or after ``drain_s``), replaced on
        demand like a crashed one. Returns those restarted (each reported)."""
        restarted = []
        now = time.monotonic()
        for group in list(self._groups.values()):
            limit = group.spec.resources.memory_mb << 20
            recent = [t for t in group.memory_restarts if now - t < MEMORY_WINDOW_S]
            if len(recent) >= MEMORY_RESTARTS:
                continue  # restarting again would only loop: reported once, below
            for replica in list(group.replicas):
                used = self.host_of(replica.spec).memory_bytes(replica)
                if used is None or used <= limit:
                    continue
                log.warning(
                    "the replica of variant %s (%s:%s) uses %d MiB, over its memory_mb of "
                    "%d; restarting it",
                    group.spec.variant, group.spec.model, group.spec.version,
                    used >> 20, group.spec.resources.memory_mb,
                )  # fmt: skip
                group.replicas.remove(replica)
                deadline = time.monotonic() + self._drain_s
                while group.busy.get(replica) and time.monotonic() < deadline:
                    await asyncio.sleep(0.05)
                group.busy.pop(replica, None)
                await self._stop(replica)
                group.memory_restarts.append(time.monotonic())
                if self._on_restart is not None:
                    self._on_restart(group.spec, "memory")
                restarted.append(replica)
                if len(recent) + 1 >= MEMORY_RESTARTS:
                    log.error(
                        "variant %s was restarted %d times in %.0f s for its memory: no "
                        "more restarts for it until its spec changes; raise its memory_mb",
                        group.spec.variant, MEMORY_RESTARTS, MEMORY_WINDOW_S,
                    )  # fmt: skip
                    break
        return restarted

    async def autoscale(self) -> None:
        """One look at every running variant: sample its load, then start or stop
        replicas to the count its policy wants now."""
        now = time.monotonic()
        for group in list(self._groups.values()):
            if self.host_of(group.spec).scales_itself:
                continue
            await self._drop_dead(group)
            if not group.replicas:
                continue  # starting from zero, or gone: the first request's business
            scaling = group.spec.scaling
            group.samples.append(Sample(at=now, in_flight=float(group.in_flight)))
            horizon = now - max(scaling.upscale_window_s, scaling.downscale_window_s) - 1
            while len(group.samples) > 1 and group.samples[1].at < horizon:
                group.samples.popleft()  # the one in effect at the horizon stays
            current = group.size
            desired = desired_replicas(
                group.policy(), current=current, samples=list(group.samples), now=now
            )
            if desired > current:
                await self._grow(group, desired - current)
            elif desired < current:
                await self._shrink(group, current - desired)

    async def _grow(self, group: _Group, more: int) -> None:
        for _ in range(more):
            try:
                await self._make_room(group.spec)
            except TooManyReplicas as refused:
                log.warning("variant %s stays at %d replicas: %s", group.spec.variant,
                            group.size, refused.detail)  # fmt: skip
                return
            task = asyncio.create_task(self._grow_one(group))
            group.growing.add(task)
            task.add_done_callback(group.growing.discard)

    async def _grow_one(self, group: _Group) -> None:
        try:
            replica = await self._start(group.spec)
        except Exception as failed:  # logged; the next look tries again
            log.warning("could not add a replica of %s: %s", group.spec.variant, failed)
            return
        if self._groups.get(group.spec.key) is group:
            group.replicas.append(replica)
            log.info("variant %s scaled up to %d replicas", group.spec.variant,
                     len(group.replicas))  # fmt: skip
        else:  # retired or evicted while it started
            await self._stop(replica)

    async def _shrink(self, group: _Group, fewer: int) -> None:
        # Idle ones only, newest first, all out of rotation before the first stop is
        # awaited: no request reaches a replica being stopped.
        idle = [r for r in reversed(group.replicas) if not group.busy.get(r)]
        chosen = idle[: min(fewer, len(group.replicas) - 1)]
        for replica in chosen:
            group.replicas.remove(replica)
        for replica in chosen:
            await self._stop(replica)
        log.info("variant %s scaled down to %d replicas", group.spec.variant,
                 len(group.replicas))  # fmt: skip

    async def retire(self, deployment: str, keep: set[tuple[object, ...]]) -> None:
        """Stop the replicas of ``deployment`` (an id) whose spec is not in ``keep``."""
        for key, group in list(self._groups.items()):
            if key[0] == deployment and key not in keep:
                del self._groups[key]
                group.cancel_starts()
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
                not self.host_of(group.spec).scales_itself
                and group.replicas
                and scaling.min_replicas == 0
                and group.in_flight == 0
                and group.starting is None
                and idle >= scaling.scale_to_zero_after_s
            ):
                del self._groups[key]
                group.cancel_starts()
                for replica in group.replicas:
                    await self._stop(replica)
                log.info("variant %s scaled to zero after %.0f s idle", key[1], idle)

    def deployments(self) -> set[str]:
        """The ids of the deployments that have replicas running or starting."""
        return {str(key[0]) for key, g in self._groups.items() if g.replicas or g.starting}

    def running(self) -> list[tuple[ReplicaSpec, int]]:
        """Each spec with replicas running, and how many (for ``/metrics``)."""
        # A copy first: a scrape may read this from another thread than the loop's.
        return [(g.spec, len(g.replicas)) for g in list(self._groups.values()) if g.replicas]

    def replicas(self) -> dict[tuple[object, ...], int]:
        """How many replicas run for each spec (for metrics and tests)."""
        return {key: len(g.replicas) for key, g in self._groups.items() if g.replicas}

    async def close(self) -> None:
        for group in list(self._groups.values()):
            group.cancel_starts()
            for replica in group.replicas:
                await self._stop(replica)
        self._groups.clear()
        for host in {id(h): h for h in (self.host, *self._hosts.values())}.values():
            await host.close()
