"""The fleet's bookkeeping on a host that runs nothing: dead replicas are stopped and
forgotten (never mistaken for a later one), surplus replicas leave the rotation before
any is stopped, a host's refusal comes before anything is exported or evicted, and
memory restarts give up after a few."""

from __future__ import annotations

import asyncio
from pathlib import Path

import pytest

from ghaf.core.errors import InvalidInput
from ghaf.deployments.fleet import MEMORY_RESTARTS, Fleet
from ghaf.deployments.hosts.base import Host, Replica, ReplicaSpec
from ghaf.deployments.schemas import Resources, Scaling
from tests.conftest import replica_spec


class FakeHost(Host):
    def __init__(self) -> None:
        self.dead: set[Replica] = set()
        self.stopped: list[Replica] = []
        self.refuse = False
        self.stop_delay = 0.0
        self.memory = 0

    def check(self, spec: ReplicaSpec) -> None:
        if self.refuse:
            raise InvalidInput("no such device here", field="device")

    async def start(self, spec: ReplicaSpec, bundle: Path) -> Replica:
        return Replica(spec=spec, url="http://127.0.0.1:9", authorization="Bearer k", started_s=0)

    def running(self, replica: Replica) -> bool:
        return replica not in self.dead and replica not in self.stopped

    async def stop(self, replica: Replica) -> None:
        await asyncio.sleep(self.stop_delay)
        self.stopped.append(replica)

    def memory_bytes(self, replica: Replica) -> int | None:
        return self.memory


def _spec(**scaling: object) -> ReplicaSpec:
    spec: ReplicaSpec = replica_spec(
        resources=Resources(memory_mb=64),
        scaling=Scaling(**scaling),  # type: ignore[arg-type]
    )
    return spec


def _fleet(host: FakeHost, tmp_path: Path, exported: list[ReplicaSpec]) -> Fleet:
    async def export(spec: ReplicaSpec, folder: Path) -> None:
        exported.append(spec)

    return Fleet(host, export, bundles=tmp_path, drain_s=0.1)


def test_a_dead_replica_is_stopped_and_forgotten(tmp_path: Path) -> None:
    async def scenario() -> None:
        host, exported = FakeHost(), []
        fleet = _fleet(host, tmp_path, exported)
        first = await fleet.replica(_spec())
        fleet._upstream(first)  # a kept connection pool to it
        host.dead.add(first)
        second = await fleet.replica(_spec())
        assert second is not first and host.stopped == [first]
        assert first not in fleet._upstreams  # its pool went with it
        assert len(exported) == 2

    asyncio.run(scenario())


def test_surplus_replicas_leave_the_rotation_before_any_is_stopped(tmp_path: Path) -> None:
    async def scenario() -> None:
        host, exported = FakeHost(), []
        fleet = _fleet(host, tmp_path, exported)
        spec = _spec(min_replicas=1, max_replicas=3)
        await fleet.replica(spec)
        group = fleet._groups[spec.key]
        for _ in range(2):
            group.replicas.append(await host.start(spec, tmp_path))
        host.stop_delay = 0.05
        shrinking = asyncio.create_task(fleet._shrink(group, 2))
        await asyncio.sleep(0.01)  # the first stop is under way
        assert len(group.replicas) == 1  # both chosen ones already out of rotation
        await shrinking
        assert len(host.stopped) == 2 and len(group.replicas) == 1

    asyncio.run(scenario())


def test_a_host_refusal_comes_before_export(tmp_path: Path) -> None:
    async def scenario() -> None:
        host, exported = FakeHost(), []
        host.refuse = True
        fleet = _fleet(host, tmp_path, exported)
        with pytest.raises(InvalidInput, match="no such device"):
            await fleet.replica(_spec())
        assert exported == []

    asyncio.run(scenario())


def test_memory_restarts_give_up_after_a_few(tmp_path: Path) -> None:
    async def scenario() -> int:
        host, exported = FakeHost(), []
        host.memory = 1 << 40  # far over 64 MiB
        fleet = _fleet(host, tmp_path, exported)
        restarts = 0
        for _ in range(MEMORY_RESTARTS + 3):
            await fleet.replica(_spec())
            restarts += len(await fleet.watch_memory())
        return restarts

    assert asyncio.run(scenario()) == MEMORY_RESTARTS
