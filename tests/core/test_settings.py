from __future__ import annotations

from pathlib import Path

import pytest
from pydantic import ValidationError

from ghaf.core.settings import load_settings


def test_defaults(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    monkeypatch.chdir(tmp_path)
    for var in ("GHAF_HOME", "GHAF_DATABASE_URL", "GHAF_CONFIG", "GHAF_PORT"):
        monkeypatch.delenv(var, raising=False)
    settings = load_settings()
    assert settings.resolved_database_url == f"sqlite:///{tmp_path / '.ghaf' / 'ghaf.db'}"
    assert settings.port == 8080 and settings.log_format == "text"


def test_env_beats_config_file(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    config = tmp_path / "ghaf.toml"
    config.write_text('port = 9001\nregion = "ae-dubai"\nlog_format = "json"\n')
    monkeypatch.setenv("GHAF_CONFIG", str(config))
    monkeypatch.setenv("GHAF_PORT", "9002")
    settings = load_settings()
    assert settings.port == 9002 and settings.region == "ae-dubai"
    assert settings.log_format == "json"


def test_bad_values_name_the_field(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    monkeypatch.delenv("GHAF_CONFIG", raising=False)
    monkeypatch.setenv("GHAF_PORT", "99999")
    with pytest.raises(ValidationError, match="port"):
        load_settings()
    monkeypatch.delenv("GHAF_PORT")
    with pytest.raises(ValidationError, match="tls_cert and tls_key"):
        load_settings(tls_cert=tmp_path / "cert.pem")
    monkeypatch.setenv("GHAF_CONFIG", str(tmp_path / "missing.toml"))
    with pytest.raises(FileNotFoundError):
        load_settings()
