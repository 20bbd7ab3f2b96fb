"""Bundles: ``client.models.download(..., bundle=True)`` / ``ghaf models download
--bundle DIR`` write a self-describing folder that serves with no platform."""

from __future__ import annotations

import json
from collections.abc import Callable
from pathlib import Path
from typing import Any

import httpx
import numpy as np
import pytest
from typer.testing import CliRunner

from ghaf.cli.main import app
from ghaf.client import Client
from ghaf.core.errors import InvalidInput
from ghaf.serving import bundle
from ghaf.serving.app import create_serving_app
from ghaf.serving.standalone import prepare_bundle
from tests.conftest import Platform
from tests.serving.conftest import AllowAll, Registered, ghaf_serve

runner = CliRunner()


@pytest.fixture(scope="module")
def churn_bundle(
    platform: Platform, registered: Registered, tmp_path_factory: pytest.TempPathFactory
) -> Path:
    folder = tmp_path_factory.mktemp("bundles") / "churn"
    made = platform.client().models.download(
        registered.project, "churn@prod", destination=folder, bundle=True
    )
    assert made == folder
    return folder


def test_a_bundle_holds_the_file_its_metadata_card_and_a_manifest(
    churn_bundle: Path, registered: Registered
) -> None:
    names = sorted(p.name for p in churn_bundle.iterdir())
    assert names == ["card.md", "manifest.json", "model.skops", "version.json"]
    manifest = json.loads((churn_bundle / "manifest.json").read_text())
    churn = registered.churn
    assert manifest["kind"] == "ghaf-model-bundle"
    assert manifest["bundle_version"] == 1
    assert (manifest["model"], manifest["version"], manifest["project"]) == (
        "churn",
        churn.version,
        registered.project,
    )
    assert manifest["format"] == "skops"
    assert manifest["sha256"] == churn.sha256
    assert manifest["inputs"] == churn.inputs
    assert manifest["outputs"] == churn.outputs
    assert manifest["filename"] == churn.filename
    roles = {f["role"]: f for f in manifest["files"]}
    assert roles["model"] == {
        "name": "model.skops",
        "role": "model",
        "size": churn.size,
        "sha256": churn.sha256,
    }
    assert set(roles) == {"model", "metadata", "card"}
    assert json.loads((churn_bundle / "version.json").read_text())["sha256"] == churn.sha256
    card = (churn_bundle / "card.md").read_text()
    assert card.startswith("# ") and "churn" in card.splitlines()[0]


def test_the_cli_writes_a_bundle_and_names_the_serve_command(
    admin_cli: Path, registered: Registered, tmp_path: Path
) -> None:
    folder = tmp_path / "forest-bundle"
    result = runner.invoke(
        app,
        ["models", "download", "forest", "-p", registered.project, "--bundle", str(folder)],
    )
    assert result.exit_code == 0, result.output
    assert "ghaf serve --bundle" in result.output
    manifest = bundle.read_manifest(folder)
    assert (manifest.model, manifest.format) == ("forest", "onnx")
    assert (folder / "model.onnx").is_file()


def test_a_bundle_is_never_written_into_a_folder_that_holds_files(
    admin_cli: Path, registered: Registered, tmp_path: Path
) -> None:
    (tmp_path / "keep.txt").write_text("mine")
    result = runner.invoke(
        app,
        ["models", "download", "churn@prod", "-p", registered.project, "--bundle", str(tmp_path)],
    )
    assert result.exit_code == 2, result.output
    assert "not empty" in result.output
    assert sorted(p.name for p in tmp_path.iterdir()) == ["keep.txt"]


def test_the_onnx_conversion_is_not_bundled(
    platform: Platform, registered: Registered, tmp_path: Path
) -> None:
    with pytest.raises(InvalidInput, match="a bundle holds the registered file"):
        platform.client().models.download(
            registered.project, "churn@prod", destination=tmp_path, onnx=True, bundle=True
        )


def test_a_failed_download_leaves_no_half_bundle(
    platform: Platform, registered: Registered, tmp_path: Path
) -> None:
    folder = tmp_path / "b"
    with pytest.raises(Exception, match="has no model 'nope'"):
        platform.client().models.download(
            registered.project, "nope@prod", destination=folder, bundle=True
        )
    assert not folder.exists() or not any(folder.iterdir())


def test_a_member_without_policy_access_still_bundles(
    registered: Registered, tmp_path: Path
) -> None:
    """A member may read the model but perhaps not the policy: the bundle then trusts
    only the built-in safe types."""
    folder = registered.member.models.download(
        registered.project, "churn@prod", destination=tmp_path / "b", bundle=True
    )
    assert bundle.read_manifest(folder).trusted_types == []


def test_a_bundle_serves_the_same_predictions_with_no_platform(
    churn_bundle: Path, registered: Registered, serve_app: Callable[[Any], Any]
) -> None:
    loaded = prepare_bundle(churn_bundle, expected_sha256=registered.churn.sha256)
    assert (loaded.name, loaded.version) == ("churn", str(registered.churn.version))
    rows = registered.X4[:7]
    expected = registered.churn_model.predict(rows)
    serving = create_serving_app([loaded], authorizer=AllowAll())
    with serve_app(serving) as url, httpx.Client(base_url=url, timeout=30) as http:
        answer = http.post(
            "/v2/models/churn/infer",
            json={
                "id": "b1",
                "inputs": [
                    {
                        "name": "X",
                        "datatype": "FP64",
                        "shape": list(rows.shape),
                        "data": rows.tolist(),
                    }
                ],
            },
        )
        assert answer.status_code == 200, answer.text
        outputs = {o["name"]: o for o in answer.json()["outputs"]}
        assert answer.json()["id"] == "b1"
        np.testing.assert_array_equal(outputs["predictions"]["data"], expected)
        plain = http.post("/predict", json=rows.tolist())
        assert plain.status_code == 200, plain.text
        np.testing.assert_array_equal(plain.json(), expected)


def test_the_bundle_sdk_call_follows_the_download_vocabulary(platform: Platform) -> None:
    import inspect

    parameters = inspect.signature(Client(url=platform.url, token="x").models.download).parameters
    assert parameters["bundle"].kind is inspect.Parameter.KEYWORD_ONLY
    assert parameters["bundle"].default is False


def _key_file(folder: Path, key: str) -> Path:
    path = folder / "invoke.key"
    path.write_text(key + "\n")
    path.chmod(0o600)
    return path


@pytest.mark.parametrize(
    ("arguments", "message"),
    [
        (["churn@prod", "--bundle", "B"], "not both"),
        (["--sha256", "0" * 64], "goes with --bundle"),
        ([], "give --bundle DIR"),
        (["--bundle", "B"], "--invoke-key-file"),
    ],
)
def test_serve_bundle_usage_errors_exit_2(
    cli_env: Path,
    churn_bundle: Path,
    monkeypatch: pytest.MonkeyPatch,
    arguments: list[str],
    message: str,
) -> None:
    monkeypatch.delenv("GHAF_SERVE_INVOKE_KEY", raising=False)
    monkeypatch.delenv("GHAF_SERVE_INVOKE_KEY_FILE", raising=False)
    arguments = [str(churn_bundle) if a == "B" else a for a in arguments]
    result = runner.invoke(app, ["serve", *arguments, "--port", "1"])
    assert result.exit_code == 2, result.output
    assert message in result.output


def test_serve_bundle_refuses_a_wrong_pin_before_listening(
    cli_env: Path, churn_bundle: Path, tmp_path: Path
) -> None:
    key = _key_file(tmp_path, "k" * 40)
    result = runner.invoke(
        app,
        [
            *["serve", "--bundle", str(churn_bundle), "--invoke-key-file", str(key)],
            *["--sha256", "0" * 64, "--port", "1"],
        ],
    )
    assert result.exit_code != 0, result.output
    assert "not the pinned" in result.output


def test_serve_bundle_runs_air_gapped_behind_its_invoke_key(
    churn_bundle: Path, registered: Registered, platform: Platform, tmp_path: Path
) -> None:
    """No platform URL, no login: the server answers its invoke key only."""
    import os
    import secrets

    key = secrets.token_urlsafe(32)
    env = {k: v for k, v in os.environ.items() if not k.startswith("GHAF_")}
    env["GHAF_CREDENTIALS"] = str(tmp_path / "none.json")  # no stored login either
    env["GHAF_HOME"] = str(tmp_path / "home")
    args = ["--bundle", str(churn_bundle), "--invoke-key-file", str(_key_file(tmp_path, key))]
    with ghaf_serve([*args, "--sha256", registered.churn.sha256], env) as served:
        url = served.url
        rows = registered.X4[:5]
        answer = httpx.post(
            f"{url}/predict", json=rows.tolist(), headers={"authorization": f"Bearer {key}"}
        )
        assert answer.status_code == 200, answer.text
        assert answer.json() == registered.churn_model.predict(rows).tolist()
        meta = httpx.get(f"{url}/v2/models/churn", headers={"authorization": f"Bearer {key}"})
        assert meta.json()["versions"] == [str(registered.churn.version)]
        # A platform token means nothing here: there is no platform to ask.
        admin = {"authorization": f"Bearer {platform.admin_token}"}
        assert httpx.post(f"{url}/predict", json=rows.tolist(), headers=admin).status_code == 401
        assert httpx.post(f"{url}/predict", json=rows.tolist()).status_code == 401
    assert key not in served.output
    assert "no prediction log" in served.output


def test_a_bundle_carries_the_policy_types_its_file_needs_and_trusts_them_when_pinned(
    platform: Platform, tmp_path: Path
) -> None:
    import operator

    import skops.io as sio
    from sklearn.linear_model import LogisticRegression
    from sklearn.pipeline import make_pipeline
    from sklearn.preprocessing import FunctionTransformer

    from tests.conftest import unique

    X = np.random.default_rng(5).normal(size=(60, 3))
    y = (X[:, 0] > 0).astype(int)
    model = make_pipeline(FunctionTransformer(operator.neg), LogisticRegression()).fit(X, y)
    path = tmp_path / "negated.skops"
    sio.dump(model, path)
    admin = platform.client()
    project = admin.projects.create(unique("trust")).name
    admin.models.set_policy(project, "trusted_types: [_operator.neg, somewhere.Else]\n")
    version = admin.models.register(project, "negated", path=path, sample=X[:5])

    folder = admin.models.download(project, "negated", destination=tmp_path / "b", bundle=True)
    assert bundle.read_manifest(folder).trusted_types == ["_operator.neg"]
    with pytest.raises(InvalidInput, match=r"_operator\.neg.*pass --sha256"):
        prepare_bundle(folder)
    loaded = prepare_bundle(folder, expected_sha256=version.sha256)
    got = loaded.predict({"X": X[:9]})["predictions"]
    np.testing.assert_array_equal(got, model.predict(X[:9]))
