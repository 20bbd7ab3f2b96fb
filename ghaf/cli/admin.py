"""``ghaf server`` and ``ghaf admin``: commands that run on the server host itself."""

from __future__ import annotations

import base64
import json
import os
from pathlib import Path
from typing import Annotated, Any

import typer

from ghaf.console.output import (
    JsonOpt,
    console,
    done,
    fail,
    print_item,
    print_secret,
    print_table,
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


@admin.command("tasks")
def tasks(as_json: JsonOpt = False) -> None:
    """List the periodic background tasks: last run, its outcome, next run."""
    from ghaf.server.tasks import task_report

    with reporting_errors():
        rows = task_report(_settings())
    print_table(
        rows,
        [
            "name",
            "interval_s",
            "state",
            "last_started_at",
            "last_duration_s",
            "next_run_at",
            "last_message",
        ],
        title="periodic tasks",
        as_json=as_json,
    )


@admin.command("audit-key")
def audit_key(
    output: Annotated[Path, typer.Option("--output", "-o")], as_json: JsonOpt = False
) -> None:
    """Write the audit HMAC key versions (0600) for verifying an export elsewhere."""
    from ghaf.core.database import Database
    from ghaf.security.audit.service import AUDIT_KEY
    from ghaf.security.keyring import DatabaseKeyring

    with reporting_errors():
        settings = _settings()
        database = Database(settings.resolved_database_url)
        try:
            keyring = DatabaseKeyring.open(database, settings)
            newest = keyring.get(AUDIT_KEY)
            versions = {
                str(v): base64.b64encode(keyring.get(AUDIT_KEY, v).material).decode()
                for v in range(1, newest.version + 1)
            }
        finally:
            database.dispose()
    fd = os.open(output, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    with os.fdopen(fd, "w") as handle:
        json.dump({"key": AUDIT_KEY, "versions": versions}, handle)
    done(
        f"wrote {len(versions)} audit key version(s) to {output}",
        as_json=as_json,
        payload={"output": str(output), "versions": sorted(versions)},
    )


@admin.command("rotate-master-key")
def rotate_master_key(
    new_key_file: Annotated[
        Path | None,
        typer.Option(help="File (0600) with the new base64 master key."),
    ] = None,
    generate: Annotated[
        bool, typer.Option(help="Create --new-key-file with a new random key first.")
    ] = False,
    new_kms_url: Annotated[
        str | None,
        typer.Option(help="Seal with this KMS key instead: aws-kms://<key id or ARN>."),
    ] = None,
    as_json: JsonOpt = False,
) -> None:
    """Re-seal the keyring under a new master key (also GHAF_NEW_MASTER_KEY). Audited.

    Key material is unchanged: stored data and the audit chain stay valid. Afterwards
    the old master key no longer opens the keyring; restart every server with the new one.
    """
    from ghaf.security.keyring import (
        LocalMasterKey,
        MasterKey,
        decode_master_key,
        read_key_file,
        write_key_file,
    )
    from ghaf.security.kms import master_key_from_url
    from ghaf.server.install import rotate_master_key as rotate

    settings = _settings()
    env_key = os.environ.get("GHAF_NEW_MASTER_KEY")
    given = [x for x in (new_key_file, new_kms_url, env_key) if x]
    if len(given) != 1:
        fail("give the new master key one way: --new-key-file, --new-kms-url, GHAF_NEW_MASTER_KEY")
    if generate and new_key_file is None:
        fail("--generate needs --new-key-file")
    with reporting_errors():
        new: MasterKey
        if new_key_file is not None:
            raw = write_key_file(new_key_file) if generate else read_key_file(new_key_file)
            new = LocalMasterKey(raw, source=f"the master key file {new_key_file}")
        elif new_kms_url:
            new = master_key_from_url(new_kms_url, settings)
        else:
            assert env_key is not None
            new = LocalMasterKey(
                decode_master_key(env_key, what="GHAF_NEW_MASTER_KEY"),
                source="GHAF_NEW_MASTER_KEY",
            )
        result = rotate(settings, new)
    done(
        f"keyring re-sealed under {new.description} (generation {result['generation']}, "
        f"{result['keys']} key versions); set it on every server "
        "(GHAF_MASTER_KEY, GHAF_MASTER_KEY_FILE or GHAF_KMS_URL) and restart them",
        as_json=as_json,
        payload=result,
    )
