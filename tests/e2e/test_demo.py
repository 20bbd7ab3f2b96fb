"""`ghaf demo` from a clean home, as a user runs it (embedded defaults)."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest


@pytest.mark.embedded
# Two demo runs, each with its own 240 s limit below (a run takes about a minute alone,
# and much longer beside the rest of the suite on two cores): the limits catch a hang,
# not a slow run.
@pytest.mark.timeout(540)
def test_demo_runs_twice(tmp_path: Path) -> None:
    env = {k: v for k, v in os.environ.items() if not k.startswith("GHAF_")}
    env["GHAF_HOME"] = str(tmp_path / "home")
    for _ in range(2):  # re-runnable on the same home
        result = subprocess.run(
            [sys.executable, "-m", "ghaf", "demo"],
            env=env,
            capture_output=True,
            text=True,
            timeout=240,
            check=False,
        )
        assert result.returncode == 0, result.stdout + result.stderr
    out = result.stdout
    assert "refused (403)" in out and "answers 404" in out
    assert "intact:" in out and "exited with code 0" in out
    assert "none containing the plaintext" in out and "residency:" in out
    assert "linked, not stored again" in out and "ok=True" in out
    assert "changed 1 of 20 files" in out and "downloaded and verified" in out
    assert "a joblib pickle refused" in out and "alice cannot approve" in out
    assert "all 7 gates passed" in out and "credit-scorer@champion -> v" in out
    assert "/v2/models/credit-scorer/infer (3 rows" in out and "POST /predict" in out
    assert "both answers match a direct call" in out and "without a token: 401" in out
    assert "served with no platform" in out and "--bundle ./credit" in out
    # The demo itself raises if a customer ever moved variants (stickiness).
    assert "credit-api revision" in out and "x-customer" in out and "0 unknown" in out
    assert "A/B test of credit-api" in out
    assert "the rollout completed through steps [1, 2]" in out and "state          completed" in out
    assert "the shadow answered" in out and "deployments/scoring/shadow/mirror/" in out
    assert (tmp_path / "home" / "ghaf.db").exists()
    assert (tmp_path / "home" / "master.key").exists()  # the keyring is in the database
    assert not (tmp_path / "home" / "keyring.json").exists()
