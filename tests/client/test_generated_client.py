"""A client generated from the live OpenAPI document (openapi-python-client, offline) works:
it creates a project, logs a run and reads it back, with nothing written by hand."""

from __future__ import annotations

import importlib
import json
import os
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path
from types import ModuleType
from typing import Any

import httpx
import pytest

from ghaf.server.app import API_PREFIX
from ghaf.tracking.batches import MEDIA_TYPE as ARROW
from tests.conftest import Platform, unique

PACKAGE = "ghaf_generated_client"
# Pack bodies and answers are plain bytes to the generator (it knows no such type).
BYTES = {"application/x-ghaf-pack": "application/octet-stream"}
# What it leaves out, and why that is fine: the JSON-lines export is a stream, not one
# value; the log route's Arrow body is the SDK's form, and the generated function sends
# the JSON form instead (an override to bytes would hit a generator bug: two body types).
LEFT_OUT = ("application/x-ndjson", ARROW)


# The generator pins typer and httpx below what ghaf installs, so it lives in a tool venv
# of its own (`make .venv-tools/.installed`, part of `make test`), never in ghaf's.
TOOLS_PYTHON = Path(__file__).resolve().parents[2] / ".venv-tools" / "bin" / "python"
_GENERATE = """
import json, sys
from pathlib import Path
from openapi_python_client import generate
from openapi_python_client.config import Config, ConfigFile, MetaType

spec, out, package, overrides = sys.argv[1:]
config = Config.from_sources(
    ConfigFile(
        post_hooks=[],
        package_name_override=package,
        content_type_overrides=json.loads(overrides),
    ),
    MetaType.NONE,  # just the package: no pyproject, nothing to install
    Path(spec),  # a file: the generator fetches nothing
    "utf-8",
    True,
    Path(out),
)
print(json.dumps([{"header": p.header, "detail": p.detail} for p in generate(config=config)]))
"""


class _Problem:
    def __init__(self, header: str, detail: str | None) -> None:
        self.header, self.detail = header, detail


def _generator_python() -> Path:
    if not TOOLS_PYTHON.exists():
        message = f"{TOOLS_PYTHON} is missing: run `make .venv-tools/.installed`"
        if os.environ.get("CI") == "true":
            pytest.fail(message)
        pytest.skip(message)
    return TOOLS_PYTHON


@pytest.fixture(scope="module")
def generated(
    platform: Platform, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[tuple[ModuleType, list[Any]]]:
    root = tmp_path_factory.mktemp("generated")
    spec = root / "openapi.json"
    spec.write_text(json.dumps(httpx.get(f"{platform.url}{API_PREFIX}/openapi.json").json()))
    result = subprocess.run(
        [
            str(_generator_python()),
            "-c",
            _GENERATE,
            str(spec),
            str(root / PACKAGE),
            PACKAGE,
            json.dumps(BYTES),
        ],
        capture_output=True,
        text=True,
        timeout=300,
        check=False,
    )
    assert result.returncode == 0, result.stderr
    problems = [_Problem(**p) for p in json.loads(result.stdout.splitlines()[-1])]
    sys.path.insert(0, str(root))
    try:
        yield importlib.import_module(PACKAGE), problems
    finally:
        sys.path.remove(str(root))
        for name in [m for m in sys.modules if m == PACKAGE or m.startswith(PACKAGE + ".")]:
            del sys.modules[name]


def test_the_generator_understands_the_whole_document(
    generated: tuple[ModuleType, list[Any]],
) -> None:
    _, problems = generated
    unexpected = [p for p in problems if not any(m in f"{p.header} {p.detail}" for m in LEFT_OUT)]
    assert [(p.header, p.detail) for p in unexpected] == []


def test_a_generated_client_creates_a_project_logs_a_run_and_reads_it_back(
    platform: Platform, generated: tuple[ModuleType, list[Any]]
) -> None:
    package, _ = generated

    def module(name: str) -> Any:
        return importlib.import_module(f"{PACKAGE}.{name}")

    models = module("models")
    client = module("client").AuthenticatedClient(
        base_url=platform.url, token=platform.admin_token, raise_on_unexpected_status=True
    )
    name = unique("p")
    created = module("api.projects.create_project").sync(
        client=client, body=models.ProjectCreate(name=name)
    )
    assert isinstance(created, models.ProjectOut) and created.name == name

    run = module("api.tracking.create_run").sync(
        name, "generated", client=client, body=models.RunCreate()
    )
    assert isinstance(run, models.RunOut), run
    batch = models.LogRequest.from_dict(
        {
            "seq": 0,
            "params": {"lr": 0.1},
            "metrics": {
                "key": ["loss", "loss"],
                "value": [0.5, 0.25],
                "step": [0, 1],
                "timestamp": [1_700_000_000_000, 1_700_000_001_000],
            },
        }
    )
    logged = module("api.tracking.log_batch").sync(name, run.id, client=client, body=batch)
    assert isinstance(logged, models.LogResult) and logged.points == 2 and logged.applied

    back = module("api.tracking.get_run").sync(name, run.id, client=client)
    assert isinstance(back, models.RunOut) and back.params.to_dict() == {
        "lr": "0.1"
    }  # params are text
    history = module("api.tracking.metric_history").sync(name, run.id, client=client)
    assert isinstance(history, models.MetricHistory)
    assert (history.key, history.step, history.value) == (["loss", "loss"], [0, 1], [0.5, 0.25])

    # Errors come back as the documented Problem, typed.
    missing = module("api.projects.get_project").sync(unique("missing"), client=client)
    assert isinstance(missing, models.Problem)
    assert missing.status == 404 and missing.type_ == "urn:ghaf:problem:not-found"
    anonymous = module("client").Client(base_url=platform.url, raise_on_unexpected_status=True)
    refused = module("api.projects.list_projects").sync(client=anonymous)
    assert isinstance(refused, models.Problem) and refused.status == 401
    assert Path(package.__file__).parent.name == PACKAGE
