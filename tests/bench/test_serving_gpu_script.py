"""bench/serving_gpu.sh, the GPU check: a tiny CPU-only run keeps the script working on
machines without a GPU (its numbers are not checked), and without a CUDA provider it
says it was not run instead of reporting CPU figures as GPU ones."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

SCRIPT = Path(__file__).parents[2] / "bench" / "serving_gpu.sh"
pytestmark = pytest.mark.embedded  # no database: once per suite, not again on PostgreSQL


def _run(*arguments: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        ["bash", str(SCRIPT), *arguments],
        env={**os.environ, "PYTHON": sys.executable},
        capture_output=True,
        text=True,
        timeout=240,
        check=False,
    )


@pytest.mark.timeout(300)
def test_a_cpu_only_quick_run_reports_served_and_in_process_rows() -> None:
    result = _run("--quick", "--cpu-only")
    assert result.returncode == 0, result.stderr[-2000:]
    summary = json.loads(result.stdout.strip().splitlines()[-1])
    assert summary["bench"] == "serving_gpu"
    assert [c["unit"] for c in summary["cases"]] == ["rows/s", "rows/s"]
    for row in summary["cases"]:
        assert row["peer"] == "CPUExecutionProvider" and row["peer_value"] > 0


def test_without_a_cuda_provider_it_is_not_run() -> None:
    import onnxruntime as ort

    if "CUDAExecutionProvider" in ort.get_available_providers():
        pytest.skip("this machine has CUDA")
    result = _run("--quick")
    assert result.returncode == 3, result.stdout + result.stderr
    assert "not run" in result.stdout
    assert json.loads(result.stdout.strip().splitlines()[-1])["cases"] == []
