"""Hostile model bundles (``ghaf serve --bundle DIR``): every one is refused before its
model is loaded, with an error naming the file and what is wrong."""

from __future__ import annotations

import json
import shutil
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np
import pytest
from typer.testing import CliRunner

from ghaf.cli.main import app
from ghaf.core.errors import GhafError, IntegrityFailure, InvalidInput
from ghaf.serving import bundle
from ghaf.serving.standalone import prepare_bundle
from tests.conftest import Platform, TrainedModel, unique

runner = CliRunner()


@pytest.fixture(scope="module")
def made(
    platform: Platform, trained: TrainedModel, tmp_path_factory: pytest.TempPathFactory
) -> tuple[Path, str]:
    """A genuine bundle of a skops model, and the SHA-256 the registry recorded."""
    admin = platform.client()
    project = admin.projects.create(unique("bundles")).name
    version = admin.models.register(
        project, "scorer", path=trained.path, sample=np.asarray(trained.X)[:5]
    )
    folder = tmp_path_factory.mktemp("genuine") / "bundle"
    admin.models.download(project, "scorer", destination=folder, bundle=True)
    return folder, version.sha256


@pytest.fixture
def copy(made: tuple[Path, str], tmp_path: Path) -> Path:
    """A fresh copy of the genuine bundle for one test to spoil."""
    target = tmp_path / "bundle"
    shutil.copytree(made[0], target)
    return target


def _manifest(folder: Path) -> dict[str, Any]:
    document: dict[str, Any] = json.loads((folder / "manifest.json").read_text())
    return document


def _rewrite(folder: Path, change: Callable[[dict[str, Any]], None]) -> None:
    document = _manifest(folder)
    change(document)
    (folder / "manifest.json").write_text(json.dumps(document))


def _model_entry(document: dict[str, Any]) -> dict[str, Any]:
    return next(f for f in document["files"] if f["role"] == "model")


def test_the_genuine_bundle_loads(copy: Path, made: tuple[Path, str]) -> None:
    loaded = prepare_bundle(copy, expected_sha256=made[1])
    assert loaded.name == "scorer"


def test_a_tampered_model_file_is_refused(copy: Path) -> None:
    model = copy / "model.skops"
    data = bytearray(model.read_bytes())
    data[len(data) // 2] ^= 0xFF
    model.write_bytes(bytes(data))
    with pytest.raises(IntegrityFailure, match=r"model\.skops has SHA-256 .* changed after"):
        prepare_bundle(copy)


def test_a_tampered_file_with_a_rewritten_manifest_fails_the_pin(
    copy: Path, made: tuple[Path, str], trained: TrainedModel
) -> None:
    """Whoever can rewrite the folder can fix the manifest's hashes; --sha256 (the hash
    the registry shows) still catches it."""
    import skops.io as sio
    from sklearn.linear_model import LogisticRegression

    other = LogisticRegression().fit(np.asarray(trained.X), 1 - np.asarray(trained.y))
    sio.dump(other, copy / "model.skops")
    digest = bundle._describe(copy / "model.skops", "model")

    def forge(document: dict[str, Any]) -> None:
        document["sha256"] = digest.sha256
        _model_entry(document).update(sha256=digest.sha256, size=digest.size)

    _rewrite(copy, forge)
    metadata = json.loads((copy / "version.json").read_text())
    metadata["sha256"] = digest.sha256
    (copy / "version.json").write_text(json.dumps(metadata))
    metadata_digest = bundle._describe(copy / "version.json", "metadata")
    _rewrite(
        copy,
        lambda d: next(f for f in d["files"] if f["role"] == "metadata").update(
            sha256=metadata_digest.sha256, size=metadata_digest.size
        ),
    )
    prepare_bundle(copy)  # consistent, so it loads unpinned: the manifest is not signed
    with pytest.raises(IntegrityFailure, match="not the pinned"):
        prepare_bundle(copy, expected_sha256=made[1])


def test_tampered_metadata_is_refused(copy: Path) -> None:
    metadata = copy / "version.json"
    metadata.write_text(metadata.read_text().replace('"scorer"', '"other"', 1))
    with pytest.raises(IntegrityFailure, match=r"version\.json has SHA-256"):
        prepare_bundle(copy)


@pytest.mark.parametrize(
    "name",
    [
        "../model.skops",
        "../../etc/passwd",
        "/etc/passwd",
        "sub/model.skops",
        "..",
        ".hidden",
        "model.skops\x00.txt",
        "a\\b",
        "manifest.json",
    ],
)
def test_a_manifest_naming_a_path_outside_the_folder_is_refused(copy: Path, name: str) -> None:
    (copy.parent / "model.skops").write_bytes((copy / "model.skops").read_bytes())
    _rewrite(copy, lambda d: _model_entry(d).update(name=name))
    with pytest.raises(InvalidInput, match="not one plain file name"):
        prepare_bundle(copy)


def test_a_symlinked_model_file_is_refused(copy: Path, tmp_path: Path) -> None:
    outside = tmp_path / "elsewhere.skops"
    (copy / "model.skops").rename(outside)
    (copy / "model.skops").symlink_to(outside)
    with pytest.raises(InvalidInput, match=r"model\.skops is a symbolic link"):
        prepare_bundle(copy)


def test_a_symlinked_manifest_is_refused(copy: Path, tmp_path: Path) -> None:
    outside = tmp_path / "manifest.json"
    (copy / "manifest.json").rename(outside)
    (copy / "manifest.json").symlink_to(outside)
    with pytest.raises(InvalidInput, match=r"manifest\.json is a symbolic link"):
        prepare_bundle(copy)


def test_a_folder_in_place_of_a_file_is_refused(copy: Path) -> None:
    (copy / "card.md").unlink()
    (copy / "card.md").mkdir()
    with pytest.raises(InvalidInput, match=r"card\.md is not a regular file"):
        prepare_bundle(copy)


@pytest.mark.parametrize("name", ["model.skops", "version.json", "card.md", "manifest.json"])
def test_a_missing_file_is_refused(copy: Path, name: str) -> None:
    (copy / name).unlink()
    with pytest.raises(InvalidInput, match=f"{name} is missing"):
        prepare_bundle(copy)


@pytest.mark.parametrize(
    ("change", "message"),
    [
        (lambda d: d.update(kind="something-else"), "not a ghaf model bundle"),
        (lambda d: d.update(bundle_version=99), "bundle version 99"),
        (lambda d: d.update(version="three"), "version"),
        (lambda d: d.update(surprise=True), "surprise"),
        (lambda d: d["files"].append(dict(_model_entry(d))), "lists 'model.skops' twice"),
        (lambda d: d.update(files=[f for f in d["files"] if f["role"] != "model"]), "0 model"),
        (lambda d: _model_entry(d).update(sha256="zz"), "64 hex digits"),
        (lambda d: d.update(sha256="0" * 64), "listed SHA-256 is not the version's"),
        (lambda d: d.update(format="pickle"), "disagree on format"),
        (lambda d: d.update(inputs=[]), "disagree on inputs"),
    ],
)
def test_a_malformed_or_inconsistent_manifest_is_refused(
    copy: Path, change: Callable[[dict[str, Any]], None], message: str
) -> None:
    _rewrite(copy, change)
    with pytest.raises(GhafError, match=message):
        prepare_bundle(copy)


def test_a_manifest_that_is_not_json_is_refused(copy: Path) -> None:
    (copy / "manifest.json").write_bytes(b"\xff{not json")
    with pytest.raises(InvalidInput, match="not valid JSON"):
        prepare_bundle(copy)


@pytest.mark.parametrize("body", [b"[" * 200_000, b'{"kind": ' * 100_000, b"[]", b'"text"'])
def test_a_hostile_json_shape_is_refused_with_a_message(copy: Path, body: bytes) -> None:
    (copy / "manifest.json").write_bytes(body)
    with pytest.raises(InvalidInput, match=r"manifest\.json is not"):
        prepare_bundle(copy)


def test_hostile_metadata_json_is_refused(copy: Path) -> None:
    metadata = copy / "version.json"
    metadata.write_bytes(b"[" * 200_000)
    entry = bundle._describe(metadata, "metadata")
    _rewrite(
        copy,
        lambda d: next(f for f in d["files"] if f["role"] == "metadata").update(
            sha256=entry.sha256, size=entry.size
        ),
    )
    with pytest.raises(InvalidInput, match=r"version\.json is not a version's metadata"):
        prepare_bundle(copy)


def test_an_oversized_manifest_is_refused_unread(copy: Path) -> None:
    (copy / "manifest.json").write_bytes(b" " * (bundle.MAX_MANIFEST_BYTES + 1))
    with pytest.raises(InvalidInput, match="larger than"):
        prepare_bundle(copy)


def test_a_manifest_cannot_widen_the_trusted_types_on_its_own(
    copy: Path, made: tuple[Path, str]
) -> None:
    _rewrite(copy, lambda d: d.update(trusted_types=["builtins.eval"]))
    with pytest.raises(InvalidInput, match="pass --sha256"):
        prepare_bundle(copy)
    # Pinned, the registry's file is the one loaded; skops trusts only the listed
    # types the file really holds, so an extra name in the list constructs nothing.
    found = bundle.open_bundle(copy, expected_sha256=made[1])
    assert bundle.trust(found, pinned=True).skops_types == ("builtins.eval",)
    assert prepare_bundle(copy, expected_sha256=made[1]).name == "scorer"


def test_a_malformed_pin_is_refused(copy: Path) -> None:
    with pytest.raises(InvalidInput, match="64 hex digits"):
        prepare_bundle(copy, expected_sha256="abc")


def test_serve_refuses_a_tampered_bundle_before_listening(
    copy: Path, cli_env: Path, tmp_path: Path
) -> None:
    model = copy / "model.skops"
    model.write_bytes(model.read_bytes() + b"x")
    key = tmp_path / "key"
    key.write_text("k" * 40)
    key.chmod(0o600)
    result = runner.invoke(
        app, ["serve", "--bundle", str(copy), "--invoke-key-file", str(key), "--port", "1"]
    )
    assert result.exit_code != 0, result.output
    assert "changed after the bundle was written" in result.output


def test_a_fifo_in_place_of_a_file_is_refused_without_blocking(copy: Path) -> None:
    import os

    (copy / "card.md").unlink()
    os.mkfifo(copy / "card.md")
    with pytest.raises(InvalidInput, match=r"card\.md is not a regular file"):
        prepare_bundle(copy)
