"""A stored object that fails its integrity check is a clear, audited refusal on every
download path (models, artifacts, dataset files), never a 500 or a partial file."""

from __future__ import annotations

import os
from pathlib import Path

import httpx
import pytest
from sqlalchemy import select

from ghaf.client import Client
from ghaf.core.errors import IntegrityFailure
from ghaf.security.tenancy import Project
from ghaf.storage.models import Blob
from tests.conftest import Platform, TrainedModel


def _tamper(platform: Platform, project: str, sha256: str, offset: int = 100) -> None:
    """Flip a byte of ``project``'s stored object of ``sha256`` (that project's only)."""
    with platform.runtime.database.session(write=False) as session:
        keys = set(
            session.scalars(
                select(Blob.object_key)
                .join(Project, Project.id == Blob.project_id)
                .where(Blob.sha256 == sha256, Project.name == project)
            )
        )
    assert keys
    for key in keys:
        path = platform.settings.artifacts_dir / key
        data = bytearray(path.read_bytes())
        data[offset] ^= 0xFF
        path.write_bytes(bytes(data))


def _refusals(admin: Client, project: str, action: str) -> list[str]:
    return [
        str((e.detail or {}).get("reason", ""))
        for e in admin.audit.list(project=project)
        if e.action == action and e.outcome == "denied"
    ]


def test_a_tampered_model_file_is_a_clear_audited_refusal(
    platform: Platform, admin: Client, project: str, trained: TrainedModel, tmp_path: Path
) -> None:
    version = admin.models.register(project, "m", path=trained.path, sample=trained.X[:3])
    _tamper(platform, project, version.sha256)
    response = httpx.get(
        f"{platform.url}/api/v1/projects/{project}/models/m/versions/1/file",
        headers={"Authorization": f"Bearer {platform.admin_token}"},
    )
    assert response.status_code == 502
    problem = response.json()
    assert problem["type"] == "urn:ghaf:problem:integrity-failure"
    assert "failed its integrity check" in problem["detail"]
    with pytest.raises(IntegrityFailure, match="failed its integrity check"):
        admin.models.download(project, "m", 1, destination=tmp_path)
    assert list(tmp_path.iterdir()) == []
    reasons = _refusals(admin, project, "model:download")
    assert len(reasons) == 2 and all("integrity check" in r for r in reasons)


def test_registering_a_tampered_upload_is_refused_and_audited(
    platform: Platform, admin: Client, project: str, trained: TrainedModel
) -> None:
    digest, _ = admin.artifacts.put_blob(project, trained.path)
    _tamper(platform, project, digest)
    with pytest.raises(IntegrityFailure, match="failed its integrity check"):
        admin.models.register(project, "m", path=trained.path, sample=trained.X[:3])
    assert any("integrity check" in r for r in _refusals(admin, project, "model:register"))


def test_a_tampered_artifact_is_refused_before_any_byte(
    platform: Platform, admin: Client, project: str, tmp_path: Path
) -> None:
    stored = admin.artifacts.upload(project, "small.bin", os.urandom(5000))
    _tamper(platform, project, stored.sha256)
    with pytest.raises(IntegrityFailure, match="failed its integrity check"):
        admin.artifacts.read(project, "small.bin")
    with pytest.raises(IntegrityFailure):
        admin.artifacts.download(project, "small.bin", tmp_path / "small.bin")
    assert list(tmp_path.iterdir()) == []
    assert len(_refusals(admin, project, "artifact:read")) == 2


def test_a_later_chunk_failure_aborts_and_leaves_no_file(
    platform: Platform, admin: Client, project: str, tmp_path: Path
) -> None:
    chunk = platform.settings.storage_chunk_bytes
    stored = admin.artifacts.upload(project, "big.bin", os.urandom(3 * chunk))
    _tamper(platform, project, stored.sha256, offset=2 * chunk + 1000)  # inside the third chunk
    target = tmp_path / "big.bin"
    with pytest.raises(IntegrityFailure, match="cut short"):
        admin.artifacts.download(project, "big.bin", target)
    assert list(tmp_path.iterdir()) == []  # neither the file nor a .partial
    reasons = _refusals(admin, project, "artifact:read")
    assert len(reasons) == 1 and "chunk 2" in reasons[0]


def test_tampered_dataset_files_are_refused_and_audited(
    platform: Platform, admin: Client, project: str, tmp_path: Path
) -> None:
    source = tmp_path / "src"
    source.mkdir()
    (source / "small.csv").write_text("x\n" + "1\n" * 100)
    (source / "large.bin").write_bytes(os.urandom(20 << 20))  # past the pack limit
    admin.datasets.create(project, "ds")
    admin.datasets.add_version(project, "ds", source)
    entries = {e.path: e for e in admin.datasets.files(project, "ds")}
    for name in ("small.csv", "large.bin"):
        _tamper(platform, project, entries[name].sha256, offset=60)
    dest = tmp_path / "dest"
    dest.mkdir()
    with pytest.raises(IntegrityFailure):
        admin.datasets.download(project, "ds", destination=dest)
    assert not any(p.is_file() and p.name == "large.bin" for p in dest.rglob("*"))
    assert not any(p.name.endswith(".partial") for p in dest.rglob("*"))
    reasons = _refusals(admin, project, "artifact:read")
    assert reasons and all("integrity check" in r for r in reasons)
