"""Names that become paths on a disk: refused where they enter (REST, SDK), and again by
the SDK and CLI before anything is written, whatever a server hands out."""

from __future__ import annotations

import hashlib
import os
from pathlib import Path

import pytest
from sqlalchemy import select, update
from typer.testing import CliRunner

from ghaf.cli.main import app
from ghaf.client import Client
from ghaf.client.files import Destination
from ghaf.core.errors import InvalidInput
from ghaf.core.paths import file_name, relative_path
from ghaf.datasets.models import Dataset, DatasetFile, DatasetVersion
from ghaf.registry import tensors
from ghaf.registry.models import ModelVersion
from ghaf.security.tenancy import Project
from ghaf.tracking.models import RunArtifact
from tests.conftest import Platform, TrainedModel

# Each would land somewhere else than "a file inside the folder" on some system or tool.
HOSTILE = [
    "../../x.skops",
    "..",
    "/etc/x",
    "C:\\x",
    "C:x.skops",
    "a/../../b",
    "\\\\server\\share\\x",
    "a\\..\\b",
    "\uff0e\uff0e\uff0fx",  # fullwidth '../x'
    "\u2024\u2024/x",  # one-dot leaders: '../x' after NFKC
    "a\uff0fb",  # fullwidth solidus
    "x\x00.skops",
    "x\n.skops",
    "x\u202e.skops",  # right-to-left override
    "name\ufffd.txt",  # what '%ff' decodes to when replaced
    "x\udcff.skops",  # a lone surrogate
    "a//b",
    "./a",
    "...",
    ". .",
    "",
    "n" * 256,
    "a/" * 600 + "b",
]
VALID = ["model.skops", "a/b/c.txt", "données/é.csv", "x" * 255, "with space/and-dash_1.bin"]


@pytest.mark.parametrize("value", HOSTILE)
def test_the_validator_refuses_each_hostile_name(value: str) -> None:
    with pytest.raises(InvalidInput) as info:
        relative_path(value, field="path")
    assert info.value.field == "path"


@pytest.mark.parametrize("value", VALID)
def test_the_validator_keeps_ordinary_names(value: str) -> None:
    assert relative_path(value) == value


def test_a_file_name_has_no_folder() -> None:
    assert file_name("model.skops") == "model.skops"
    with pytest.raises(InvalidInput, match="not a path"):
        file_name("sub/model.skops")


def test_nfc_is_kept_and_compatibility_forms_refused() -> None:
    assert relative_path("e\u0301.csv") == "\u00e9.csv"
    with pytest.raises(InvalidInput, match="U\\+FF0F"):
        relative_path("a\uff0fb")


# --- every entry point on the server ---------------------------------------------------

ENTRY_HOSTILE = [
    "../../x.skops",
    "/etc/x",
    "C:\\x",
    "a/../../b",
    "\\\\server\\share",
    "a\uff0fb",
    "x\x00y",
    "name\ufffd.txt",
    "n" * 2000,
]


@pytest.mark.parametrize("value", ENTRY_HOSTILE)
def test_every_entry_point_refuses_hostile_names(
    platform: Platform, admin: Client, project: str, trained: TrainedModel, value: str
) -> None:
    content = trained.path.read_bytes()
    digest, size = admin.artifacts.put_blob(project, content)
    sample = tensors.to_wire(tensors.from_user(trained.X[:3]))
    base = f"/api/v1/projects/{project}"
    admin.datasets.create(project, "ds")
    run = admin.runs.create(project, "e")
    attempts = {
        "file.filename": lambda: admin.request(
            "POST",
            f"{base}/models/m/versions",
            json={
                "file": {"sha256": digest, "size": size, "filename": value},
                "sample": sample,
            },
        ),
        "run.artifact": lambda: admin.request(
            "POST", f"{base}/models/m/versions", json={"run": {"run": run.id, "artifact": value}}
        ),
        "files.0.path": lambda: admin.request(
            "POST",
            f"{base}/datasets/ds/versions",
            json={"files": [{"path": value, "size": size, "sha256": digest}]},
        ),
        "artifact link": lambda: admin.request(
            "POST", f"{base}/artifacts:link", json={"path": value, "sha256": digest}
        ),
        "run artifact": lambda: admin.request(
            "POST",
            f"{base}/runs/{run.id}/artifacts",
            json={"path": value, "sha256": digest, "size": size},
        ),
    }
    for where, attempt in attempts.items():
        with pytest.raises(InvalidInput) as info:
            attempt()
        assert info.value.field, where
        assert info.value.status == 422, where
    # Nothing was stored under any name.
    assert admin.models.list(project) == []
    assert admin.datasets.versions(project, "ds") == []
    assert admin.artifacts.list(project) == []
    assert admin.runs.artifacts(project, run.id) == []


@pytest.mark.parametrize("value", ["../../x.bin", "a/../../b", "%2e%2e/x", "a%5cb", "a%00b"])
def test_artifact_puts_refuse_hostile_paths_in_the_url(
    platform: Platform, admin: Client, project: str, value: str
) -> None:
    import httpx

    response = httpx.put(
        f"{platform.url}/api/v1/projects/{project}/artifacts/{value}",
        content=b"x",
        headers={
            "Authorization": f"Bearer {platform.admin_token}",
            "X-Ghaf-SHA256": hashlib.sha256(b"x").hexdigest(),
        },
    )
    assert 400 <= response.status_code < 500
    assert response.headers["content-type"].startswith("application/problem+json")
    assert admin.artifacts.list(project) == []


def test_sdk_refuses_hostile_names_before_sending(admin: Client, project: str) -> None:
    with pytest.raises(InvalidInput):
        admin.artifacts.upload(project, "../x.bin", b"x")
    with pytest.raises(InvalidInput):
        admin.runs.log_artifact(project, admin.runs.create(project, "e").id, b"x", path="/etc/x")


# --- the SDK and CLI never write outside the destination -------------------------------


def _set(platform: Platform, statement: object) -> None:
    with platform.runtime.database.transaction() as session:
        session.execute(statement)  # type: ignore[call-overload]


def _outside(root: Path) -> list[Path]:
    return [p for p in root.rglob("*") if "dest" not in p.relative_to(root).parts]


def test_a_hostile_model_file_name_from_the_server_is_never_written(
    platform: Platform,
    admin: Client,
    project: str,
    trained: TrainedModel,
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    version = admin.models.register(project, "m", path=trained.path, sample=trained.X[:3])
    # As if the server (or an old row, or a proxy) handed out a path, not a name.
    _set(
        platform,
        update(ModelVersion).where(ModelVersion.id == version.id).values(filename="../../x.skops"),
    )
    root = tmp_path / "root"
    dest = root / "a" / "dest"
    dest.mkdir(parents=True)
    with pytest.raises(InvalidInput, match="cannot be written under"):
        admin.models.download(project, "m", 1, destination=dest)
    monkeypatch.chdir(dest)
    with pytest.raises(InvalidInput):
        admin.models.download(project, "m", 1)  # the default destination: '.'
    monkeypatch.setenv("GHAF_URL", platform.url)
    monkeypatch.setenv("GHAF_TOKEN", platform.admin_token)
    monkeypatch.setenv("GHAF_CREDENTIALS", str(tmp_path / "credentials.json"))
    result = CliRunner().invoke(app, ["models", "download", "m", "-p", project])
    assert result.exit_code != 0 and "cannot be written" in " ".join(result.output.split())
    assert _outside(root) == [root / "a"] and list(dest.iterdir()) == []
    # An explicit file name is the user's choice, and still works.
    assert admin.models.download(project, "m", 1, destination=dest / "mine.skops").is_file()


def test_hostile_dataset_and_run_artifact_paths_are_never_written(
    platform: Platform, admin: Client, project: str, tmp_path: Path
) -> None:
    source = tmp_path / "src"
    source.mkdir()
    (source / "a.csv").write_text("x\n1\n")
    admin.datasets.create(project, "ds")
    admin.datasets.add_version(project, "ds", source)
    with platform.runtime.database.session(write=False) as session:
        ids = session.scalars(
            select(DatasetVersion.id)
            .join(Dataset, Dataset.id == DatasetVersion.dataset_id)
            .join(Project, Project.id == Dataset.project_id)
            .where(Project.name == project)
        ).all()
    _set(
        platform,
        update(DatasetFile).where(DatasetFile.version_id.in_(ids)).values(path="../../escaped.csv"),
    )
    run = admin.runs.create(project, "e")
    admin.runs.log_artifact(project, run.id, b"weights", path="model/w.bin")
    _set(platform, update(RunArtifact).where(RunArtifact.run_id == run.id).values(path=".."))
    root = tmp_path / "root"
    dest = root / "a" / "dest"
    dest.mkdir(parents=True)
    with pytest.raises(InvalidInput, match="cannot be written under"):
        admin.datasets.download(project, "ds", destination=dest)
    with pytest.raises(InvalidInput):
        admin.datasets.local_files(project, "ds", cache=tmp_path / "cache")
    with pytest.raises(InvalidInput, match="cannot be written under"):
        admin.runs.download_artifact(project, run.id, "..", dest)
    assert _outside(root) == [root / "a"] and list(dest.iterdir()) == []
    assert not (tmp_path / "escaped.csv").exists()


def test_downloads_never_follow_links_inside_the_destination(
    admin: Client, project: str, tmp_path: Path
) -> None:
    source = tmp_path / "src"
    (source / "sub").mkdir(parents=True)
    (source / "sub" / "a.csv").write_text("x\n1\n")
    (source / "b.csv").write_text("y\n2\n")
    admin.datasets.create(project, "ds")
    admin.datasets.add_version(project, "ds", source)
    outside = tmp_path / "outside"
    outside.mkdir()
    dest = tmp_path / "dest"
    dest.mkdir()
    (dest / "sub").symlink_to(outside, target_is_directory=True)
    with pytest.raises(InvalidInput, match="symbolic link"):
        admin.datasets.download(project, "ds", destination=dest)
    assert list(outside.iterdir()) == []
    # A link at the file itself is refused too (the in-place write would follow it).
    os.unlink(dest / "sub")
    victim = outside / "victim"
    victim.write_text("keep")
    (dest / "b.csv").symlink_to(victim)
    with pytest.raises(InvalidInput, match="symbolic link"):
        admin.datasets.download(project, "ds", destination=dest)
    assert victim.read_text() == "keep"


def test_destination_keeps_names_inside(tmp_path: Path) -> None:
    where = Destination(tmp_path)
    assert where.path("a/b.csv") == tmp_path / "a" / "b.csv"
    for value in HOSTILE:
        with pytest.raises(InvalidInput):
            where.path(value)
