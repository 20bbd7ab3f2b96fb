"""Model bundles: one registered version in a folder that serves with no platform.

``ghaf models download NAME@ALIAS --bundle DIR`` (the SDK's
``client.models.download(..., bundle=True)``) writes::

    DIR/
      model.skops     the registered file (renamed ``model`` + its suffix)
      version.json    the version's registry metadata, as the platform answered it
      card.md         its model card, rendered
      manifest.json   what ties them together, written last

``manifest.json`` names the model, version, project, format, the file's SHA-256 and
signature (inputs and outputs), the skops types the project's policy trusted for this
file, and every file of the bundle with its size and SHA-256. ``ghaf serve --bundle DIR``
reads it with :func:`open_bundle`, which refuses, each with an error naming the file:

- a manifest that is not a ghaf bundle, of an unknown bundle version, or malformed;
- a file name that is not one plain name in the folder (``../x``, ``a/b``, ``.hidden``);
- a file that is missing, is a symbolic link or not a regular file;
- a file whose size or SHA-256 differ from the manifest's (tampered with, or damaged);
- registry metadata that disagrees with the manifest.

The manifest is not signed: someone who can rewrite the whole folder can rewrite the
hash too. ``expected_sha256`` (``ghaf serve --bundle DIR --sha256 HEX``) pins the model
file to the hash the registry shows, and skops types beyond the built-in safe set are
trusted only when it is given, so a rewritten manifest cannot widen what loads.
"""

from __future__ import annotations

import errno
import hashlib
import json
import os
import re
import stat
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field, ValidationError

from ghaf.core.errors import IntegrityFailure, InvalidInput
from ghaf.registry.formats import Trust
from ghaf.registry.schemas import VersionOut
from ghaf.serving.runtime import VersionInfo

KIND = "ghaf-model-bundle"
BUNDLE_VERSION = 1
MANIFEST = "manifest.json"
METADATA = "version.json"
CARD = "card.md"
MAX_MANIFEST_BYTES = 4 * 1024 * 1024
MAX_METADATA_BYTES = 16 * 1024 * 1024
_PLAIN_NAME = re.compile(r"[A-Za-z0-9][A-Za-z0-9_-]*(\.[A-Za-z0-9_-]+)*")
_SUFFIX = re.compile(r"\.[A-Za-z0-9]{1,16}")
_SHA256 = re.compile(r"[0-9a-f]{64}")
# No link is followed, and a FIFO put in a file's place cannot block the open.
_OPEN_FLAGS = (
    os.O_RDONLY
    | getattr(os, "O_NOFOLLOW", 0)
    | getattr(os, "O_NONBLOCK", 0)
    | getattr(os, "O_BINARY", 0)
)
Role = Literal["model", "metadata", "card"]


class BundleFile(BaseModel):
    """One file of a bundle: a plain name inside its folder, its size and SHA-256."""

    model_config = ConfigDict(extra="forbid")

    name: str = Field(max_length=128)
    role: Role
    size: int = Field(ge=0)
    sha256: str


class Manifest(BaseModel):
    """``manifest.json``: what a bundle holds and what its model is."""

    model_config = ConfigDict(extra="forbid")

    kind: Literal["ghaf-model-bundle"]
    bundle_version: int
    model: str
    version: int = Field(ge=1)
    project: str
    format: str
    filename: str = Field(description="The file's name in the registry.")
    sha256: str
    inputs: list[dict[str, Any]]
    outputs: list[dict[str, Any]] = Field(default_factory=list)
    trusted_types: list[str] = Field(
        default_factory=list,
        description="The skops types beyond the built-in safe set that the project's "
        "policy trusted for this file when the bundle was written.",
    )
    source: str = Field("", description="The platform the bundle was downloaded from.")
    created_at: datetime
    files: list[BundleFile]


@dataclass(frozen=True)
class Bundle:
    """A bundle whose every file was checked against its manifest."""

    folder: Path
    manifest: Manifest
    model_file: Path
    metadata: VersionOut

    @property
    def info(self) -> VersionInfo:
        """What the serving runtime needs to load and check the model."""
        m = self.manifest
        return VersionInfo(
            model=m.model,
            version=m.version,
            format=m.format,
            sha256=m.sha256,
            inputs=m.inputs,
            outputs=m.outputs,
            project=m.project,
            filename=m.filename,
        )


# --- writing ---------------------------------------------------------------------------


def model_file_name(filename: str) -> str:
    """The model's name inside a bundle: ``model`` plus the registered file's suffix
    (loaders such as XGBoost's read the encoding from it), so it can never collide with
    the manifest or be a path."""
    suffix = Path(filename).suffix
    return "model" + suffix.lower() if _SUFFIX.fullmatch(suffix) else "model"


def prepare_folder(folder: str | Path) -> Path:
    """``folder``, created if absent; ``InvalidInput`` if it holds anything already (a
    bundle is never written over other files, nor over another bundle)."""
    path = Path(folder)
    if path.is_symlink() and not path.is_dir():
        raise InvalidInput(f"{path} is a symbolic link, not a folder", field="bundle")
    if path.exists():
        if not path.is_dir():
            raise InvalidInput(f"{path} exists and is not a folder", field="bundle")
        if any(path.iterdir()):
            raise InvalidInput(
                f"{path} is not empty: a bundle is written into a new or empty folder",
                field="bundle",
            )
    else:
        path.mkdir(parents=True)
    return path


def needed_trusted_types(model_file: Path, fmt: str, policy_types: Sequence[str]) -> list[str]:
    """The policy's trusted types that this file needs (skops only; none otherwise)."""
    if fmt != "skops" or not policy_types:
        return []
    from ghaf.registry.formats.skops import SkopsFormat

    # Reads the file's schema only: nothing in it is constructed.
    beyond_builtin = SkopsFormat().untrusted(model_file, Trust())
    return sorted(set(beyond_builtin) & set(policy_types))


def write_manifest(
    folder: Path,
    version: VersionOut,
    model_file: Path,
    *,
    card_markdown: str,
    trusted_types: Sequence[str] = (),
    source: str = "",
) -> Manifest:
    """Write ``version.json``, ``card.md`` and, last, ``manifest.json`` beside the
    already downloaded (and SHA-256-checked) ``model_file``."""
    metadata = folder / METADATA
    metadata.write_text(version.model_dump_json(indent=2) + "\n", encoding="utf-8")
    card = folder / CARD
    card.write_text(card_markdown, encoding="utf-8")
    files = [
        _describe(model_file, "model"),
        _describe(metadata, "metadata"),
        _describe(card, "card"),
    ]
    if files[0].sha256 != version.sha256:  # the SDK checked it; a second look is cheap
        raise IntegrityFailure(
            f"{model_file} changed after it was downloaded; no bundle was written",
            field="sha256",
        )
    manifest = Manifest(
        kind=KIND,
        bundle_version=BUNDLE_VERSION,
        model=version.model,
        version=version.version,
        project=version.project,
        format=version.format,
        filename=version.filename,
        sha256=version.sha256,
        inputs=version.inputs,
        outputs=version.outputs,
        trusted_types=list(trusted_types),
        source=source,
        created_at=datetime.now(UTC),
        files=files,
    )
    partial = folder / (MANIFEST + ".partial")
    partial.write_text(manifest.model_dump_json(indent=2) + "\n", encoding="utf-8")
    os.replace(partial, folder / MANIFEST)  # a bundle without its manifest is refused
    return manifest


def write_bundle(
    folder: str | Path,
    version: VersionOut,
    pieces: Iterable[bytes],
    *,
    card_markdown: str,
    policy_types: Sequence[str] = (),
    source: str = "",
) -> Path:
    """A whole bundle of ``version`` in the new or empty ``folder``: the model file from
    ``pieces`` (refused unless it matches the version's SHA-256), its metadata, card and
    manifest. Nothing is left behind when it fails. The SDK's ``download(bundle=True)``
    and the platform's deployment hosts both write bundles through this."""
    target = prepare_folder(folder)
    path = target / model_file_name(version.filename)
    try:
        digest = hashlib.sha256()
        with open(path, "xb") as handle:
            for piece in pieces:
                handle.write(piece)
                digest.update(piece)
        if digest.hexdigest() != version.sha256:
            raise IntegrityFailure(
                f"{version.model} v{version.version} does not match its SHA-256 "
                f"{version.sha256[:12]}...: no bundle was written",
                field="sha256",
            )
        write_manifest(
            target,
            version,
            path,
            card_markdown=card_markdown,
            trusted_types=needed_trusted_types(path, version.format, policy_types),
            source=source,
        )
    except BaseException:
        discard(target, path)
        raise
    return target


def discard(folder: Path, model_file: Path) -> None:
    """Remove what a failed bundle download wrote into its (empty before) folder, so
    that the same command can be run again."""
    for path in (model_file, folder / METADATA, folder / CARD, folder / (MANIFEST + ".partial")):
        path.unlink(missing_ok=True)


def _describe(path: Path, role: Role) -> BundleFile:
    digest = hashlib.sha256()
    size = 0
    with path.open("rb") as handle:
        while chunk := handle.read(1 << 20):
            digest.update(chunk)
            size += len(chunk)
    return BundleFile(name=path.name, role=role, size=size, sha256=digest.hexdigest())


# --- reading ---------------------------------------------------------------------------


def _refuse(folder: Path, why: str, *, field: str = "bundle") -> InvalidInput:
    return InvalidInput(f"bundle {folder}: {why}; refusing to serve it", field=field)


def _read_checked(folder: Path, name: str, *, limit: int | None = None) -> tuple[bytes, str]:
    """The bytes (when ``limit`` is given; else none) and SHA-256 of one plain file in
    ``folder``, refusing links, folders, devices and missing files."""
    path = folder / name
    try:
        fd = os.open(path, _OPEN_FLAGS)
    except FileNotFoundError:
        raise _refuse(folder, f"{name} is missing") from None
    except OSError as exc:
        if exc.errno == errno.ELOOP or path.is_symlink():
            raise _refuse(folder, f"{name} is a symbolic link; bundles hold plain files") from None
        raise _refuse(folder, f"{name} cannot be read ({exc.strerror})") from None
    # Checked on the opened file, so it cannot be swapped between check and read.
    if not stat.S_ISREG(os.fstat(fd).st_mode):
        os.close(fd)
        raise _refuse(folder, f"{name} is not a regular file")
    with os.fdopen(fd, "rb") as handle:
        digest = hashlib.sha256()
        kept = bytearray()
        size = 0
        while chunk := handle.read(1 << 20):
            size += len(chunk)
            digest.update(chunk)
            if limit is not None:
                if size > limit:
                    raise _refuse(folder, f"{name} is larger than {limit:,} bytes")
                kept += chunk
    return bytes(kept), digest.hexdigest()


def _plain_name(folder: Path, name: str) -> str:
    if not _PLAIN_NAME.fullmatch(name) or name in (MANIFEST, MANIFEST + ".partial"):
        raise _refuse(
            folder,
            f"the manifest names a file {name!r}, which is not one plain file name in the "
            "bundle folder (no '/', '..', or leading '.')",
            field="files",
        )
    return name


def read_manifest(folder: str | Path) -> Manifest:
    """The bundle's manifest, parsed and checked (its files are not read)."""
    folder = Path(folder)
    if not folder.is_dir():
        raise InvalidInput(f"bundle {folder} is not a folder", field="bundle")
    raw, _ = _read_checked(folder, MANIFEST, limit=MAX_MANIFEST_BYTES)
    try:
        document = json.loads(raw)
    except (UnicodeDecodeError, ValueError, RecursionError) as exc:
        why = "nested too deeply" if isinstance(exc, RecursionError) else str(exc)
        raise _refuse(folder, f"{MANIFEST} is not valid JSON ({why})") from None
    if not isinstance(document, dict) or document.get("kind") != KIND:
        raise _refuse(folder, f"{MANIFEST} is not a ghaf model bundle's manifest")
    if document.get("bundle_version") != BUNDLE_VERSION:
        raise _refuse(
            folder,
            f"{MANIFEST} is bundle version {document.get('bundle_version')!r}; this ghaf "
            f"reads version {BUNDLE_VERSION}",
        )
    try:
        manifest = Manifest.model_validate(document)
    except ValidationError as exc:
        first = exc.errors()[0]
        where = ".".join(str(part) for part in first["loc"]) or "manifest"
        raise _refuse(folder, f"{MANIFEST}: {where}: {first['msg']}", field=where) from None
    seen: set[str] = set()
    for entry in manifest.files:
        _plain_name(folder, entry.name)
        if entry.name in seen:
            raise _refuse(folder, f"the manifest lists {entry.name!r} twice", field="files")
        seen.add(entry.name)
        if not _SHA256.fullmatch(entry.sha256):
            raise _refuse(folder, f"{entry.name}: sha256 is not 64 hex digits", field="files")
    for role in ("model", "metadata"):
        count = sum(entry.role == role for entry in manifest.files)
        if count != 1:
            raise _refuse(folder, f"the manifest lists {count} {role} files; a bundle has one")
    if not _SHA256.fullmatch(manifest.sha256):
        raise _refuse(folder, "sha256 is not 64 hex digits", field="sha256")
    return manifest


def open_bundle(folder: str | Path, *, expected_sha256: str | None = None) -> Bundle:
    """Check every file of the bundle in ``folder`` against its manifest (and the model
    file against ``expected_sha256``, where given) and return what serving needs."""
    folder = Path(folder)
    manifest = read_manifest(folder)
    files = {entry.role: entry for entry in manifest.files}
    model = files["model"]
    if model.sha256 != manifest.sha256:
        raise _refuse(
            folder, "the model file's listed SHA-256 is not the version's", field="sha256"
        )
    if expected_sha256 is not None:
        pinned = expected_sha256.strip().lower()
        if not _SHA256.fullmatch(pinned):
            raise InvalidInput("--sha256 must be 64 hex digits", field="sha256")
        if pinned != manifest.sha256:
            raise IntegrityFailure(
                f"bundle {folder}: the manifest says the model file has SHA-256 "
                f"{manifest.sha256}, not the pinned {pinned}; refusing to serve it",
                field="sha256",
            )
    metadata_bytes = b""
    for entry in manifest.files:
        limit = MAX_METADATA_BYTES if entry.role == "metadata" else None
        content, digest = _read_checked(folder, entry.name, limit=limit)
        if digest != entry.sha256:
            raise IntegrityFailure(
                f"bundle {folder}: {entry.name} has SHA-256 {digest}, but the manifest "
                f"recorded {entry.sha256}: it was changed after the bundle was written; "
                "refusing to serve it",
                field="sha256",
            )
        if entry.role == "metadata":
            metadata_bytes = content
    try:
        metadata = VersionOut.model_validate_json(metadata_bytes)
    except ValidationError as exc:
        first = exc.errors()[0]
        where = ".".join(str(part) for part in first["loc"]) or "document"
        name = files["metadata"].name
        raise _refuse(
            folder, f"{name} is not a version's metadata ({where}: {first['msg']})"
        ) from None
    disagree = [
        key
        for key in ("model", "version", "project", "format", "sha256", "inputs", "outputs")
        if getattr(metadata, key) != getattr(manifest, key)
    ]
    if disagree:
        raise _refuse(
            folder,
            f"{files['metadata'].name} and {MANIFEST} disagree on {', '.join(disagree)}",
        )
    return Bundle(
        folder=folder, manifest=manifest, model_file=folder / model.name, metadata=metadata
    )


def trust(bundle: Bundle, *, pinned: bool) -> Trust:
    """What the loader may construct: the manifest's trusted skops types only when the
    model file is pinned (an unpinned manifest could list anything)."""
    if bundle.manifest.trusted_types and not pinned:
        raise _refuse(
            bundle.folder,
            "the model needs skops types beyond the built-in safe set "
            f"({', '.join(bundle.manifest.trusted_types)}), which the project's policy "
            "trusted; pass --sha256 with the file's registered SHA-256 (ghaf models show) "
            "so that the manifest's list can be believed",
            field="sha256",
        )
    return Trust(skops_types=tuple(bundle.manifest.trusted_types) if pinned else ())
