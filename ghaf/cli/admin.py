"""``ghaf server`` and ``ghaf admin``: commands that run on the server host itself.

Exit codes (beyond ghaf/console/output.py's 0, 1 and 2): ``ghaf server`` exits 3 when
its address is already in use. A database that cannot be opened (it does not exist,
the server refuses the connection, a malformed URL) is one line and exit 1.
"""

from __future__ import annotations

import base64
import json
import os
import re
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Annotated, Any

import typer

from ghaf.console.output import (
    EXIT_ADDRESS_IN_USE,
    EXIT_CHECK_FAILED,
    ExpiresOpt,
    JsonOpt,
    console,
    done,
    fail,
    print_error,
    print_item,
    print_secret,
    print_table,
    reporting_errors,
    styled,
)
from ghaf.core.errors import GhafError, InvalidInput, Unavailable
from ghaf.core.settings import Settings, load_settings

admin = typer.Typer(
    help="Install, upgrade and recover an installation (local access).", no_args_is_help=True
)


def _settings(**overrides: Any) -> Settings:
    try:
        return load_settings(**{k: v for k, v in overrides.items() if v is not None})
    except Exception as exc:  # pydantic ValidationError or a bad config file
        fail(f"invalid settings: {exc}")


def _database_url() -> tuple[str, str | None]:
    """The configured database URL with its password hidden, and its database's name."""
    from sqlalchemy.engine import make_url

    try:
        url = make_url(load_settings().resolved_database_url)
        return url.render_as_string(hide_password=True), url.database
    except Exception:  # a URL that does not even parse: say which setting to look at
        return "GHAF_DATABASE_URL", None


def _reason(error: BaseException) -> str:
    """The driver's own words, on one line (``FATAL:  database "x" does not exist``)."""
    text = str(getattr(error, "orig", None) or error).strip().splitlines()
    line = text[0] if text else type(error).__name__
    line = line.rsplit("FATAL:", 1)[-1]
    return re.sub(r"\s+", " ", line).strip()


def _database_problem(error: Exception) -> GhafError | None:
    """A clear error for a database that cannot be opened, or ``None`` when ``error``
    is something else (which then propagates as the bug it is)."""
    from sqlalchemy.exc import ArgumentError, InterfaceError, NoSuchModuleError, OperationalError

    if isinstance(error, OperationalError | InterfaceError):
        reason = _reason(error)
        url, name = _database_url()
        hint = (
            f" (create it first, e.g. `createdb {name}`, or point GHAF_DATABASE_URL elsewhere)"
            if name and f'database "{name}" does not exist' in reason
            else ""
        )
        return Unavailable(f"cannot open the database {url}: {reason}{hint}", field="database_url")
    if isinstance(error, ArgumentError | NoSuchModuleError):
        return InvalidInput(
            f"GHAF_DATABASE_URL is not a database URL ghaf can use: {_reason(error)}",
            field="database_url",
        )
    return None


@contextmanager
def _local() -> Iterator[None]:
    """Errors of commands that work on the installation directly, as one line each
    (reporting_errors for ghaf's own errors, plus the database's and the socket's)."""
    try:
        with reporting_errors():
            yield
    except typer.Exit:
        raise
    except Exception as error:
        problem = _database_problem(error)
        if problem is None:
            raise
        print_error(problem.to_problem())
        raise typer.Exit(EXIT_CHECK_FAILED if problem.status >= 500 else 2) from None


def serve(
    host: Annotated[str | None, typer.Option(help="Bind address.")] = None,
    port: Annotated[int | None, typer.Option(help="Port (0 picks a free one).")] = None,
    workers: Annotated[
        int | None, typer.Option(help="Server processes (default GHAF_WORKERS, else 1).")
    ] = None,
) -> None:
    """Run the API server (uvicorn) until SIGINT or SIGTERM.

    Exits 0 after a clean stop, 3 if the address (host and port) is already in use,
    1 if the database cannot be opened or the server fails, 2 for invalid settings.
    """
    from ghaf.server.serve import AddressInUse, run_server

    settings = _settings(host=host, port=port, workers=workers)
    if workers is not None:
        os.environ["GHAF_WORKERS"] = str(workers)  # the worker processes read it too
    with _local():
        try:
            run_server(settings)
        except AddressInUse as error:  # raised before anything was opened or written
            print_error(error.to_problem())
            raise typer.Exit(EXIT_ADDRESS_IN_USE) from None


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
    with _local():
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
            "(use `ghaf admin token` to mint one)",
            soft_wrap=True,
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

    with _local():
        before, after = run_migrate(_settings())
    message = (
        "schema already current"
        if before == after
        else f"schema upgraded {before or 'empty'} -> {after}"
    )
    done(message, as_json=as_json, payload={"before": before, "after": after})


@admin.command("token")
def token(
    admin_name: Annotated[
        str, typer.Option("--admin", help="The platform admin's name.")
    ] = "admin",
    name: Annotated[str | None, typer.Option(help="Token name.")] = None,
    expires_in_days: ExpiresOpt = None,
    as_json: JsonOpt = False,
) -> None:
    """Mint a token for a platform admin through local database access (recovery)."""
    from ghaf.server.install import mint_admin_token

    with _local():
        created = mint_admin_token(
            _settings(), admin_name=admin_name, token_name=name, expires_in_days=expires_in_days
        )
    print_secret(created, as_json=as_json)


@admin.command("tasks")
def tasks(as_json: JsonOpt = False) -> None:
    """List the periodic background tasks: last run, its outcome, next run."""
    from ghaf.server.tasks import task_report

    with _local():
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
    output: Annotated[Path, typer.Option("--output", "-o", help="The key file to write (0600).")],
    as_json: JsonOpt = False,
) -> None:
    """Write the audit HMAC key versions (0600) for verifying an export elsewhere."""
    from ghaf.core.database import Database
    from ghaf.security.audit.service import AUDIT_KEY
    from ghaf.security.keyring import DatabaseKeyring

    with _local():
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
    with _local():
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
