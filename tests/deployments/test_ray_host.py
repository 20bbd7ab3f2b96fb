"""The Ray Serve host (``host: ray``): a variant becomes a Ray Serve application on a
local Ray that the server starts; the gateway's answers come from it; the spec's
resources and scaling map onto Ray's options; without Ray the host is refused."""

from __future__ import annotations

import os
from collections.abc import Callable

import httpx
import numpy as np
import pytest

from ghaf.client import Client
from ghaf.core.errors import InvalidInput
from ghaf.deployments.hosts import ray as ray_host
from ghaf.deployments.hosts.base import ReplicaSpec
from ghaf.deployments.schemas import Resources, Scaling
from tests.conftest import Platform, TrainedModel, replica_spec


def _spec(scaling: Scaling, resources: Resources | None = None) -> ReplicaSpec:
    spec: ReplicaSpec = replica_spec(
        scaling=scaling, resources=resources or Resources(), host="ray"
    )
    return spec


def test_a_fixed_range_is_a_replica_count_and_resources_are_actor_options() -> None:
    options = ray_host.deployment_options(
        _spec(Scaling(min_replicas=2, max_replicas=2), Resources(cpus=0.5, memory_mb=512, gpus=1))
    )
    assert options["num_replicas"] == 2 and "autoscaling_config" not in options
    assert options["ray_actor_options"] == {"num_cpus": 0.5, "num_gpus": 1, "memory": 512 << 20}


def test_a_range_maps_onto_rays_autoscaling() -> None:
    scaling = Scaling(
        min_replicas=0,
        max_replicas=4,
        target_in_flight=3,
        upscale_window_s=2,
        downscale_window_s=30,
        scale_to_zero_after_s=120,
    )
    config = ray_host.deployment_options(_spec(scaling))["autoscaling_config"]
    assert config == {
        "min_replicas": 0,
        "initial_replicas": 1,
        "max_replicas": 4,
        "target_ongoing_requests": 3,
        "upscale_delay_s": 2,
        "downscale_delay_s": 30,
        "downscale_to_zero_delay_s": 120,
    }


def test_host_ray_is_refused_where_ray_is_not_installed(
    admin: Client, project: str, trained: TrainedModel, monkeypatch: pytest.MonkeyPatch
) -> None:
    admin.models.register(project, "churn", path=trained.path, sample=trained.X[:5])
    monkeypatch.setattr(ray_host, "ray_available", lambda: False)
    with pytest.raises(InvalidInput, match=r"ghaf\[ray\] extra") as info:
        admin.deployments.create(
            project,
            "on-ray",
            host="ray",
            variants=[{"name": "a", "model": "churn", "version": 1, "weight": 100}],
        )
    assert info.value.field == "host"


@pytest.mark.timeout(420)
def test_a_variant_is_served_by_ray_serve(
    fresh_platform: Callable[..., Platform], trained: TrainedModel
) -> None:
    if not ray_host.ray_available():
        why = "Ray Serve is not installed (the ghaf[ray] extra; make test installs it)"
        if os.environ.get("CI") == "true":
            pytest.fail(why)
        pytest.skip(why)
    # A platform of its own: when it stops, so does the local Ray it started (its
    # processes would otherwise take CPU from the rest of the suite).
    live = fresh_platform()
    admin, project = live.admin, "on-ray"
    admin.projects.create(project)
    admin.models.register(project, "churn", path=trained.path, sample=trained.X[:5])
    admin.deployments.create(
        project,
        "on-ray",
        host="ray",
        variants=[
            {"name": "a", "model": "churn", "version": 1, "weight": 100,
             "resources": {"cpus": 0.5, "memory_mb": 512}},
        ],
    )  # fmt: skip
    rows = np.asarray(trained.X[:3])
    expected = trained.model.predict(rows).tolist()  # type: ignore[attr-defined]
    # The first request waits while the server starts Ray, Ray Serve and the application.
    first = httpx.post(
        f"{live.url}/api/v1/projects/{project}/deployments/on-ray/predict",
        json=rows.tolist(),
        headers={"authorization": f"Bearer {live.admin_token}"},
        timeout=360,
    )
    assert first.status_code == 200, first.text
    assert first.headers["x-ghaf-variant"] == "a" and first.json() == expected
    again = admin.deployments.predict(project, "on-ray", rows[:1].tolist())
    assert again.predictions == expected[:1]
    with pytest.raises(InvalidInput, match="records"):  # the replica's own refusal, passed on
        admin.deployments.predict(project, "on-ray", {"nope": [1]})
    metrics = admin.deployments.metrics(project)
    assert 'ghaf_deployment_requests_total{deployment="on-ray",outcome="ok"' in metrics
    admin.deployments.delete(project, "on-ray")
