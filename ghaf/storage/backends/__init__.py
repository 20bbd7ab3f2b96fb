"""Object storage backends, one module each, chosen by URL (see ``open_backend``)."""

from __future__ import annotations

from ghaf.core.errors import InvalidInput
from ghaf.core.settings import Settings
from ghaf.storage.backends.base import Backend


def open_backend(settings: Settings) -> Backend:
    """The backend ``settings.storage_url`` names: ``file://`` (default) or ``s3://``."""
    url = settings.resolved_storage_url
    region = settings.storage_region or settings.region
    if url.startswith("file://"):
        from ghaf.storage.backends.local import LocalBackend

        return LocalBackend(url, region=region)
    if url.startswith("s3://"):
        from ghaf.storage.backends.s3 import S3Backend

        return S3Backend(url, region=region, settings=settings)
    raise InvalidInput(
        f"storage_url {url!r} is not supported: use file:// or s3://", field="storage_url"
    )
