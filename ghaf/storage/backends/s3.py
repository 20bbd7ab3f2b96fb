"""Objects in an S3-compatible bucket (``s3://bucket/prefix``): AWS S3, MinIO, Ceph RGW.

Uploads stream as multipart uploads, invisible until completed; reads are ranged GETs.
"""

from __future__ import annotations

import logging
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from typing import Any
from urllib.parse import urlparse

from ghaf.core.errors import InvalidInput, ObjectExists, Unavailable
from ghaf.core.settings import Settings
from ghaf.storage.backends.base import (
    INCOMPLETE,
    Backend,
    Bytes,
    ObjectMissing,
    ObjectReader,
    ObjectWriter,
    check_key,
)

PART_BYTES = 8 << 20  # S3 needs >= 5 MiB for every part but the last
log = logging.getLogger("ghaf.storage")


class S3Backend(Backend):
    def __init__(self, url: str, *, region: str, settings: Settings) -> None:
        try:
            import boto3
            from botocore.config import Config
        except ImportError:
            raise Unavailable("s3:// storage needs boto3: pip install 'ghaf[s3]'") from None
        parsed = urlparse(url)
        if not parsed.netloc:
            raise InvalidInput(f"storage_url {url!r} names no bucket", field="storage_url")
        self.url = url
        self.region = region
        self.bucket = parsed.netloc
        self.prefix = parsed.path.strip("/")
        secret = settings.s3_secret_access_key
        self._client: Any = boto3.client(
            "s3",
            endpoint_url=settings.s3_endpoint_url,
            region_name=settings.s3_region,
            aws_access_key_id=settings.s3_access_key_id,
            aws_secret_access_key=secret.get_secret_value() if secret else None,
            config=Config(
                retries={"max_attempts": 5, "mode": "standard"}, s3={"addressing_style": "path"}
            ),
        )

    def _key(self, key: str) -> str:
        check_key(key)
        return f"{self.prefix}/{key}" if self.prefix else key

    def writer(self, key: str) -> ObjectWriter:
        return _S3Writer(self._client, self.bucket, self._key(key))

    def reader(self, key: str) -> ObjectReader:
        from botocore.exceptions import ClientError

        full = self._key(key)
        try:
            head = self._client.head_object(Bucket=self.bucket, Key=full)
        except ClientError as exc:
            if exc.response.get("Error", {}).get("Code") in ("404", "NoSuchKey", "NotFound"):
                raise ObjectMissing(key) from None
            raise
        return _S3Reader(self._client, self.bucket, full, int(head["ContentLength"]))

    def delete(self, key: str) -> None:
        self._client.delete_object(Bucket=self.bucket, Key=self._key(key))

    def keys(self, prefix: str) -> Iterator[str]:
        full = self._key(prefix) if prefix else self.prefix
        strip = len(self.prefix) + 1 if self.prefix else 0
        paginator = self._client.get_paginator("list_objects_v2")
        for page in paginator.paginate(Bucket=self.bucket, Prefix=full):
            for item in page.get("Contents", []):
                yield item["Key"][strip:]
        # Multipart uploads that died half-way hold storage too: report them as keys.
        uploads = self._client.get_paginator("list_multipart_uploads")
        for page in uploads.paginate(Bucket=self.bucket, Prefix=full):
            for upload in page.get("Uploads", []):
                yield upload["Key"][strip:] + INCOMPLETE

    # --- append-only objects: S3 Object Lock in COMPLIANCE mode where the bucket has it --

    _object_lock: bool | None = None

    def object_lock_enabled(self) -> bool:
        """Whether the bucket was created with Object Lock (checked once)."""
        if self._object_lock is None:
            from botocore.exceptions import ClientError

            try:
                config = self._client.get_object_lock_configuration(Bucket=self.bucket)
                enabled = config.get("ObjectLockConfiguration", {}).get("ObjectLockEnabled")
                self._object_lock = enabled == "Enabled"
            except ClientError as exc:
                code = exc.response.get("Error", {}).get("Code")
                if code != "ObjectLockConfigurationNotFoundError":
                    log.warning("cannot read the Object Lock setting of %s: %s", self.bucket, code)
                self._object_lock = False
            if not self._object_lock:
                log.warning(
                    "bucket %s has no Object Lock: append-only audit witness objects there "
                    "can be deleted by anyone holding s3:DeleteObject",
                    self.bucket,
                )
        return self._object_lock

    def _versions(self, full: str) -> list[dict[str, Any]]:
        """Every version of one key, newest first (delete markers excluded)."""
        found: list[dict[str, Any]] = []
        paginator = self._client.get_paginator("list_object_versions")
        for page in paginator.paginate(Bucket=self.bucket, Prefix=full):
            found.extend(v for v in page.get("Versions", []) if v["Key"] == full)
        return found

    def put_immutable(self, key: str, data: bytes, *, retain_days: float) -> None:
        from botocore.exceptions import ClientError

        full = self._key(key)
        extra: dict[str, Any] = {}
        if self.object_lock_enabled():
            if self._versions(full):  # a hidden (delete-marked) version still holds the key
                raise ObjectExists(key)
            extra = {
                "ObjectLockMode": "COMPLIANCE",
                "ObjectLockRetainUntilDate": datetime.now(UTC) + timedelta(days=retain_days),
            }
        try:
            self._client.put_object(
                Bucket=self.bucket,
                Key=full,
                Body=data,
                IfNoneMatch="*",
                ChecksumAlgorithm="SHA256",
                **extra,
            )
        except ClientError as exc:
            code = exc.response.get("Error", {}).get("Code")
            if code in ("PreconditionFailed", "ConditionalRequestConflict", "412"):
                raise ObjectExists(key) from None
            raise

    def read_immutable(self, key: str) -> bytes:
        if not self.object_lock_enabled():
            return super().read_immutable(key)
        full = self._key(key)
        versions = self._versions(full)
        if not versions:
            raise ObjectMissing(key)
        # The first version is the one written under the lock; later ones are not ours.
        # (Listed newest first; times can tie at one-second resolution.)
        first = min(reversed(versions), key=lambda v: v["LastModified"])
        response = self._client.get_object(
            Bucket=self.bucket, Key=full, VersionId=first["VersionId"]
        )
        data: bytes = response["Body"].read()
        return data

    def immutable_keys(self, prefix: str) -> Iterator[str]:
        if not self.object_lock_enabled():
            yield from super().immutable_keys(prefix)
            return
        full = self._key(prefix) if prefix else self.prefix
        strip = len(self.prefix) + 1 if self.prefix else 0
        seen: set[str] = set()
        paginator = self._client.get_paginator("list_object_versions")
        for page in paginator.paginate(Bucket=self.bucket, Prefix=full):
            for item in [*page.get("Versions", []), *page.get("DeleteMarkers", [])]:
                if item["Key"] not in seen:
                    seen.add(item["Key"])
                    yield item["Key"][strip:]


class _S3Writer(ObjectWriter):
    def __init__(self, client: Any, bucket: str, key: str) -> None:
        self._client, self._bucket, self._key = client, bucket, key
        self._buffer = bytearray()
        self._parts: list[dict[str, Any]] = []
        self._upload_id: str | None = None
        self._size = 0

    def write(self, data: Bytes) -> None:
        self._buffer += data
        self._size += len(data)
        while len(self._buffer) >= PART_BYTES:
            self._send_part(bytes(self._buffer[:PART_BYTES]))
            del self._buffer[:PART_BYTES]

    def _send_part(self, body: bytes) -> None:
        if self._upload_id is None:
            self._upload_id = self._client.create_multipart_upload(
                Bucket=self._bucket, Key=self._key
            )["UploadId"]
        number = len(self._parts) + 1
        etag = self._client.upload_part(
            Bucket=self._bucket,
            Key=self._key,
            Body=body,
            UploadId=self._upload_id,
            PartNumber=number,
        )["ETag"]
        self._parts.append({"ETag": etag, "PartNumber": number})

    def commit(self) -> int:
        if self._upload_id is None:  # small object: one request
            self._client.put_object(Bucket=self._bucket, Key=self._key, Body=bytes(self._buffer))
            return self._size
        if self._buffer:
            self._send_part(bytes(self._buffer))
            self._buffer = bytearray()
        self._client.complete_multipart_upload(
            Bucket=self._bucket,
            Key=self._key,
            UploadId=self._upload_id,
            MultipartUpload={"Parts": self._parts},
        )
        return self._size

    def abort(self) -> None:
        if self._upload_id is not None:
            self._client.abort_multipart_upload(
                Bucket=self._bucket, Key=self._key, UploadId=self._upload_id
            )
            self._upload_id = None
        self._buffer = bytearray()


class _S3Reader(ObjectReader):
    def __init__(self, client: Any, bucket: str, key: str, size: int) -> None:
        self._client, self._bucket, self._key = client, bucket, key
        self.size = size

    def read(self, offset: int, length: int) -> bytes:
        if length <= 0 or offset >= self.size:
            return b""
        last = min(offset + length, self.size) - 1
        response = self._client.get_object(
            Bucket=self._bucket, Key=self._key, Range=f"bytes={offset}-{last}"
        )
        data: bytes = response["Body"].read()
        return data
