"""NVIDIA's tritonclient HTTP client, unmodified, against the serving app: health, server
and model metadata, readiness, and infer in JSON and binary mode, with the caller's
token in ``headers=`` and the platform checking it.

tritonclient's gevent pins greenlet below what ghaf installs, so it lives in the tool
venv (``make .venv-tools/.installed``, part of ``make test``) and runs in a subprocess.
"""

from __future__ import annotations

import json
import os
import subprocess
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import numpy as np
import pytest

from ghaf.serving.app import ServingOptions, create_serving_app
from ghaf.serving.auth import PlatformAuthorizer
from ghaf.serving.standalone import prepare
from tests.conftest import Platform
from tests.serving.conftest import Registered, bearer, running

TOOLS_PYTHON = Path(__file__).resolve().parents[2] / ".venv-tools" / "bin" / "python"

_CLIENT = r"""
import json, sys
import numpy as np
import tritonclient.http as triton
from tritonclient.utils import InferenceServerException

url, token, name, x_path = sys.argv[1:]
headers = {"Authorization": f"Bearer {token}"}
client = triton.InferenceServerClient(url=url)
X = np.load(x_path)
out = {
    "live": client.is_server_live(headers=headers),
    "ready": client.is_server_ready(headers=headers),
    "server": client.get_server_metadata(headers=headers),
    "model": client.get_model_metadata("forest", headers=headers),
    "version": client.get_model_metadata("forest", "1", headers=headers),
    "model_ready": client.is_model_ready("forest", headers=headers),
    "version_ready": client.is_model_ready("forest", "1", headers=headers),
}


def infer(binary, outputs=True, **options):
    tensor = triton.InferInput(name, list(X.shape), "FP32")
    tensor.set_data_from_numpy(X, binary_data=binary)
    wanted = None
    if outputs:
        wanted = [
            triton.InferRequestedOutput("label", binary_data=binary),
            triton.InferRequestedOutput("probabilities", binary_data=binary),
        ]
    # A copy: tritonclient writes Content-Encoding into the headers dict it is given.
    result = client.infer("forest", [tensor], outputs=wanted, headers=dict(headers), **options)
    return {
        "id": result.get_response().get("id"),
        "version": result.get_response()["model_version"],
        "label": result.as_numpy("label").tolist(),
        "probabilities": result.as_numpy("probabilities").tolist(),
        "binary": [
            "binary_data_size" in o.get("parameters", {}) for o in result.get_response()["outputs"]
        ],
    }


out["json"] = infer(False, request_id="json-1")
out["binary"] = infer(True, request_id="bin-1", model_version="1")
out["default_outputs"] = infer(True, outputs=False)
out["gzip"] = infer(True, request_compression_algorithm="gzip")


def refused(call):
    try:
        call()
    except InferenceServerException as error:
        return {"status": error.status(), "message": error.message()}
    return None


bad = triton.InferInput(name, [X.shape[0], 3], "FP32")
bad.set_data_from_numpy(X[:, :3].copy(), binary_data=True)
out["bad_shape"] = refused(lambda: client.infer("forest", [bad], headers=headers))
out["no_token"] = refused(lambda: client.get_model_metadata("forest"))
out["unknown"] = refused(lambda: client.get_model_metadata("nope", headers=headers))
print(json.dumps(out))
"""


def _tools_python() -> Path:
    message = (
        f"tritonclient is missing from {TOOLS_PYTHON.parent.parent}: run `rm -rf .venv-tools "
        "&& make .venv-tools/.installed`"
    )
    if TOOLS_PYTHON.exists():
        found = subprocess.run(
            [str(TOOLS_PYTHON), "-c", "import tritonclient.http"], capture_output=True
        )
        if found.returncode == 0:
            return TOOLS_PYTHON
    if os.environ.get("CI") == "true":
        pytest.fail(message)
    pytest.skip(message)


@pytest.fixture(scope="module")
def url(
    platform: Platform, registered: Registered, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[str]:
    folder = tmp_path_factory.mktemp("triton")
    forest = prepare(platform.client().models, registered.project, "forest:1", folder)
    app = create_serving_app(
        [forest],
        authorizer=PlatformAuthorizer(platform.runtime, registered.project),
        options=ServingOptions(),
    )
    with running(app) as found:
        yield found


def test_tritonclient_works_unmodified(url: str, registered: Registered, tmp_path: Path) -> None:
    python = _tools_python()
    X = registered.X20[:17]
    np.save(tmp_path / "X.npy", X)
    token = bearer(registered.member)["authorization"].removeprefix("Bearer ")
    name = registered.forest.inputs[0]["name"]
    run = subprocess.run(
        [
            str(python),
            "-c",
            _CLIENT,
            url.removeprefix("http://"),
            token,
            name,
            str(tmp_path / "X.npy"),
        ],
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert run.returncode == 0, run.stderr
    out: dict[str, Any] = json.loads(run.stdout.strip().splitlines()[-1])

    assert out["live"] is True and out["ready"] is True
    assert out["server"]["name"] == "ghaf"
    assert "binary_tensor_data" in out["server"]["extensions"]
    assert out["model"]["name"] == "forest" and out["model"]["versions"] == ["1"]
    assert out["model"]["inputs"] == [{"name": name, "datatype": "FP32", "shape": [-1, 20]}]
    assert out["version"]["name"] == "forest"
    assert out["model_ready"] is True and out["version_ready"] is True

    model = registered.forest_model
    labels, proba = model.predict(X).tolist(), model.predict_proba(X)
    for mode, binary in (("json", False), ("binary", True), ("default_outputs", True)):
        answer = out[mode]
        assert answer["label"] == labels, mode
        np.testing.assert_allclose(answer["probabilities"], proba, atol=1e-5, err_msg=mode)
        assert set(answer["binary"]) == {binary}, mode
        assert answer["version"] == "1"
    assert out["json"]["id"] == "json-1" and out["binary"]["id"] == "bin-1"
    assert out["gzip"]["label"] == labels

    assert out["bad_shape"]["status"] == "400"
    assert (
        f"input {name!r}: has shape [17, 3], the model takes shape [-1, 20]"
        in (out["bad_shape"]["message"])
    )
    assert out["no_token"]["status"] == "401"
    assert out["unknown"]["status"] == "404"
    assert "no model 'nope' is served here" in out["unknown"]["message"]
