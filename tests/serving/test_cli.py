"""``ghaf serve``: a real process that fetches, verifies and serves a version."""

from __future__ import annotations

import os
from pathlib import Path

import httpx
import pytest
from typer.testing import CliRunner

from ghaf.cli.main import app
from ghaf.serving.standalone import parse_ref
from tests.conftest import Platform
from tests.serving.conftest import Registered, bearer, ghaf_serve

runner = CliRunner()


def test_refs_name_an_alias_a_number_or_the_latest() -> None:
    assert parse_ref("churn@prod") == ("churn", "@prod")
    assert parse_ref("churn:3") == ("churn", "3")
    assert parse_ref("churn") == ("churn", "latest")


@pytest.mark.parametrize(
    ("ref", "message"),
    [
        ("churn:x", "after ':' comes a version number"),
        ("churn@", "name the alias after '@'"),
        ("../x", "model"),
        ("nope@prod", "has no model 'nope'"),
        ("churn@nowhere", "has no alias 'nowhere'"),
    ],
)
def test_bad_refs_exit_2_with_one_line(
    admin_cli: Path, registered: Registered, ref: str, message: str
) -> None:
    result = runner.invoke(app, ["serve", ref, "-p", registered.project, "--port", "1"])
    assert result.exit_code == 2, result.output
    assert message in result.output


def test_gpu_without_cuda_exits_before_listening(admin_cli: Path, registered: Registered) -> None:
    import onnxruntime as ort

    if "CUDAExecutionProvider" in ort.get_available_providers():
        pytest.skip("this machine has CUDA")
    result = runner.invoke(app, ["serve", "forest", "-p", registered.project, "--device", "gpu"])
    assert result.exit_code == 1, result.output
    assert "--allow-cpu-fallback" in result.output


def test_serve_runs_a_server_that_checks_tokens_with_the_platform(
    platform: Platform, registered: Registered, tmp_path: Path
) -> None:
    env = {
        **os.environ,
        "GHAF_URL": platform.url,
        "GHAF_TOKEN": platform.admin_token,
        "GHAF_CREDENTIALS": str(tmp_path / "credentials.json"),
    }
    args = ["churn@prod", "-p", registered.project, "--max-batch-size", "16"]
    with ghaf_serve(args, env) as served:
        url = served.url
        X = registered.X4[:3]
        tensor = {"name": "X", "datatype": "FP64", "shape": [3, 4], "data": X.ravel().tolist()}
        answer = httpx.post(
            f"{url}/v2/models/churn/infer",
            json={"inputs": [tensor]},
            headers=bearer(registered.member),
        )
        assert answer.status_code == 200, answer.text
        outputs = {o["name"]: o["data"] for o in answer.json()["outputs"]}
        assert outputs["predictions"] == registered.churn_model.predict(X).tolist()
        assert httpx.get(f"{url}/v2").status_code == 401
        assert httpx.get(f"{url}/v2", headers=bearer(registered.viewer)).status_code == 403
        rows = httpx.post(f"{url}/predict", json=X.tolist(), headers=bearer(registered.member))
        assert rows.json() == outputs["predictions"]
    assert f"serving churn v{registered.churn.version} (cpu)" in served.output
    assert platform.admin_token not in served.output
