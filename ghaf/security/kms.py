"""Key management: data keys wrapped under a project's KEK, and what seals the keyring.

The store only sees :class:`Kms`, so the KEK can live in the keyring (the default, kept
in the metadata database, wrapping in-process) or in an external KMS that wraps and
unwraps on its side and never hands out the KEK, such as HashiCorp Vault's transit
engine (``POST transit/encrypt/<key>``, ``transit/decrypt/<key>``,
``transit/keys/<key>/rotate``); docs/storage.md shows that mapping.

The keyring itself is sealed by a master key; :class:`AwsKmsMasterKey` lets an AWS KMS
key (or a compatible service's: LocalStack, moto, ...) protect it instead of a key the
server holds: ghaf asks KMS for a data key once (``GenerateDataKey``), keeps only the
KMS-encrypted copy in ``keyring_state``, and has KMS decrypt it at each start.
"""

from __future__ import annotations

import abc
import base64
from typing import TYPE_CHECKING, Any

from ghaf.core.errors import GhafError, IntegrityFailure
from ghaf.security.envelope import unwrap_key, wrap_key
from ghaf.security.keyring import KEY_BYTES, Keyring, KeyringError, MasterKey

if TYPE_CHECKING:
    from ghaf.core.settings import Settings

AWS_KMS_SCHEME = "aws-kms://"
_CONTEXT = {"purpose": "ghaf-keyring"}  # KMS encryption context: binds the blob's use


def kek_name(project_id: str) -> str:
    return f"project:{project_id}"


class Kms(abc.ABC):
    """Per-project key-encryption keys, versioned; older versions stay usable."""

    @abc.abstractmethod
    def wrap(self, project_id: str, object_id: str, data_key: bytes) -> tuple[int, str]:
        """Wrap with the newest KEK version (made on first use); returns (version, wrapped)."""

    @abc.abstractmethod
    def unwrap(self, project_id: str, object_id: str, version: int, wrapped: str) -> bytes:
        """Raises ``IntegrityFailure`` if ``wrapped`` does not open with that version."""

    @abc.abstractmethod
    def newest_version(self, project_id: str) -> int:
        """The newest KEK version, or 0 if the project has none yet."""

    @abc.abstractmethod
    def rotate(self, project_id: str) -> int:
        """Add a KEK version; returns it."""


class LocalKms(Kms):
    """KEKs in the keyring (the database's), wrapping in-process with AES-256-GCM."""

    def __init__(self, keyring: Keyring) -> None:
        self.keyring = keyring

    def wrap(self, project_id: str, object_id: str, data_key: bytes) -> tuple[int, str]:
        kek = self.keyring.ensure(kek_name(project_id))
        wrapped = wrap_key(
            kek.material,
            data_key,
            project_id=project_id,
            object_id=object_id,
            kek_version=kek.version,
        )
        return kek.version, wrapped

    def unwrap(self, project_id: str, object_id: str, version: int, wrapped: str) -> bytes:
        try:
            kek = self.keyring.get(kek_name(project_id), version)
        except KeyringError:
            raise IntegrityFailure(
                f"the data key of object {object_id} names KEK version {version}, which "
                "this project does not have"
            ) from None
        return unwrap_key(
            kek.material, wrapped, project_id=project_id, object_id=object_id, kek_version=version
        )

    def newest_version(self, project_id: str) -> int:
        try:
            return self.keyring.get(kek_name(project_id)).version
        except GhafError:
            return 0

    def rotate(self, project_id: str) -> int:
        return self.keyring.rotate(kek_name(project_id)).version


# --- master keys held by an external KMS ------------------------------------------


def master_key_from_url(url: str, settings: Settings) -> MasterKey:
    """The master key a ``GHAF_KMS_URL`` names."""
    if url.startswith(AWS_KMS_SCHEME):
        return AwsKmsMasterKey.from_settings(url, settings)
    raise KeyringError(
        f"GHAF_KMS_URL {url!r} names no known KMS: write aws-kms://<key-id, alias/name or ARN>"
    )


class AwsKmsMasterKey(MasterKey):
    """A master key generated and wrapped by an AWS KMS key (or a compatible service)."""

    provider = "aws-kms"

    def __init__(self, key_id: str, client: Any) -> None:
        if not key_id:
            raise KeyringError("aws-kms:// needs a key id, alias/<name> or key ARN")
        self.key_id = key_id
        self.client = client

    @classmethod
    def from_settings(cls, url: str, settings: Settings) -> AwsKmsMasterKey:
        import boto3
        from botocore.config import Config

        key_id = url[len(AWS_KMS_SCHEME) :]
        region = settings.kms_region
        if region is None and key_id.startswith("arn:"):
            parts = key_id.split(":")
            region = parts[3] if len(parts) > 3 and parts[3] else None
        secret = settings.kms_secret_access_key
        client = boto3.client(
            "kms",
            endpoint_url=settings.kms_endpoint_url,
            region_name=region,
            aws_access_key_id=settings.kms_access_key_id,
            aws_secret_access_key=secret.get_secret_value() if secret else None,
            config=Config(retries={"max_attempts": 5, "mode": "standard"}),
        )
        return cls(key_id, client)

    def new_material(self) -> tuple[bytes, str | None]:
        answer = self._call(
            "GenerateDataKey", KeyId=self.key_id, KeySpec="AES_256", EncryptionContext=_CONTEXT
        )
        plain = bytes(answer["Plaintext"])
        if len(plain) != KEY_BYTES:
            raise KeyringError(f"KMS returned a {len(plain)}-byte data key, not {KEY_BYTES}")
        return plain, base64.b64encode(bytes(answer["CiphertextBlob"])).decode()

    def open_material(self, wrapped: str | None) -> bytes:
        if not wrapped:
            raise KeyringError("the keyring holds no KMS-wrapped master key")
        answer = self._call(
            "Decrypt",
            CiphertextBlob=base64.b64decode(wrapped),
            KeyId=self.key_id,
            EncryptionContext=_CONTEXT,
        )
        plain = bytes(answer["Plaintext"])
        if len(plain) != KEY_BYTES:
            raise KeyringError("KMS returned a master key of the wrong length")
        return plain

    def _call(self, operation: str, **kwargs: Any) -> dict[str, Any]:
        from botocore.exceptions import BotoCoreError, ClientError

        method = {"GenerateDataKey": "generate_data_key", "Decrypt": "decrypt"}[operation]
        try:
            answer: dict[str, Any] = getattr(self.client, method)(**kwargs)
        except ClientError as exc:
            error = exc.response.get("Error", {})
            raise KeyringError(
                f"KMS {operation} with key {self.key_id} failed: "
                f"{error.get('Code', 'error')}: {error.get('Message', '')}".rstrip(": ")
            ) from None
        except BotoCoreError as exc:
            raise KeyringError(f"KMS {operation} with key {self.key_id} failed: {exc}") from None
        return answer
