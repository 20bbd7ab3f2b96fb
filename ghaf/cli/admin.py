"""``ghaf server`` and ``ghaf admin``: commands that run on the server host itself."""

from __future__ import annotations

import base64
import json
import os
from pathlib import Path
from typing import Annotated, Any

import typer

from ghaf.cli.output import (
    JsonOpt,
    console,
    done,
    fail,
    print_item,
    print_secret,
    reporting_errors,
    styled,
)
from ghaf.core.settings import Settings, load_settings

admin = typer.Typer(
    help="Install, upgrade and recover an installation (local access).", no_args_is_help=True
)


def _settings(**overrides: Any) -> Settings:
    try:
        return load_settings(**{k: v for k, v in overrides.items() if v is not None})
    except Exception as exc:  # pydantic ValidationError or a bad config file
        fail(f"invalid settings: {exc}")


def serve(
    host: Annotated[str | None, typer.Option(help="Bind address.")] = None,
    port: Annotated[int | None, typer.Option(help="Port (0 picks a free one).")] = None,
    workers: Annotated[
        int | None, typer.Option(help="Server processes (default GHAF_WORKERS, else 1).")
    ] = None,
) -> None:
    """Run the API server (uvicorn) until SIGINT or SIGTERM."""
    from ghaf.server.serve import run_server

    settings = _settings(host=host, port=port, workers=workers)
    if workers is not None:
        os.environ["GHAF_WORKERS"] = str(workers)  # the worker processes read it too
    with reporting_errors():
        run_server(settings)


@admin.command("init")
def init(
    admin_name: Annotated[str, typer.Option("--admin", help="First admin's name.")] = "admin",
    password: Annotated[
        bool, typer.Option("--password", help="Prompt for the admin's password (web login).")
    ] = False,
    as_json: JsonOpt = False,
) -> None:
    """Create the home folder, keys and schema, and the first platform admin. Idempotent."""
    from ghaf.server.install import initialise

    secret = (
        typer.prompt("admin password", hide_input=True, confirmation_prompt=True)
        if (password)
        else None
    )
    with reporting_errors():
        result = initialise(_settings(), admin_name=admin_name, admin_password=secret)
    if as_json:
        payload = {k: v for k, v in vars(result).items() if k != "token"}
        payload["token"] = result.token.token if result.token else None
        print_item(payload, as_json=True)
        return
    console.print(
        f"home      {result.home}\ndatabase  {result.database}\n"
        f"schema    {result.schema_before or 'empty'} -> {result.schema_after}",
        highlight=False,
    )
    if result.token is None:
        console.print(
            "a platform admin already exists; no new token was created "
            "(use `ghaf admin token` to mint one)"
        )
    else:
        console.print(
            styled(
                "platform admin ",
                (str(result.admin), "bold"),
                f" created. Its token, shown once:\n{result.token.token}",
            ),
            highlight=False,
        )


@admin.command("migrate")
def migrate(as_json: JsonOpt = False) -> None:
    """Upgrade the database schema to this version of ghaf. Idempotent."""
    from ghaf.server.install import migrate as run_migrate

    with reporting_errors():
        before, after = run_migrate(_settings())
    message = (
        "schema already current"
        if before == after
        else f"schema upgraded {before or 'empty'} -> {after}"
    )
    done(message, as_json=as_json, payload={"before": before, "after": after})


@admin.command("token")
def token(
    admin_name: Annotated[str, typer.Option("--admin")] = "admin",
    name: Annotated[str | None, typer.Option(help="Token name.")] = None,
    expires_in_days: float | None = None,
    as_json: JsonOpt = False,
) -> None:
    """Mint a token for a platform admin through local database access (recovery)."""
    from ghaf.server.install import mint_admin_token

    with reporting_errors():
        created = mint_admin_token(
            _settings(), admin_name=admin_name, token_name=name, expires_in_days=expires_in_days
        )
    print_secret(created, as_json=as_json)


@admin.command("audit-key")
def audit_key(
    output: Annotated[Path, typer.Option("--output", "-o")], as_json: JsonOpt = False
) -> None:
    """Write the audit HMAC key versions (0600) for verifying an export elsewhere."""
    from ghaf.security.audit.service import AUDIT_KEY
    from ghaf.security.keyring import LocalKeyring

    with reporting_errors():
        keyring = LocalKeyring.from_settings(_settings())
        newest = keyring.get(AUDIT_KEY)
        versions = {
            str(v): base64.b64encode(keyring.get(AUDIT_KEY, v).material).decode()
            for v in range(1, newest.version + 1)
        }
    fd = os.open(output, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    with os.fdopen(fd, "w") as handle:
        json.dump({"key": AUDIT_KEY, "versions": versions}, handle)
    done(
        f"wrote {len(versions)} audit key version(s) to {output}",
        as_json=as_json,
        payload={"output": str(output), "versions": sorted(versions)},
    )
