"""The embedded host: each replica is a ``ghaf serve --bundle`` process on this machine,
on a free 127.0.0.1 port, with a fresh invoke key that only the gateway holds.

The replica is the serving runtime itself (ghaf/serving), started the way an operator
would start it by hand, so a deployment serves exactly what ``ghaf serve`` serves. Its
threads follow the variant's CPUs; its resident memory is read for the fleet's watch
(a replica over its ``memory_mb`` is restarted); its output goes to the server's log.
"""

from __future__ import annotations

import asyncio
import contextlib
import math
import os
import secrets
import subprocess
import sys
import time
from collections.abc import Sequence
from pathlib import Path

import httpx

from ghaf.core.errors import InvalidInput, Unavailable
from ghaf.deployments.hosts.base import Host, Replica, ReplicaSpec
from ghaf.deployments.schemas import VariantSpec
from ghaf.platform.children import die_with_parent
from ghaf.platform.ports import free_port

READY_PATH = "/v2/health/ready"


# What a replica inherits of the server's environment: enough to run Python and find its
# libraries. Nothing else: the server's may hold its database URL, storage keys or master
# key, and a replica runs tenants' models.
_INHERITED = ("PATH", "HOME", "LANG", "LC_ALL", "TMPDIR", "PYTHONPATH", "VIRTUAL_ENV")


def _replica_environment(key: str) -> dict[str, str]:
    env = {name: os.environ[name] for name in _INHERITED if name in os.environ}
    env["GHAF_SERVE_INVOKE_KEY"] = key  # not in argv: ps shows argv
    env["GHAF_LOG_FORMAT"] = os.environ.get("GHAF_LOG_FORMAT", "text")
    return env


def missing_gpu(device: str, gpus: int, *, allow_cpu_fallback: bool) -> str | None:
    """Why a replica asking for ``device``/``gpus`` cannot have a GPU here (what
    onnxruntime offers instead), or None when it can, or needs none, or may use the CPU."""
    if (device != "gpu" and gpus == 0) or allow_cpu_fallback:
        return None
    from ghaf.serving.runtime import CUDA_PROVIDER, available_providers

    offered = available_providers()
    return None if CUDA_PROVIDER in offered else f"onnxruntime offers {', '.join(offered)}"


def refuse_missing_gpu(variants: Sequence[VariantSpec]) -> None:
    """``InvalidInput`` naming the first variant that needs a GPU this machine lacks
    and does not allow the CPU instead."""
    for i, variant in enumerate(variants):
        why = missing_gpu(
            variant.runtime.device,
            variant.resources.gpus,
            allow_cpu_fallback=variant.runtime.allow_cpu_fallback,
        )
        if why is not None:
            raise InvalidInput(
                f"variant {variant.name!r} asks for a GPU, but this server's embedded host has "
                f"none ({why}); set runtime.allow_cpu_fallback to run it on the CPU, or deploy "
                "it where a GPU is",
                field=f"variants[{i}].runtime.device",
            )


class ReplicaFailed(Unavailable):
    """A replica did not start (its process ended, or never answered ready)."""


class EmbeddedHost(Host):
    """Replicas as child processes of the server."""

    def __init__(
        self,
        *,
        start_timeout_s: float = 60.0,
        stop_timeout_s: float = 10.0,
        max_body_bytes: int = 32 << 20,
    ) -> None:
        self.start_timeout_s = start_timeout_s
        self.stop_timeout_s = stop_timeout_s
        self.max_body_bytes = max_body_bytes
        self._processes: dict[Replica, subprocess.Popen[bytes]] = {}

    def _command(self, spec: ReplicaSpec, bundle: Path, port: int) -> list[str]:
        runtime = spec.runtime
        threads = runtime.threads or max(1, math.floor(spec.resources.cpus))
        command = [
            sys.executable, "-m", "ghaf", "serve",
            "--bundle", str(bundle),
            "--sha256", spec.sha256,
            "--host", "127.0.0.1",
            "--port", str(port),
            "--threads", str(threads),
            "--max-batch-size", str(runtime.max_batch_size),
            "--max-latency-ms", str(runtime.max_latency_ms),
            "--device", runtime.device,
            "--max-body-mb", f"{self.max_body_bytes / (1 << 20):.6f}",
            "--no-prediction-log",
        ]  # fmt: skip
        if runtime.allow_cpu_fallback:
            command.append("--allow-cpu-fallback")
        return command

    def check(self, spec: ReplicaSpec) -> None:
        # Refused here, not by a replica that starts only to exit: a revision written on
        # a server with a GPU may be served by one without.
        why = missing_gpu(
            spec.runtime.device,
            spec.resources.gpus,
            allow_cpu_fallback=spec.runtime.allow_cpu_fallback,
        )
        if why is not None:
            from ghaf.serving.runtime import DeviceUnavailable

            raise DeviceUnavailable(
                f"variant {spec.variant!r} asks for a GPU, but this server has none ({why}); "
                "allow the CPU (runtime.allow_cpu_fallback) or serve it where a GPU is",
                field="device",
            )

    async def start(self, spec: ReplicaSpec, bundle: Path) -> Replica:
        self.check(spec)
        key = secrets.token_urlsafe(32)
        port = free_port()
        env = _replica_environment(key)
        started = time.perf_counter()
        process = subprocess.Popen(  # noqa: S603 - our own interpreter and arguments
            self._command(spec, bundle, port),
            env=env,
            stdin=subprocess.DEVNULL,
            preexec_fn=die_with_parent,
        )
        replica = Replica(
            spec=spec,
            url=f"http://127.0.0.1:{port}",
            authorization=f"Bearer {key}",
            started_s=0.0,
        )
        self._processes[replica] = process
        try:
            await self._until_ready(replica, process)
        except BaseException:
            await self.stop(replica)
            raise
        replica.started_s = time.perf_counter() - started
        return replica

    async def _until_ready(self, replica: Replica, process: subprocess.Popen[bytes]) -> None:
        deadline = time.monotonic() + self.start_timeout_s
        async with httpx.AsyncClient(timeout=2.0) as client:
            while True:
                if process.poll() is not None:
                    raise ReplicaFailed(
                        f"replica of variant {replica.spec.variant!r} "
                        f"({replica.spec.model}:{replica.spec.version}) exited with "
                        f"{process.returncode} while starting; see the server log"
                    )
                with contextlib.suppress(httpx.HTTPError):
                    answer = await client.get(replica.url + READY_PATH)
                    if answer.status_code == 200:
                        return
                if time.monotonic() > deadline:
                    raise ReplicaFailed(
                        f"replica of variant {replica.spec.variant!r} was not ready within "
                        f"{self.start_timeout_s:g} s"
                    )
                await asyncio.sleep(0.02)

    def memory_bytes(self, replica: Replica) -> int | None:
        import psutil

        process = self._processes.get(replica)
        if process is None or process.poll() is not None:
            return None
        try:
            return int(psutil.Process(process.pid).memory_info().rss)
        except psutil.Error:  # it ended meanwhile
            return None

    def running(self, replica: Replica) -> bool:
        process = self._processes.get(replica)
        return process is not None and process.poll() is None

    async def stop(self, replica: Replica) -> None:
        process = self._processes.pop(replica, None)
        if process is None or process.poll() is not None:
            return
        process.terminate()
        try:
            await asyncio.wait_for(asyncio.to_thread(process.wait), self.stop_timeout_s)
        except TimeoutError:
            process.kill()
            await asyncio.to_thread(process.wait)
