from __future__ import annotations

import base64
import os
from pathlib import Path

import pytest

from ghaf.core.errors import IntegrityFailure
from ghaf.core.settings import Settings
from ghaf.security.keyring import KeyringError, LocalKeyring, load_master_key


def test_master_key_file_is_private_and_stable(tmp_path: Path) -> None:
    settings = Settings(home=tmp_path, master_key=None)
    key = load_master_key(settings, create=True)
    assert len(key) == 32
    assert (settings.master_key_path.stat().st_mode & 0o777) == 0o600
    assert load_master_key(settings) == key
    os.chmod(settings.master_key_path, 0o644)
    with pytest.raises(KeyringError, match="chmod 600"):
        load_master_key(settings)


def test_master_key_from_env(tmp_path: Path) -> None:
    raw = os.urandom(32)
    settings = Settings(home=tmp_path, master_key=base64.b64encode(raw).decode())
    assert load_master_key(settings) == raw
    with pytest.raises(KeyringError, match="32 bytes"):
        load_master_key(Settings(home=tmp_path, master_key=base64.b64encode(b"x").decode()))


def test_versions_and_rotation(tmp_path: Path) -> None:
    ring = LocalKeyring(tmp_path / "k.json", os.urandom(32))
    first = ring.ensure("audit")
    assert ring.ensure("audit").version == 1
    second = ring.rotate("audit")
    assert second.version == 2 and second.material != first.material
    assert ring.get("audit", 1).material == first.material
    assert "material" not in repr(second) and str(first.material) not in repr(first)


def test_wrong_master_key_or_tampered_file(tmp_path: Path) -> None:
    path = tmp_path / "k.json"
    LocalKeyring(path, os.urandom(32)).ensure("audit")
    with pytest.raises(IntegrityFailure):
        LocalKeyring(path, os.urandom(32)).get("audit")
    path.write_text("{not json")
    with pytest.raises(KeyringError):
        LocalKeyring(path, os.urandom(32)).get("audit")
