"""The Open Inference Protocol at the server's root, as OIP clients (tritonclient's HTTP
client) call it: /v2/models/{deployment}/infer with the project in x-ghaf-project (or a
service account token's own), metadata and readiness, a version path picking a variant
(deployment:debug), anonymous health, and clear refusals."""

from __future__ import annotations

from collections.abc import Callable

import httpx
import numpy as np
import pytest

from ghaf.client import Client
from tests.conftest import Platform, TrainedModel, unique


@pytest.fixture
def deployed(admin: Client, two_versions: str) -> str:
    project = two_versions
    admin.deployments.create(
        project,
        "api",
        variants=[
            {"name": "a", "model": "churn", "version": 1, "weight": 50},
            {"name": "b", "model": "churn", "version": 2, "weight": 50},
        ],
    )
    return project


def _body(trained: TrainedModel, rows: int = 2) -> dict[str, object]:
    data = np.asarray(trained.X[:rows])
    return {
        "inputs": [
            {"name": "X", "shape": list(data.shape), "datatype": "FP64",
             "data": data.ravel().tolist()}
        ]
    }  # fmt: skip


def test_infer_at_the_root_with_the_project_header(
    platform: Platform, deployed: str, trained: TrainedModel
) -> None:
    headers = {"authorization": f"Bearer {platform.admin_token}", "x-ghaf-project": deployed}
    answer = httpx.post(
        f"{platform.url}/v2/models/api/infer", json=_body(trained), headers=headers, timeout=60
    )
    assert answer.status_code == 200, answer.text
    document = answer.json()
    assert document["model_name"] == "api" and document["model_version"] in {"a", "b"}
    assert answer.headers["x-ghaf-variant"] == document["model_version"]
    assert answer.headers["x-ghaf-outcome-id"]
    ready = httpx.get(f"{platform.url}/v2/models/api/ready", headers=headers, timeout=60)
    assert ready.status_code == 200 and ready.json() == {"name": "api", "ready": True}
    meta = httpx.get(f"{platform.url}/v2/models/api", headers=headers, timeout=60)
    assert meta.status_code == 200, meta.text
    assert meta.json()["name"] == "api" and sorted(meta.json()["versions"]) == ["a", "b"]
    assert meta.json()["inputs"][0]["name"] == "X"
    forced = httpx.post(
        f"{platform.url}/v2/models/api/versions/b/infer",
        json=_body(trained),
        headers=headers,
        timeout=60,
    )
    assert forced.status_code == 200 and forced.json()["model_version"] == "b"


def test_a_service_account_token_names_its_own_project(
    platform: Platform, admin: Client, deployed: str, trained: TrainedModel
) -> None:
    account = admin.service_accounts.create(deployed, unique("sa"), role="member").name
    token = admin.service_accounts.create_token(deployed, account, token_name="t").token
    answer = httpx.post(
        f"{platform.url}/v2/models/api/infer",
        json=_body(trained),
        headers={"authorization": f"Bearer {token}"},
        timeout=60,
    )
    assert answer.status_code == 200, answer.text
    # A member may not pick a variant (deployment:debug).
    picked = httpx.post(
        f"{platform.url}/v2/models/api/versions/a/infer",
        json=_body(trained),
        headers={"authorization": f"Bearer {token}"},
        timeout=60,
    )
    assert picked.status_code == 403 and "deployment:debug" in picked.text


def test_refusals_are_clear_and_outsiders_learn_nothing(
    platform: Platform,
    deployed: str,
    trained: TrainedModel,
    member_in: Callable[[str, str], tuple[str, Client]],
) -> None:
    url = f"{platform.url}/v2/models/api/infer"
    admin = {"authorization": f"Bearer {platform.admin_token}"}
    anonymous = httpx.post(url, json=_body(trained), headers={"x-ghaf-project": deployed})
    assert anonymous.status_code == 401
    no_project = httpx.post(url, json=_body(trained), headers=admin, timeout=60)
    assert no_project.status_code == 422 and no_project.json()["field"] == "x-ghaf-project"
    ghost = httpx.post(
        f"{platform.url}/v2/models/ghost/infer",
        json=_body(trained),
        headers={**admin, "x-ghaf-project": deployed},
        timeout=60,
    )
    assert ghost.status_code == 404 and "ghost" in ghost.text
    hostile = httpx.post(
        url, json=_body(trained), headers={**admin, "x-ghaf-project": "../etc"}, timeout=60
    )
    assert hostile.status_code in (404, 422) and hostile.json()["request_id"]
    bad = httpx.post(
        url, json={"inputs": [{"name": "nope"}]}, headers={**admin, "x-ghaf-project": deployed},
        timeout=60,
    )  # fmt: skip
    assert bad.status_code == 400 and "nope" in bad.text
    # Someone of another project: 404, as for a project that does not exist.
    other = Client(url=platform.url, token=platform.admin_token).projects.create("o-" + deployed)
    _, outsider = member_in(other.name, "owner")
    token = outsider._http.headers["authorization"]
    for headers in ({"x-ghaf-project": deployed}, {"x-ghaf-project": "nowhere"}):
        refused = httpx.post(
            url, json=_body(trained), headers={"authorization": token, **headers}, timeout=60
        )
        assert refused.status_code == 404, refused.text
        assert "api" not in refused.json()["detail"]
    for path in ("/v2/health/live", "/v2/health/ready", "/v2"):
        assert httpx.get(platform.url + path).status_code == 200  # no token: no names
