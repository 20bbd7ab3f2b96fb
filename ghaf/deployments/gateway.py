"""What the server keeps while it serves deployments: the fleet of replicas, the routes
it reuses, the assignments and traffic tallies it writes in batches, the mirror that
copies requests to shadows; and the lifespan that starts and stops them (the
deployments manifest declares it). The gateway's ``collect`` is its part of
``/metrics`` (ghaf/server/metrics.py asks every backend that has one)."""

from __future__ import annotations

import asyncio
import logging
import os
import shutil
from collections import OrderedDict
from collections.abc import AsyncIterator, Iterator
from contextlib import asynccontextmanager
from pathlib import Path
from typing import Any

from prometheus_client.core import Metric
from starlette.concurrency import run_in_threadpool

from ghaf.core.ids import new_id
from ghaf.deployments import schemas, service
from ghaf.deployments.fleet import Fleet
from ghaf.deployments.hosts.base import ReplicaSpec
from ghaf.deployments.hosts.embedded import EmbeddedHost
from ghaf.deployments.hosts.ray import RayHost
from ghaf.deployments.shadow import Mirror, ShadowLog
from ghaf.deployments.traffic import Tally, Traffic, TrafficWriter, Where
from ghaf.serving.predlog import StoreSink

log = logging.getLogger("ghaf.deployments")
NAME = "deployments"  # the key in runtime.backends
RECONCILE_S = 5.0  # how often replicas no revision needs are looked for
AUTOSCALE_S = 0.5  # how often each variant's load is sampled and its replicas counted


class Routes:
    """The gateway's routes, by (epoch, caller, project, deployment); bounded."""

    def __init__(self, most: int = 4096) -> None:
        self._most = most
        self._routes: OrderedDict[tuple[object, ...], service.Route] = OrderedDict()

    def get(self, key: tuple[object, ...]) -> service.Route | None:
        return self._routes.get(key)

    def put(self, key: tuple[object, ...], found: service.Route) -> None:
        self._routes[key] = found
        while len(self._routes) > self._most:
            self._routes.popitem(last=False)


class AssignmentWriter:
    """Which variant answered each request, written in batches by a background task (a
    row write per request would cost the gateway a database write each)."""

    def __init__(self, runtime: Any, *, every_s: float = 0.5, most: int = 100_000) -> None:
        self._runtime = runtime
        self._every_s = every_s
        self._most = most
        self._pending: dict[tuple[str, str, int], list[schemas.Assignment]] = {}
        self._count = 0
        self.dropped = 0
        self._flushing = False
        self._task: asyncio.Task[None] | None = None

    def __call__(self, found: service.Route, request_id: str, variant: str) -> None:
        if self._count >= self._most:
            self.dropped += 1  # the writer fell behind: bounded memory, counted
            return
        key = (found.project, found.deployment, found.revision)
        self._pending.setdefault(key, []).append(
            schemas.Assignment(request_id=request_id, variant=variant)
        )
        self._count += 1

    def start(self) -> None:
        self._task = asyncio.create_task(self._loop())

    async def _loop(self) -> None:
        while True:
            await asyncio.sleep(self._every_s)
            await self.flush()

    @property
    def idle(self) -> bool:
        """Whether every assignment taken so far is written (or failed to be)."""
        return not self._pending and not self._flushing

    async def flush(self) -> None:
        self._flushing = True
        try:
            await self._flush()
        finally:
            self._flushing = False

    async def _flush(self) -> None:
        pending, self._pending, self._count = self._pending, {}, 0
        for (project, deployment, revision), items in pending.items():
            for start in range(0, len(items), schemas.MAX_OUTCOMES):
                part = schemas.Assignments(
                    revision=revision, items=items[start : start + schemas.MAX_OUTCOMES]
                )
                try:
                    await run_in_threadpool(self._write, project, deployment, part)
                except Exception:  # a deployment removed meanwhile, a database hiccup
                    log.exception("could not record %d assignments of %s", len(items), deployment)

    def _write(self, project: str, deployment: str, part: schemas.Assignments) -> None:
        with self._runtime.acting_as("ghaf-gateway", request_id=new_id()) as ctx:
            service.record_assignments(ctx, project, deployment, part)

    async def stop(self) -> None:
        if self._task is not None:
            self._task.cancel()
        await self.flush()


class Gateway:
    """What a deployment's request needs besides its context."""

    def __init__(
        self,
        fleet: Fleet,
        assignments: AssignmentWriter,
        traffic: Traffic,
        mirror: Mirror,
        traffic_writer: TrafficWriter | None = None,
    ) -> None:
        self.fleet = fleet
        self.assignments = assignments
        self.traffic = traffic
        self.traffic_writer = traffic_writer
        self.mirror = mirror
        self.routes = Routes()
        self.revisions: dict[str, int] = {}  # the newest revision seen, by deployment id
        self.names: dict[str, tuple[str, str]] = {}  # (project, name) by deployment id
        traffic.replicas = self._replicas

    def _where(self, spec: ReplicaSpec) -> Where:
        project, name = self.names.get(spec.deployment, (spec.project, spec.deployment))
        return Where(
            project=project, deployment=name, deployment_id=spec.deployment, variant=spec.variant
        )

    def _replicas(self) -> dict[Where, int]:
        counted: dict[Where, int] = {}
        for spec, count in self.fleet.running():
            where = self._where(spec)
            counted[where] = counted.get(where, 0) + count
        return counted

    def cold_start(self, spec: ReplicaSpec, seconds: float) -> None:
        self.traffic.cold_start(self._where(spec), seconds)

    def restarted(self, spec: ReplicaSpec, reason: str) -> None:
        self.traffic.restarted(self._where(spec), reason)

    def collect(self) -> Iterator[Metric]:
        """The deployments' totals for the anonymous ``/metrics`` (no names)."""
        return self.traffic.collect()

    def project_metrics(self, project: str) -> bytes:
        """One project's series by deployment and variant, in Prometheus's text format."""
        from prometheus_client import CollectorRegistry, generate_latest

        registry = CollectorRegistry(auto_describe=False)
        registry.register(_ProjectSeries(self.traffic, project))
        return generate_latest(registry)


class _ProjectSeries:
    def __init__(self, traffic: Traffic, project: str) -> None:
        self._traffic = traffic
        self._project = project

    def collect(self) -> Iterator[Metric]:
        return self._traffic.collect(self._project)


def _export_as_ghaf(runtime: Any, spec: ReplicaSpec, folder: Path) -> None:
    from ghaf.deployments.flows import export_bundle

    with runtime.acting_as("ghaf-deployments", request_id=new_id()) as ctx:
        export_bundle(ctx, spec, folder)


def _write_traffic_as_ghaf(runtime: Any, where: Where, revision: int, tally: Tally) -> None:
    with runtime.acting_as("ghaf-gateway", request_id=new_id()) as ctx:
        service.record_traffic(
            ctx,
            where.project,
            where.deployment_id,
            variant=where.variant,
            revision=revision,
            shadow=where.shadow,
            tally=tally.to_row(),
        )


def _served_as_ghaf(runtime: Any, ids: set[str]) -> dict[str, set[tuple[object, ...]]]:
    with runtime.acting_as("ghaf-deployments", request_id=new_id()) as ctx:
        return service.served_specs(ctx, ids)


async def _reconcile(runtime: Any, gateway: Gateway, *, every_s: float) -> None:
    """Stop the replicas no current revision needs: a deployment removed, or changed
    (here or by another server on the same database), even if no request comes; and
    drop a removed deployment's series from ``/metrics``."""
    fleet = gateway.fleet
    while True:
        await asyncio.sleep(every_s)
        await fleet.scale_to_zero()
        try:
            await fleet.watch_memory()
        except Exception:
            log.exception("could not watch the replicas' memory")
        known = fleet.deployments() | set(gateway.names)
        if not known:
            continue
        try:
            needed = await run_in_threadpool(_served_as_ghaf, runtime, known)
        except Exception:
            log.exception("could not read which replicas the deployments need")
            continue
        for deployment in known:
            await fleet.retire(deployment, needed.get(deployment, set()))
            if deployment not in needed:
                gateway.names.pop(deployment, None)
                gateway.traffic.forget(deployment)


async def _autoscale(fleet: Fleet, *, every_s: float) -> None:
    while True:
        await asyncio.sleep(every_s)
        try:
            await fleet.autoscale()
        except Exception:  # never lose the loop to one look
            log.exception("autoscaling pass failed")


@asynccontextmanager
async def serving(runtime: Any) -> AsyncIterator[None]:
    """The server's lifespan for deployments: replicas start on demand and all stop,
    and the last assignments are written, when the server stops."""
    bundles = Path(runtime.settings.home) / "deployments" / "bundles"
    bundles.mkdir(parents=True, exist_ok=True, mode=0o700)
    os.chmod(bundles, 0o700)  # decrypted model files pass through here
    for left in bundles.iterdir():  # a server killed while a replica started
        shutil.rmtree(left, ignore_errors=True)

    async def export(spec: ReplicaSpec, folder: Path) -> None:
        await run_in_threadpool(_export_as_ghaf, runtime, spec, folder)

    settings = runtime.settings
    hooks: dict[str, Gateway] = {}
    fleet = Fleet(
        EmbeddedHost(
            start_timeout_s=settings.deployment_start_timeout_s,
            max_body_bytes=settings.deployment_max_body_bytes,
        ),
        export,
        bundles=bundles,
        timeout_s=settings.deployment_request_timeout_s,
        most=settings.deployment_max_replicas,
        most_per_project=settings.deployment_max_project_replicas,
        on_cold_start=lambda spec, seconds: hooks[NAME].cold_start(spec, seconds),
        on_restart=lambda spec, reason: hooks[NAME].restarted(spec, reason),
        hosts={
            "ray": RayHost(
                address=settings.ray_address,
                http_port=settings.ray_http_port,
                max_body_bytes=settings.deployment_max_body_bytes,
            )
        },
    )
    writer = AssignmentWriter(runtime)
    traffic = Traffic()
    traffic_writer = TrafficWriter(
        traffic,
        lambda where, revision, tally: _write_traffic_as_ghaf(runtime, where, revision, tally),
        every_s=settings.deployment_traffic_flush_s,
    )
    shadow_log = ShadowLog(
        StoreSink(runtime, actor="system:shadow-log").write,
        rotate_s=settings.deployment_shadow_log_rotate_s,
    )
    mirror = Mirror(
        fleet,
        traffic,
        shadow_log,
        most=settings.deployment_shadow_queue,
        most_bytes=settings.deployment_shadow_queue_bytes,
        current=lambda deployment_id: hooks[NAME].revisions.get(deployment_id, 0),
    )
    gateway = hooks[NAME] = Gateway(fleet, writer, traffic, mirror, traffic_writer)
    writer.start()
    traffic_writer.start()
    mirror.start()
    reconciler = asyncio.create_task(_reconcile(runtime, gateway, every_s=RECONCILE_S))
    autoscaler = asyncio.create_task(_autoscale(fleet, every_s=AUTOSCALE_S))
    runtime.backends[NAME] = gateway
    try:
        yield
    finally:
        runtime.backends.pop(NAME, None)
        reconciler.cancel()
        autoscaler.cancel()
        await mirror.stop()
        await writer.stop()
        await traffic_writer.stop()
        await fleet.close()
