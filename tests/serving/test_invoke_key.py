"""The per-server invoke key: accepted without asking the platform, compared in constant
time, never shown; and ``ghaf serve`` with it, over TLS, logging its predictions."""

from __future__ import annotations

import asyncio
import io
import os
from pathlib import Path

import httpx
import numpy as np
import pyarrow.parquet as pq
import pytest
from typer.testing import CliRunner

from ghaf.cli.main import app as cli
from ghaf.core.errors import InvalidInput, Unauthenticated
from ghaf.server.process import free_port
from ghaf.serving.auth import KEY_PRINCIPAL, InvokeKey, KeyAuthorizer, RemoteAuthorizer
from ghaf.serving.standalone import check_tls, invoke_key
from tests.conftest import Platform, self_signed_cert
from tests.serving.conftest import AllowAll, Registered, bearer, ghaf_serve

KEY = "Zx9-" + "q" * 40
runner = CliRunner()


def _key_file(folder: Path, text: str = KEY, mode: int = 0o600) -> Path:
    path = folder / "invoke.key"
    path.write_text(text + "\n")
    path.chmod(mode)
    return path


def test_keys_must_be_long_and_header_safe() -> None:
    for bad in ("short", "x" * 31, "a b" * 20, "\u00e9" * 40):
        with pytest.raises(InvalidInput, match="at least 32 characters") as refused:
            InvokeKey(bad)
        assert bad not in str(refused.value.detail) or bad == "short"
    key = InvokeKey(f"  {KEY}\n")
    assert key.matches(f"Bearer {KEY}")
    assert not key.matches(f"Bearer {KEY[:-1]}x") and not key.matches(KEY)
    assert KEY not in repr(key) and KEY not in str(key)


def test_key_files_must_be_private(tmp_path: Path) -> None:
    assert InvokeKey.from_file(_key_file(tmp_path)).matches(f"Bearer {KEY}")
    with pytest.raises(InvalidInput, match="chmod 600"):
        InvokeKey.from_file(_key_file(tmp_path, mode=0o644))
    with pytest.raises(InvalidInput, match="cannot read the invoke key file"):
        InvokeKey.from_file(tmp_path / "missing")
    with pytest.raises(InvalidInput, match="not both"):
        invoke_key(_key_file(tmp_path), KEY)
    assert invoke_key(None, None) is None
    from_env = invoke_key(None, KEY)
    assert from_env is not None and "GHAF_SERVE_INVOKE_KEY" in repr(from_env)


def test_the_key_is_let_in_and_other_tokens_go_to_the_platform() -> None:
    async def main() -> None:
        fallback = AllowAll()
        authorizer = KeyAuthorizer(InvokeKey(KEY), "p", fallback)
        grant = await authorizer.authorize(f"Bearer {KEY}", client=None)
        assert grant.principal == KEY_PRINCIPAL and grant.project == "p"
        assert fallback.asked == 0  # the key never reaches the platform
        await authorizer.authorize("Bearer ghaf_other", client=None)
        assert fallback.asked == 1
        alone = KeyAuthorizer(InvokeKey(KEY), "p")
        with pytest.raises(Unauthenticated, match="only its invoke key"):
            await alone.authorize("Bearer ghaf_other", client=None)
        with pytest.raises(Unauthenticated, match="authentication required"):
            await alone.authorize(None, client=None)

    asyncio.run(main())


def test_the_key_works_while_the_platform_is_unreachable() -> None:
    async def main() -> None:
        remote = RemoteAuthorizer(f"http://127.0.0.1:{free_port()}", "p", timeout_s=2)
        authorizer = KeyAuthorizer(InvokeKey(KEY), "p", remote)
        try:
            assert (await authorizer.authorize(f"Bearer {KEY}", client=None)).principal
            assert remote.platform_calls == 0
        finally:
            await authorizer.aclose()

    asyncio.run(main())


# --- TLS -------------------------------------------------------------------------------


def test_tls_files_that_cannot_serve_are_refused_before_listening(tmp_path: Path) -> None:
    cert, key = self_signed_cert(tmp_path)
    check_tls(cert, key)
    with pytest.raises(InvalidInput, match="is not a file"):
        check_tls(tmp_path / "nope.pem", key)
    with pytest.raises(InvalidInput, match="cannot serve HTTPS"):
        check_tls(key, cert)  # swapped


def test_serve_refuses_bad_tls_and_bad_keys_with_one_line(
    admin_cli: Path, registered: Registered, tmp_path: Path
) -> None:
    cert, key = self_signed_cert(tmp_path)
    args = ["serve", "churn@prod", "-p", registered.project, "--port", "1"]
    half = runner.invoke(cli, [*args, "--tls-cert", str(cert)])
    assert half.exit_code != 0 and "--tls-key" in half.output
    swapped = runner.invoke(cli, [*args, "--tls-cert", str(key), "--tls-key", str(cert)])
    assert swapped.exit_code == 2 and "cannot serve HTTPS" in swapped.output
    loose = runner.invoke(cli, [*args, "--invoke-key-file", str(_key_file(tmp_path, mode=0o644))])
    assert loose.exit_code == 2 and "chmod 600" in loose.output
    weak = runner.invoke(cli, args, env={"GHAF_SERVE_INVOKE_KEY": "weak-key"})
    assert weak.exit_code == 2 and "at least 32 characters" in weak.output
    assert "weak-key" not in weak.output


# --- ghaf serve end to end ---------------------------------------------------------------


def test_serve_over_tls_with_an_invoke_key_logs_its_predictions(
    platform: Platform, registered: Registered, tmp_path: Path
) -> None:
    cert, key = self_signed_cert(tmp_path)
    env = {
        **os.environ,
        "GHAF_URL": platform.url,
        "GHAF_TOKEN": platform.admin_token,
        "GHAF_CREDENTIALS": str(tmp_path / "credentials.json"),
        "GHAF_SERVE_TLS_CERT": str(cert),
        "GHAF_SERVE_TLS_KEY": str(key),
    }
    args = [f"forest:{registered.forest.version}", "-p", registered.project]
    args += ["--invoke-key-file", str(_key_file(tmp_path))]
    X = registered.X20[:3]
    tensor = {"name": "X", "datatype": "FP32", "shape": [3, 20], "data": X.ravel().tolist()}
    with ghaf_serve(args, env, tls_ca=cert) as served:
        http, port = served.http, served.port
        with pytest.raises(httpx.TransportError):  # no plain HTTP on the TLS port
            httpx.get(f"http://127.0.0.1:{port}/v2/health/live")
        keyed = http.post(
            "/v2/models/forest/infer",
            json={"inputs": [tensor]},
            headers={"authorization": f"Bearer {KEY}", "x-request-id": "edge-1"},
        )
        assert keyed.status_code == 200, keyed.text
        token = http.post(
            "/v2/models/forest/infer",
            json={"inputs": [tensor]},
            headers=bearer(registered.member),
        )
        assert token.status_code == 200
        assert http.get("/v2", headers={"authorization": f"Bearer {KEY}x"}).status_code == 401
    assert KEY not in served.output and platform.admin_token not in served.output
    # Stopping stored the buffered log with the server's login.
    admin = platform.client()
    prefix = f"predictions/forest/{registered.forest.version}/"
    [stored] = [
        a
        for a in admin.artifacts.list(registered.project, prefix=prefix)
        if b"edge-1" in admin.artifacts.read(registered.project, a.path)
    ]
    table = pq.read_table(io.BytesIO(admin.artifacts.read(registered.project, stored.path)))
    ids = table.column("request_id").to_pylist()
    assert ids[:3] == ["edge-1"] * 3 and len(ids) == 6
    callers = table.column("caller").to_pylist()
    assert callers[:3] == [KEY_PRINCIPAL] * 3
    assert callers[3:] == [registered.member.whoami().name] * 3
    inputs = np.asarray(table.column("inputs").combine_chunks().field("X").to_pylist())
    assert np.allclose(inputs[:3], X)
