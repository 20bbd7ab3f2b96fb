"""``import ghaf`` and ``ghaf --help`` stay quick: they import no heavy library.

Wall time on a shared machine is noisy, so what is asserted is *which* modules load
(``python -X importtime``, in a fresh interpreter), plus a generous wall-time bound
that only a regression of several times would cross. The heavy libraries are imported
where they are used: pyarrow when a batch is encoded, numpy for a model sample,
SQLAlchemy and FastAPI by the server, Rich and httpx when a command runs.
"""

from __future__ import annotations

import os
import subprocess
import sys
import time

import pytest

HEAVY = (
    "pyarrow",
    "numpy",
    "pandas",
    "sklearn",
    "scipy",
    "onnx",
    "onnxruntime",
    "sqlalchemy",
    "fastapi",
    "starlette",
    "uvicorn",
    "alembic",
    "duckdb",
    "cryptography",
    "pydantic_settings",
)
# Not needed to print help either: the SDK's HTTP client, Rich, Pydantic.
NOT_FOR_HELP = ("httpx", "rich", "pydantic")


def _imported(code: str, *, bytecode: bool = True) -> tuple[set[str], float]:
    env = {k: v for k, v in os.environ.items() if k != "PYTHONDONTWRITEBYTECODE"}
    if not bytecode:
        env["PYTHONDONTWRITEBYTECODE"] = "1"
    started = time.perf_counter()
    done = subprocess.run(
        [sys.executable, "-X", "importtime", "-c", code],
        capture_output=True,
        text=True,
        env=env,
        timeout=60,
        check=False,
    )
    elapsed = time.perf_counter() - started
    assert done.returncode == 0, done.stderr[-2000:]
    modules = set()
    for line in done.stderr.splitlines():
        if line.startswith("import time:") and "|" in line:
            modules.add(line.rsplit("|", 1)[1].strip())
    return modules, elapsed


def _top_level(modules: set[str]) -> set[str]:
    return {m.split(".", 1)[0] for m in modules}


HELP = """
import sys
sys.argv = ["ghaf", "--help"]
from ghaf.cli.main import main
try:
    main()
except SystemExit as e:
    assert e.code in (0, None), e.code
"""


@pytest.mark.parametrize("bytecode", [True, False], ids=["pyc", "no-pyc"])
def test_import_ghaf_loads_nothing_heavy(bytecode: bool) -> None:
    modules, elapsed = _imported("import ghaf; ghaf.__version__", bytecode=bytecode)
    loaded = _top_level(modules)
    assert loaded.isdisjoint(HEAVY + NOT_FOR_HELP), sorted(loaded & set(HEAVY + NOT_FOR_HELP))
    assert elapsed < 5, f"import ghaf took {elapsed:.2f}s"


@pytest.mark.parametrize("bytecode", [True, False], ids=["pyc", "no-pyc"])
def test_ghaf_help_loads_nothing_heavy(bytecode: bool) -> None:
    modules, elapsed = _imported(HELP, bytecode=bytecode)
    loaded = _top_level(modules)
    assert loaded.isdisjoint(HEAVY + NOT_FOR_HELP), sorted(loaded & set(HEAVY + NOT_FOR_HELP))
    # No domain, server or SDK module either: the top level comes from ghaf/cli/index.py.
    ours = {m for m in modules if m.startswith("ghaf.")}
    assert ours <= {"ghaf.cli", "ghaf.cli.main", "ghaf.cli.index", "ghaf.core", "ghaf.core.version"}
    assert elapsed < 5, f"ghaf --help took {elapsed:.2f}s"


def test_the_sdk_client_needs_no_server_libraries() -> None:
    """``ghaf.Client`` (and the module shortcuts) load without SQLAlchemy, FastAPI,
    pyarrow or numpy: a notebook that only reads runs pays for none of them."""
    modules, _ = _imported("import ghaf; ghaf.Client; ghaf.runs; ghaf.models; ghaf.GhafError")
    loaded = _top_level(modules)
    assert loaded.isdisjoint(HEAVY), sorted(loaded & set(HEAVY))


def test_lazy_exports_are_the_real_objects() -> None:
    import ghaf
    from ghaf.client.active_run import start_run
    from ghaf.client.client import Client

    assert ghaf.Client is Client and ghaf.start_run is start_run
    assert set(ghaf.__all__) <= set(dir(ghaf))
    with pytest.raises(AttributeError, match="no attribute 'nope'"):
        ghaf.nope
