"""Key management for data keys: wrap and unwrap under a project's KEK, and rotate it.

The store only sees this interface, so the KEK can live in the local keyring (the
embedded default, where wrapping happens in-process) or in an external KMS that wraps
and unwraps on its side and never hands out the KEK, such as HashiCorp Vault's transit
engine (``POST transit/encrypt/<key>``, ``transit/decrypt/<key>``,
``transit/keys/<key>/rotate``); docs/storage.md shows that mapping.
"""

from __future__ import annotations

import abc

from ghaf.core.errors import GhafError, IntegrityFailure
from ghaf.security.envelope import unwrap_key, wrap_key
from ghaf.security.keyring import KeyringError, LocalKeyring


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
    """KEKs in the local keyring file, wrapping in-process with AES-256-GCM."""

    def __init__(self, keyring: LocalKeyring) -> None:
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
