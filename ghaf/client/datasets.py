"""SDK side of datasets: scan and hash locally, upload only missing content, then
create the version from the manifest."""

from __future__ import annotations

import builtins
import hashlib
import os
import stat
import tempfile
from collections import deque
from collections.abc import Callable, Iterable, Iterator
from concurrent.futures import Future, ThreadPoolExecutor
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any, TypeVar

from ghaf.client.files import (
    CHUNK,
    Destination,
    LocalFile,
    Progress,
    file_sha256,
    open_for_write,
    read_file,
    write_verified,
)
from ghaf.client.local_cache import HashCache, Manifest, cache_root
from ghaf.client.provenance import capture
from ghaf.core.errors import Conflict, IntegrityFailure, InvalidInput, NotFound
from ghaf.core.paging import Page
from ghaf.datasets import tables
from ghaf.datasets.schemas import (
    AliasOut,
    DatasetOut,
    Lineage,
    ManifestEntry,
    VersionDiff,
    VersionOut,
)
from ghaf.storage.paths import normalise_path

if TYPE_CHECKING:
    from ghaf.client.client import Client

API = "/api/v1"
UPLOAD_THREADS = 2
QUERY_HASHES = 50_000  # the server takes up to 100,000 per query
GROUP_FILES = 5_000  # files hashed, queried and uploaded as one step
GROUP_BYTES = 32 << 20  # also what hashing may hold in memory per group
KEEP_BYTES = 1 << 20  # files this small are read once, for hashing and upload
PACK_MEMBER_BYTES = 4 << 20  # larger files stream on their own
PACK_BYTES = 64 << 20
PACK_FILES = 10_000
T = TypeVar("T")


def _entries(files: Iterable[LocalFile]) -> dict[str, builtins.list[Any]]:
    return {f.path: [f.size, f.sha256, f.uri] for f in files}


def _batches(
    items: Iterable[T],
    size: Callable[[T], int],
    *,
    max_bytes: int = PACK_BYTES,
    max_items: int = PACK_FILES,
) -> Iterator[builtins.list[T]]:
    """Consecutive runs of ``items`` of at most ``max_items`` and about ``max_bytes``."""
    batch: builtins.list[T] = []
    total = 0
    for item in items:
        batch.append(item)
        total += size(item)
        if len(batch) >= max_items or total >= max_bytes:
            yield batch
            batch, total = [], 0
    if batch:
        yield batch


@dataclass(frozen=True)
class Found:
    """A regular file under the source, with the lstat it had when found."""

    path: str  # relative to the source, '/'-separated
    location: str  # strings, not Paths: a folder may hold 100,000 files
    info: os.stat_result


def _walk(source: Path) -> list[Found]:
    if source.is_symlink():
        raise InvalidInput(f"{source} is a symbolic link; give the real path", field="path")
    if not source.exists():
        raise InvalidInput(f"{source} does not exist", field="path")
    root = source.resolve()
    if root.is_file():
        return [Found(root.name, str(root), root.lstat())]
    found: list[Found] = []
    folders = [str(root)]
    skip = len(str(root).rstrip(os.sep)) + 1
    while folders:
        with os.scandir(folders.pop()) as entries:
            for entry in entries:
                if entry.is_symlink():
                    _refuse_link(entry.path, root)
                if entry.is_dir(follow_symlinks=False):
                    folders.append(entry.path)
                    continue
                info = entry.stat(follow_symlinks=False)
                if not stat.S_ISREG(info.st_mode):
                    raise InvalidInput(f"{entry.path} is not a regular file", field="path")
                relative = entry.path[skip:]
                found.append(Found(relative.replace(os.sep, "/"), entry.path, info))
    if not found:
        raise InvalidInput(f"{source} is an empty folder: nothing to version", field="path")
    found.sort(key=lambda f: f.path)
    return found


def _refuse_link(location: str, root: Path) -> None:
    target = os.path.realpath(location)
    where = "inside" if Path(target).is_relative_to(root) else "outside"
    raise InvalidInput(
        f"{location} is a symbolic link to {target} ({where} the folder); links are not "
        "followed: replace it with the file or remove it",
        field="path",
    )


def _hash(found: Found, progress: Progress | None) -> tuple[LocalFile, bytes | None]:
    """The file hashed, and its bytes when it is small enough to keep for the upload."""
    location = found.location
    content = None
    try:
        if found.info.st_size <= KEEP_BYTES:
            with Path(location).open("rb") as handle:
                content = handle.read()
            sha256 = hashlib.sha256(content).hexdigest()
            if progress is not None:
                progress(len(content))
        else:
            sha256 = file_sha256(location, progress)
        after = os.stat(location)
    except PermissionError:
        raise InvalidInput(f"{location} cannot be read (permission denied)", field="path") from None
    if (found.info.st_size, found.info.st_mtime_ns) != (after.st_size, after.st_mtime_ns):
        raise InvalidInput(
            f"{location} changed while it was being hashed; no version was created", field="path"
        )
    if content is not None and len(content) != after.st_size:
        raise InvalidInput(
            f"{location} changed while it was being hashed; no version was created", field="path"
        )
    return LocalFile(normalise_path(found.path), location, after.st_size, sha256), content


def _hashed(
    found: list[Found], progress: Progress | None, cache: HashCache
) -> Iterator[tuple[LocalFile, bytes | None]]:
    """Each file with its SHA-256 (and its bytes, if small and read): from the cache
    where its stat is unchanged, else read.

    Hashing stays on the calling thread: for many small files a worker pool costs more
    in GIL hand-offs than it gains, while uploads overlap with it on their own threads.
    """
    for item in found:
        known = cache.get(item.location, item.info)
        if known is not None:
            if progress is not None:
                progress(item.info.st_size)
            path = normalise_path(item.path)
            yield LocalFile(path, item.location, item.info.st_size, known), None
            continue
        file, content = _hash(item, progress)
        cache.put(item.location, item.info, file.sha256)
        yield file, content


@contextmanager
def _hash_cache(source: Path) -> Iterator[HashCache]:
    cache = HashCache()
    try:
        cache.load(source)  # a folder's entries, or a single file's own
        yield cache
        cache.save()
    finally:
        cache.close()


def scan(source: str | Path, *, progress: Progress | None = None) -> list[LocalFile]:
    """Every file under ``source`` (or ``source`` itself) with its size and SHA-256."""
    with _hash_cache(Path(source)) as cache:
        return [file for file, _ in _hashed(_walk(Path(source)), progress, cache)]


def _s3_client() -> Any:
    """boto3 for external s3:// references, configured like the server's S3 settings."""
    try:
        import boto3
    except ImportError:
        raise InvalidInput(
            "s3:// references need boto3: pip install 'ghaf[s3]'", field="source"
        ) from None
    return boto3.client(
        "s3",
        endpoint_url=os.environ.get("GHAF_S3_ENDPOINT_URL") or None,
        region_name=os.environ.get("GHAF_S3_REGION") or None,
        aws_access_key_id=os.environ.get("GHAF_S3_ACCESS_KEY_ID") or None,
        aws_secret_access_key=os.environ.get("GHAF_S3_SECRET_ACCESS_KEY") or None,
    )


def _split_s3(uri: str) -> tuple[str, str]:
    bucket, _, key = uri.removeprefix("s3://").partition("/")
    if not bucket:
        raise InvalidInput(f"{uri!r} names no bucket", field="source")
    return bucket, key


def _s3_pieces(uri: str) -> Iterator[bytes]:
    bucket, key = _split_s3(uri)
    body = _s3_client().get_object(Bucket=bucket, Key=key)["Body"]
    while piece := body.read(CHUNK):
        yield piece


def scan_s3(uri: str, *, progress: Progress | None = None) -> list[LocalFile]:
    """Every object under an s3:// prefix, hashed by streaming it (nothing is stored)."""
    bucket, prefix = _split_s3(uri)
    client = _s3_client()
    files = []
    for page in client.get_paginator("list_objects_v2").paginate(Bucket=bucket, Prefix=prefix):
        for item in page.get("Contents", []):
            key = item["Key"]
            name = key[len(prefix) :].lstrip("/") or key.rsplit("/", 1)[-1]
            digest, size = hashlib.sha256(), 0
            for piece in _s3_pieces(f"s3://{bucket}/{key}"):
                digest.update(piece)
                size += len(piece)
                if progress is not None:
                    progress(len(piece))
            files.append(
                LocalFile(
                    normalise_path(name), None, size, digest.hexdigest(), uri=f"s3://{bucket}/{key}"
                )
            )
    if not files:
        raise InvalidInput(f"{uri} holds no objects: nothing to version", field="source")
    return files


def _external_pieces(uri: str) -> Iterator[bytes]:
    if uri.startswith("s3://"):
        yield from _s3_pieces(uri)
        return
    from urllib.parse import unquote, urlparse

    path = Path(unquote(urlparse(uri).path))
    if not path.is_file():
        raise IntegrityFailure(f"the referenced file {path} is gone")
    yield from read_file(path)


class Datasets:
    """Immutable, versioned files and folders in a project."""

    def __init__(self, client: Client) -> None:
        self._client = client

    def _base(self, project: str) -> str:
        return f"{API}/projects/{project}/datasets"

    def create(self, project: str, name: str, *, description: str = "") -> DatasetOut:
        return self._client._model(
            DatasetOut, "POST", self._base(project), json={"name": name, "description": description}
        )

    def get(self, project: str, name: str) -> DatasetOut:
        """The dataset's metadata (``download`` writes a version's files)."""
        return self._client._model(DatasetOut, "GET", f"{self._base(project)}/{name}")

    def list(self, project: str, *, page_size: int = 100) -> builtins.list[DatasetOut]:
        """Every dataset of the project, ``page_size`` per request."""
        return builtins.list(
            self._client._paged(DatasetOut, self._base(project), page_size=page_size)
        )

    def page(
        self, project: str, *, page_size: int = 100, cursor: str | None = None
    ) -> Page[DatasetOut]:
        """One page of :meth:`list`; pass its ``next_cursor`` back as ``cursor``."""
        return self._client._page(
            DatasetOut, self._base(project), page_size=page_size, cursor=cursor
        )

    def add_version(
        self,
        project: str,
        name: str,
        source: Any,
        *,
        description: str = "",
        provenance: dict[str, Any] | None = None,
        hash_progress: Progress | None = None,
        upload_progress: Progress | None = None,
        reference: bool = False,
    ) -> VersionOut:
        """A new version from a file, a folder, a ``.parquet`` file, or a pandas/polars
        DataFrame or pyarrow Table (stored as Parquet, with schema and profile).

        Hashes locally and uploads only the content the project lacks. With
        ``reference=True`` a local path or an ``s3://`` prefix is recorded with its
        checksums but not copied; readers verify the bytes against them.
        """
        if reference:
            return self._reference(project, name, source, description, provenance, hash_progress)
        if not isinstance(source, str | Path):
            with tempfile.TemporaryDirectory(prefix="ghaf-") as folder:
                parquet = Path(folder) / "data.parquet"
                table = tables.to_arrow(source)
                tables.write_parquet(table, parquet)
                return self._add(
                    project,
                    name,
                    parquet,
                    tables.table_info(table),
                    description,
                    provenance,
                    hash_progress,
                    upload_progress,
                )
        path = Path(source)
        parquet_file = path.suffix == ".parquet" and path.is_file()
        info = tables.parquet_info(path) if parquet_file else None
        return self._add(
            project, name, path, info, description, provenance, hash_progress, upload_progress
        )

    def _reference(
        self,
        project: str,
        name: str,
        source: Any,
        description: str,
        provenance: dict[str, Any] | None,
        hash_progress: Progress | None,
    ) -> VersionOut:
        if isinstance(source, str) and source.startswith("s3://"):
            files = scan_s3(source, progress=hash_progress)
            where = None
        elif isinstance(source, str | Path):
            files = [
                LocalFile(
                    f.path,
                    f.location,
                    f.size,
                    f.sha256,
                    uri=Path(f.location).resolve().as_uri() if f.location else None,
                )
                for f in scan(source, progress=hash_progress)
            ]
            where = Path(source)
        else:
            raise InvalidInput("only a path or an s3:// prefix can be referenced", field="source")
        return self._create(
            project,
            name,
            files,
            None,
            description,
            {**capture(where), "reference": str(source), **(provenance or {})},
        )

    def _create(
        self,
        project: str,
        name: str,
        files: builtins.list[LocalFile],
        table: dict[str, Any] | None,
        description: str,
        provenance: dict[str, Any],
        *,
        base: int | None = None,
        base_manifest_sha256: str | None = None,
        removed: builtins.list[str] | None = None,
    ) -> VersionOut:
        manifest = [
            {"path": f.path, "size": f.size, "sha256": f.sha256, "uri": f.uri} for f in files
        ]
        body: dict[str, Any] = {
            "files": manifest,
            "description": description,
            "provenance": provenance,
            "table": table,
        }
        if base is not None:
            body |= {
                "base": base,
                "base_manifest_sha256": base_manifest_sha256,
                "removed": removed or [],
            }
        return self._client._model(
            VersionOut, "POST", f"{self._base(project)}/{name}/versions", json=body
        )

    def _add(
        self,
        project: str,
        name: str,
        source: Path,
        table: dict[str, Any] | None,
        description: str,
        provenance: dict[str, Any] | None,
        hash_progress: Progress | None,
        upload_progress: Progress | None,
    ) -> VersionOut:
        place = f"{self._client.url}|{project}"
        with _hash_cache(source) as cache:
            stored = cache.stored(place)
            files = self._hash_and_upload(
                project, source, cache, stored, hash_progress, upload_progress
            )
            meta = {
                "table": table,
                "description": description,
                "provenance": {**capture(source), **(provenance or {})},
            }
            base, current = cache.manifest(place, name), _entries(files)
            try:
                version = self._submit(project, name, files, current, base, meta)
            except Conflict as exc:
                if "missing" not in exc.extra:
                    raise
                # The server lost content this machine saw stored (a purged project of
                # the same name, say): forget the hint, ask about everything, retry.
                cache.forget_stored(place)
                stored = set()
                self._upload_missing(project, files, upload_progress)
                version = self._submit(project, name, files, current, base, meta)
            cache.remember_stored(place, {f.sha256 for f in files} - stored)
            remembered = Manifest(version.version, version.manifest_sha256, current)
            cache.remember_manifest(place, name, remembered)
        return version

    def _submit(
        self,
        project: str,
        name: str,
        files: builtins.list[LocalFile],
        current: dict[str, builtins.list[Any]],
        base: Manifest | None,
        meta: dict[str, Any],
    ) -> VersionOut:
        """Create the version; when this machine remembers an earlier one, send only
        the changes since it (``current`` is ``files`` as the cache keeps manifests)."""
        if base is not None:
            try:
                return self._create(
                    project,
                    name,
                    [f for f in files if base.entries.get(f.path) != current[f.path]],
                    **meta,
                    base=base.version,
                    base_manifest_sha256=base.sha256,
                    removed=[path for path in base.entries if path not in current],
                )
            except (NotFound, InvalidInput, Conflict) as exc:
                if isinstance(exc, Conflict) and exc.field != "base_manifest_sha256":
                    raise  # e.g. content not uploaded: the caller handles that
                # The server's versions are not what this machine remembers.
        return self._create(project, name, files, **meta)

    def _hash_and_upload(
        self,
        project: str,
        source: Path,
        cache: HashCache,
        stored: set[str],
        hash_progress: Progress | None,
        upload_progress: Progress | None,
    ) -> builtins.list[LocalFile]:
        """Hash here while upload threads send the groups already hashed: the server
        then seals one pack while the previous one is made durable."""
        files: builtins.list[LocalFile] = []
        sent = set(stored)
        uploads = ThreadPoolExecutor(UPLOAD_THREADS, "ghaf-upload")
        running: deque[Future[None]] = deque()
        try:
            hashed = _hashed(_walk(source), hash_progress, cache)
            for group in _batches(
                hashed, lambda pair: pair[0].size, max_bytes=GROUP_BYTES, max_items=GROUP_FILES
            ):
                files += (file for file, _ in group)
                fresh = {file.sha256: (file, content) for file, content in group}
                for sha256 in sent.intersection(fresh):
                    del fresh[sha256]
                if not fresh:
                    continue
                sent.update(fresh)
                if len(running) > UPLOAD_THREADS:  # bounds the bytes held in memory
                    running.popleft().result()
                running.append(
                    uploads.submit(
                        self._upload_missing,
                        project,
                        [file for file, _ in fresh.values()],
                        upload_progress,
                        {sha: content for sha, (_, content) in fresh.items() if content},
                    )
                )
            for upload in running:
                upload.result()
        finally:
            uploads.shutdown(cancel_futures=True)
        return files

    def _upload_missing(
        self,
        project: str,
        group: builtins.list[LocalFile],
        progress: Progress | None,
        contents: dict[str, bytes] | None = None,
    ) -> None:
        """Upload the contents of ``group`` the project lacks: small ones in packs,
        from ``contents`` where hashing already read them."""
        unique = builtins.list({f.sha256: f for f in group}.values())
        present: set[str] = set()
        for batch in _batches(unique, lambda f: 0, max_items=QUERY_HASHES):
            present |= self._client.artifacts.present(project, [f.sha256 for f in batch])
        missing = [f for f in unique if f.sha256 not in present]
        small = []
        for file in missing:
            if file.size > PACK_MEMBER_BYTES:
                self._upload(project, file, progress)
            else:
                small.append(file)
        for pack in _batches(small, lambda f: f.size):
            self._client.artifacts.put_pack(project, pack, progress=progress, contents=contents)

    def _upload(self, project: str, file: LocalFile, progress: Progress | None) -> None:
        self._client.request(
            "PUT",
            f"{API}/projects/{project}/blobs/{file.sha256}",
            content=read_file(file.location, progress) if file.location else b"",
            headers={"X-Ghaf-SHA256": file.sha256, "Content-Type": "application/octet-stream"},
        )

    def versions(
        self, project: str, name: str, *, page_size: int = 100
    ) -> builtins.list[VersionOut]:
        """Every version of the dataset, oldest first."""
        return builtins.list(
            self._client._paged(
                VersionOut, f"{self._base(project)}/{name}/versions", page_size=page_size
            )
        )

    def version(self, project: str, name: str, version: str | int = "latest") -> VersionOut:
        """One version's metadata: a number, an alias or ``latest``."""
        return self._client._model(
            VersionOut, "GET", f"{self._base(project)}/{name}/versions/{version}"
        )

    def files(
        self, project: str, name: str, version: str | int = "latest", *, page_size: int = 1000
    ) -> builtins.list[ManifestEntry]:
        """The version's manifest: every file's path, size and SHA-256."""
        return builtins.list(
            self._client._paged(
                ManifestEntry,
                f"{self._base(project)}/{name}/versions/{version}/files",
                page_size=page_size,
            )
        )

    def classify(self, project: str, name: str, column: str, classification: str) -> VersionOut:
        """Mark a column public, internal, pii or sensitive (later versions inherit it)."""
        return self._client._model(
            VersionOut,
            "PUT",
            f"{self._base(project)}/{name}/columns/{column}/classification",
            json={"classification": classification},
        )

    def diff(self, project: str, name: str, before: str | int, after: str | int) -> VersionDiff:
        return self._client._model(
            VersionDiff,
            "GET",
            f"{self._base(project)}/{name}/diff",
            params={"before": before, "after": after},
        )

    def lineage(self, project: str, name: str, version: str | int = "latest") -> Lineage:
        return self._client._model(
            Lineage, "GET", f"{self._base(project)}/{name}/versions/{version}/lineage"
        )

    def local_files(
        self,
        project: str,
        name: str,
        version: str | int = "latest",
        *,
        cache: str | Path | None = None,
    ) -> builtins.list[Path]:
        """The version's files in a local cache (downloaded and verified once)."""
        found = self.version(project, name, version)
        base = Path(cache) if cache else cache_root()
        # Keyed by the manifest's hash: the same bytes wherever they came from.
        root = Destination(base / "datasets" / found.manifest_sha256)
        entries = self.files(project, name, found.version)
        local = [root.path(e.path, what="dataset file") for e in entries]
        missing = [
            e
            for e, path in zip(entries, local, strict=True)
            if not path.is_file() or path.stat().st_size != e.size
        ]
        self._fetch(project, missing, root.folder, None)
        return local

    def to_arrow(self, project: str, name: str, version: str | int = "latest") -> Any:
        """The version's Parquet files as one pyarrow Table."""
        import pyarrow.parquet as pq

        return pq.read_table([str(p) for p in self._parquet(project, name, version)])

    def to_pandas(self, project: str, name: str, version: str | int = "latest") -> Any:
        return self.to_arrow(project, name, version).to_pandas()

    def to_polars(self, project: str, name: str, version: str | int = "latest") -> Any:
        import polars as pl

        return pl.from_arrow(self.to_arrow(project, name, version))

    def duckdb(
        self, project: str, name: str, version: str | int = "latest", *, connection: Any = None
    ) -> Any:
        """A DuckDB relation reading the cached Parquet files in place (no second copy)."""
        import duckdb

        con = connection or duckdb.connect()
        return con.read_parquet([str(p) for p in self._parquet(project, name, version)])

    def _parquet(self, project: str, name: str, version: str | int) -> builtins.list[Path]:
        files = [p for p in self.local_files(project, name, version) if p.suffix == ".parquet"]
        if not files:
            raise InvalidInput(
                f"version {version} of {name!r} holds no Parquet files; use download() for "
                "other files",
                field="version",
            )
        return files

    def set_alias(self, project: str, name: str, alias: str, version: int) -> AliasOut:
        """Point ``alias`` at ``version`` (moving it if it exists; every move is audited)."""
        return self._client._model(
            AliasOut,
            "PUT",
            f"{self._base(project)}/{name}/aliases/{alias}",
            json={"version": version},
        )

    def delete_alias(self, project: str, name: str, alias: str) -> None:
        self._client.request("DELETE", f"{self._base(project)}/{name}/aliases/{alias}")

    def download(
        self,
        project: str,
        name: str,
        version: str | int = "latest",
        *,
        destination: str | Path = ".",
        progress: Progress | None = None,
    ) -> VersionOut:
        """Write every file of a version under ``destination``, each verified by SHA-256."""
        found = self.version(project, name, version)
        self._fetch(project, self.files(project, name, found.version), Path(destination), progress)
        return found

    def _fetch(
        self,
        project: str,
        entries: builtins.list[ManifestEntry],
        root: Path,
        progress: Progress | None,
    ) -> None:
        packed: dict[str, builtins.list[Path]] = {}
        folders: set[Path] = set()
        destination = Destination(root)
        for entry in entries:
            target = destination.path(entry.path, what="dataset file")
            if target.parent not in folders:
                target.parent.mkdir(parents=True, exist_ok=True)
                folders.add(target.parent)
            if entry.uri is None and entry.size <= PACK_MEMBER_BYTES:
                packed.setdefault(entry.sha256, []).append(target)
            else:
                self._download(project, entry, target, progress)
        sizes = {e.sha256: e.size for e in entries}
        for batch in _batches(builtins.list(packed), sizes.__getitem__):
            self._download_pack(project, batch, packed, progress)

    def _download_pack(
        self,
        project: str,
        hashes: builtins.list[str],
        targets: dict[str, builtins.list[Path]],
        progress: Progress | None,
    ) -> None:
        """Small files in one streamed response; each is verified before it lands."""
        for sha256, content in self._client.artifacts.fetch_pack(project, hashes):
            for target in targets[sha256]:
                # Verified in memory already, so written in place: no rename per file.
                # An interrupted write leaves a short file, which the cache re-fetches.
                with open_for_write(target) as handle:
                    handle.write(content)
                if progress is not None:
                    progress(len(content))

    def _download(
        self, project: str, entry: ManifestEntry, target: Path, progress: Progress | None
    ) -> None:
        if entry.uri is not None:
            pieces = _external_pieces(entry.uri)
            problem = f"the referenced data at {entry.uri} changed since the version was recorded"
        else:
            pieces = self._client.artifacts.blob_pieces(project, entry.sha256)
            problem = "it was corrupted in transit"
        write_verified(
            pieces, target, entry.sha256, name=entry.path, progress=progress, problem=problem
        )
