"""A tiny run of each bench script, so they keep working (numbers are not checked)."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest

BENCH = Path(__file__).parents[2] / "bench"


@pytest.mark.embedded
# Beside the peers (.bench/) a quick run takes about a minute on an idle 2-core machine:
# room for a loaded one, and the subprocess's own timeout goes first, with its output.
@pytest.mark.timeout(360)
@pytest.mark.parametrize(
    "script", sorted(p.name for p in BENCH.glob("*.py") if not p.name.startswith("_"))
)
def test_bench_quick(script: str) -> None:
    result = subprocess.run(
        [sys.executable, str(BENCH / script), "--quick"],
        capture_output=True,
        text=True,
        timeout=300,
        check=False,
    )
    assert result.returncode == 0, result.stderr[-2000:]
    summary = json.loads(result.stdout.strip().splitlines()[-1])
    assert summary["bench"] == script.removesuffix(".py")
    assert summary["cases"] and all("ratio" in c and "met" in c for c in summary["cases"])
