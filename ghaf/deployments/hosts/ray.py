"""The Ray Serve host (``host: ray``, the ``ghaf[ray]`` extra): each variant's spec
becomes a Ray Serve application whose replicas, autoscaling and placement Ray decides.

A replica here is the whole application: the gateway forwards to Ray's HTTP proxy on
127.0.0.1 under the application's own route prefix, and Ray spreads the requests over
the application's replicas, starting and stopping them on its own autoscaling config
(the variant's ``scaling``, mapped by :func:`deployment_options`). Each Ray replica
serves the bundle through the same serving app as ``ghaf serve --bundle``: the bundle's
files travel in the application's arguments, are checked against the revision's
SHA-256 and loaded in the replica, and only the gateway holds the invoke key every
request must carry.

The cluster is ``GHAF_RAY_ADDRESS`` (``auto``: a Ray already running on this machine,
whose Serve proxy the gateway reaches on 127.0.0.1), or a local Ray started from the
server's process when it is unset. Ray is imported only when a ``host: ray``
variant first starts, so the base install never needs it.
"""

from __future__ import annotations

import asyncio
import contextlib
import hashlib
import logging
import os
import secrets
import shutil
import tempfile
import time
from collections.abc import Mapping
from pathlib import Path
from typing import Any

from ghaf.core.errors import InvalidInput, Unavailable
from ghaf.deployments.hosts.base import Host, Replica, ReplicaSpec
from ghaf.platform.ports import free_port

log = logging.getLogger("ghaf.deployments")

_PASSED = ("authorization", "content-type", "content-encoding", "inference-header-content-length")


def ray_available() -> bool:
    """Whether Ray Serve can be imported here (the ``ghaf[ray]`` extra)."""
    try:
        import ray  # noqa: F401
        from ray import serve  # noqa: F401
    except ImportError:
        return False
    return True


def refuse_without_ray() -> None:
    if not ray_available():
        raise InvalidInput(
            "host ray needs Ray Serve on the server: install the ghaf[ray] extra "
            "(pip install 'ghaf[ray]'), or use host embedded",
            field="host",
        )


def deployment_options(spec: ReplicaSpec) -> dict[str, Any]:
    """The variant's resources and scaling as Ray Serve deployment options."""
    scaling, resources = spec.scaling, spec.resources
    options: dict[str, Any] = {
        "ray_actor_options": {
            "num_cpus": resources.cpus,
            "num_gpus": resources.gpus,
            "memory": resources.memory_mb << 20,
        },
        "max_ongoing_requests": max(1, int(scaling.target_in_flight * 4)),
    }
    if scaling.min_replicas == scaling.max_replicas:
        options["num_replicas"] = scaling.max_replicas
    else:
        options["autoscaling_config"] = {
            "min_replicas": scaling.min_replicas,
            "initial_replicas": max(1, scaling.min_replicas),
            "max_replicas": scaling.max_replicas,
            "target_ongoing_requests": scaling.target_in_flight,
            "upscale_delay_s": scaling.upscale_window_s,
            "downscale_delay_s": scaling.downscale_window_s,
            "downscale_to_zero_delay_s": scaling.scale_to_zero_after_s,
        }
    return options


class ServedBundle:
    """One Ray replica: the serving app of a bundle, called in process.

    Ray constructs it in a worker with the bundle's files; the files are written to a
    private temporary folder, loaded (and checked against ``sha256``) and removed.
    """

    def __init__(
        self,
        files: Mapping[str, bytes],
        sha256: str,
        key: str,
        runtime: Mapping[str, Any],
        max_body_bytes: int,
    ) -> None:
        from ghaf.serving.app import ServingOptions, create_serving_app
        from ghaf.serving.auth import InvokeKey, KeyAuthorizer
        from ghaf.serving.batching import BatchingOptions
        from ghaf.serving.runtime import RuntimeOptions
        from ghaf.serving.standalone import prepare_bundle

        folder = Path(tempfile.mkdtemp(prefix="ghaf-ray-bundle-"))
        try:
            for name, data in files.items():
                path = folder / Path(name).name  # names the bundle wrote; never a path
                path.write_bytes(data)
                os.chmod(path, 0o600)
            loaded = prepare_bundle(
                folder,
                expected_sha256=sha256,
                options=RuntimeOptions(
                    device="gpu" if runtime.get("device") == "gpu" else "cpu",
                    allow_cpu_fallback=bool(runtime.get("allow_cpu_fallback")),
                    threads=runtime.get("threads"),
                ),
            )
        finally:
            shutil.rmtree(folder, ignore_errors=True)
        self._app = create_serving_app(
            [loaded],
            authorizer=KeyAuthorizer(
                InvokeKey(key, source="the gateway"), loaded.info.project or ""
            ),
            options=ServingOptions(
                batching=BatchingOptions(
                    max_batch_size=int(runtime.get("max_batch_size", 64)),
                    max_latency_ms=float(runtime.get("max_latency_ms", 2.0)),
                ),
                max_body_bytes=max_body_bytes,
            ),
        )
        self._client: Any = None
        self._lifespan: Any = None
        self._started = asyncio.Lock()

    async def _open(self) -> Any:
        async with self._started:
            if self._client is None:
                import httpx

                # The serving app's lifespan starts its batchers: entered once, here.
                self._lifespan = self._app.router.lifespan_context(self._app)
                await self._lifespan.__aenter__()
                self._client = httpx.AsyncClient(
                    transport=httpx.ASGITransport(app=self._app),
                    base_url="http://replica",
                    # In process: the gateway's own timeout bounds the request.
                    timeout=None,  # noqa: S113
                )
        return self._client

    async def __call__(self, request: Any) -> Any:
        from starlette.responses import Response

        client = self._client or await self._open()
        path = request.url.path
        prefix = request.scope.get("root_path", "")
        if prefix and path.startswith(prefix):
            path = path[len(prefix) :]
        headers = {k: v for k, v in request.headers.items() if k in _PASSED}
        answer = await client.request(
            request.method, path or "/", content=await request.body(), headers=headers
        )
        passed = {
            k: v
            for k, v in answer.headers.items()
            if k in ("content-type", "inference-header-content-length", "retry-after")
        }
        return Response(answer.content, status_code=answer.status_code, headers=passed)


class RayHost(Host):
    """Variants as Ray Serve applications behind Ray's HTTP proxy on 127.0.0.1."""

    def __init__(
        self,
        *,
        address: str | None = None,
        http_port: int = 0,
        start_timeout_s: float = 300.0,
        max_body_bytes: int = 32 << 20,
    ) -> None:
        self.address = address
        self.port = http_port or free_port()
        self.start_timeout_s = start_timeout_s
        self.max_body_bytes = max_body_bytes
        self._apps: dict[Replica, str] = {}  # each replica's application name
        self._cleanups: set[asyncio.Task[None]] = set()
        self._connected = False
        self._connecting = asyncio.Lock()

    def _connect(self) -> None:
        import ray
        from ray import serve

        if not ray.is_initialized():
            ray.init(
                address=self.address,
                include_dashboard=False,
                log_to_driver=False,
                ignore_reinit_error=True,
            )
        serve.start(http_options={"host": "127.0.0.1", "port": self.port})
        log.info("Ray Serve is up; its proxy answers on 127.0.0.1:%d", self.port)

    async def _ready(self) -> None:
        if self._connected:
            return
        async with self._connecting:
            if not self._connected:
                if not ray_available():
                    raise Unavailable(
                        "this server has no Ray Serve: install the ghaf[ray] extra to serve "
                        "host ray variants"
                    )
                await asyncio.to_thread(self._connect)
                self._connected = True

    async def start(self, spec: ReplicaSpec, bundle: Path) -> Replica:
        await self._ready()
        from ray import serve

        files = {p.name: p.read_bytes() for p in bundle.iterdir() if p.is_file()}
        key = secrets.token_urlsafe(32)
        digest = hashlib.sha256(repr(spec.key).encode()).hexdigest()[:16]
        name = f"ghaf-{digest}-{secrets.token_hex(3)}"
        deployment: Any = serve.deployment(ServedBundle, name="replica", **deployment_options(spec))
        app = deployment.bind(
            files, spec.sha256, key, spec.runtime.model_dump(), self.max_body_bytes
        )
        started = time.perf_counter()
        deploying = asyncio.ensure_future(
            asyncio.to_thread(serve.run, app, name=name, route_prefix=f"/{name}")
        )
        try:
            await asyncio.wait_for(asyncio.shield(deploying), self.start_timeout_s)
        except BaseException as failed:
            # The thread deploys on after a timeout or cancellation: delete once it ends,
            # so no application outlives its failed start untracked.
            cleanup = asyncio.create_task(_delete_after(deploying, name))
            self._cleanups.add(cleanup)
            cleanup.add_done_callback(self._cleanups.discard)
            if isinstance(failed, Exception) and not isinstance(failed, Unavailable):
                raise Unavailable(
                    f"Ray Serve did not start variant {spec.variant!r} "
                    f"({spec.model}:{spec.version}): {type(failed).__name__}: {failed}"
                ) from None
            raise
        replica = Replica(
            spec=spec,
            url=f"http://127.0.0.1:{self.port}",
            authorization=f"Bearer {key}",
            started_s=time.perf_counter() - started,
            prefix=f"/{name}",
        )
        self._apps[replica] = name
        return replica

    def running(self, replica: Replica) -> bool:
        # Ray restarts a replica that dies on its own; the application stays ours.
        return replica in self._apps

    async def stop(self, replica: Replica) -> None:
        name = self._apps.pop(replica, None)
        if name is not None:
            await asyncio.to_thread(_delete, name)

    @property
    def scales_itself(self) -> bool:
        return True

    async def close(self) -> None:
        """A Ray this server started goes with it; a cluster it joined stays."""
        if self._connected and self.address is None:
            await asyncio.to_thread(_shutdown)
            self._connected = False


def _shutdown() -> None:
    import ray
    from ray import serve

    try:
        serve.shutdown()
    finally:
        ray.shutdown()


async def _delete_after(deploying: asyncio.Future[Any], name: str) -> None:
    with contextlib.suppress(BaseException):
        await deploying
    await asyncio.to_thread(_delete, name)


def _delete(name: str) -> None:
    try:
        from ray import serve

        serve.delete(name)
    except Exception:  # gone already, or Ray is away
        log.warning("could not delete Ray Serve application %s", name, exc_info=True)
