"""Domains plug in through their manifest: a new one needs only its folder and one line
in the list of domains. Imports run one way (import-linter's contracts)."""

from __future__ import annotations

import dataclasses
import shutil
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path

import pytest
from fastapi.testclient import TestClient
from typer.testing import CliRunner

from ghaf.cli.main import build_cli
from ghaf.core import migrate
from ghaf.core.database import Base
from ghaf.core.settings import Settings
from ghaf.domains import DOMAINS, load_models, periodic_tasks, register_migrations
from ghaf.server.app import API_PREFIX, create_app
from ghaf.server.install import initialise
from tests.conftest import Databases

ROOT = Path(__file__).resolve().parents[2]
TABLE = "sample_notes"


@pytest.fixture
def sample_domain(monkeypatch: pytest.MonkeyPatch) -> Iterator[object]:
    from tests.server.notes.manifest import MANIFEST

    # The sample's revision joins the history (with the domains' own) for this test only.
    monkeypatch.setattr(migrate, "_domain_locations", list(migrate._domain_locations))
    yield MANIFEST
    # Keep the sample's table out of the one metadata the migration test compares.
    if TABLE in Base.metadata.tables:
        Base.metadata.remove(Base.metadata.tables[TABLE])


def test_a_new_domain_plugs_in_through_its_manifest(
    sample_domain: object, databases: Databases, tmp_path: Path
) -> None:
    from tests.server.notes import service
    from tests.server.notes.manifest import MANIFEST

    # Its migration: a revision script in the domain's own folder, revising the newest
    # revision there is (written here because that one changes as ghaf grows).
    folder = tmp_path / "notes-migrations"
    folder.mkdir()
    (folder / "0100_sample_notes.py").write_text(
        _NOTES_REVISION.format(down=migrate.head_revision())
    )
    domains = (*DOMAINS, dataclasses.replace(MANIFEST, migrations=folder))
    # The table: loaded through the manifest's models module.
    load_models(domains)
    assert TABLE in Base.metadata.tables
    register_migrations(domains)
    settings = Settings(home=tmp_path, database_url=databases.new_url(), master_key=None)  # type: ignore[call-arg]
    result = initialise(settings)
    assert result.token is not None
    assert migrate.head_revision() == "0100"
    app = create_app(settings, domains=domains)  # the schema check accepts it
    runtime = app.state.runtime
    try:
        assert migrate.current_revision(runtime.database) == "0100"
        with runtime.database.transaction() as session:
            session.add(service.Note(name="first", text="hello"))
        # The periodic task: declared, listed and run by the one scheduler.
        assert "notes.sweep" in [t.name for t in app.state.tasks]
        assert "notes.sweep" in [t.name for t in periodic_tasks(settings, domains)]
        service.SWEPT.clear()
        headers = {"Authorization": f"Bearer {result.token.token}"}
        with TestClient(app) as http:
            # The route, served as a hot route by the very endpoint FastAPI declares.
            path = f"{API_PREFIX}/notes/first"
            assert any(r.path == path.replace("first", "{name}") for r in _hot(app))
            answer = http.get(path, headers=headers)
            assert answer.status_code == 200, answer.text
            assert answer.json() == {"name": "first", "text": "hello"}
            missing = http.get(f"{API_PREFIX}/notes/none", headers=headers)
            assert missing.status_code == 404
            assert missing.headers["content-type"] == "application/problem+json"
            assert http.get(path).status_code == 401
            assert "/api/v1/notes/{name}" in http.get(f"{API_PREFIX}/openapi.json").json()["paths"]
            deadline = time.monotonic() + 20
            while not service.SWEPT and time.monotonic() < deadline:
                time.sleep(0.05)
            assert service.SWEPT, "the sample domain's periodic task never ran"
    finally:
        runtime.close()
    # The CLI command: a group of the ghaf command.
    cli = build_cli(domains)
    ran = CliRunner().invoke(cli, ["notes", "hello", "first"])
    assert ran.exit_code == 0, ran.output
    assert "hello, note first" in ran.output
    # Without the line in the list, none of it exists.
    assert CliRunner().invoke(build_cli(), ["notes", "hello", "x"]).exit_code != 0


_NOTES_REVISION = '''"""sample notes"""
import sqlalchemy as sa
from alembic import op

revision = "0100"
down_revision = "{down}"
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.create_table(
        "sample_notes",
        sa.Column("name", sa.String(64), primary_key=True),
        sa.Column("text", sa.Text(), nullable=False),
    )


def downgrade() -> None:
    op.drop_table("sample_notes")
'''


def _hot(app: object) -> list[object]:
    """The hot routes the app's middleware stack was built with."""
    from ghaf.server.hot_routes import HotRoutes

    for middleware in app.user_middleware:  # type: ignore[attr-defined]
        if middleware.cls is HotRoutes:
            return list(middleware.kwargs["routes"])
    return []


def test_hot_routes_are_the_declared_endpoints() -> None:
    """Each hot path has one handler: the FastAPI endpoint of the same path."""
    from ghaf.projects import api as projects_api
    from ghaf.registry import api as registry_api

    hot = {e for d in DOMAINS for e in d.hot_routes}
    assert hot == {projects_api.get_project, registry_api.get_version}
    assert not hasattr(projects_api, "serve_project")
    assert not hasattr(registry_api, "resolve_version")


def test_imports_run_one_way() -> None:
    """import-linter's contracts (pyproject.toml): server and cli on top, then the
    domains, then security/projects/storage, then core."""
    lint = shutil.which("lint-imports", path=str(Path(sys.executable).parent))
    if lint is None:
        pytest.skip("import-linter is not installed (pip install -e '.[test]')")
    done = subprocess.run([lint], cwd=ROOT, capture_output=True, text=True, timeout=300)
    assert done.returncode == 0, done.stdout[-4000:] + done.stderr[-2000:]
