"""MLflow as a peer: its tracking server from `.bench/mlflow`, and the driver
(bench/_mlflow_driver.py) that talks to it with MLflow's own client."""

from __future__ import annotations

import json
import subprocess
import time
from pathlib import Path
from typing import Any

import httpx
from _peers import peer_venv

from ghaf.server.process import free_port

MLFLOW_VENV = peer_venv("mlflow")
MLFLOW_PYTHON = MLFLOW_VENV / "bin" / "python"
DRIVER = Path(__file__).with_name("_mlflow_driver.py")


def mlflow(**command: Any) -> dict[str, Any]:
    done = subprocess.run(
        [str(MLFLOW_PYTHON), str(DRIVER), json.dumps(command)],
        capture_output=True,
        text=True,
        check=False,
    )
    if done.returncode != 0:
        raise RuntimeError(f"MLflow driver failed: {done.stderr[-2000:]}")
    result: dict[str, Any] = json.loads(done.stdout.strip().splitlines()[-1])
    return result


class MlflowServer:
    def __init__(self, tmp: Path) -> None:
        self.port = free_port()
        self.url = f"http://127.0.0.1:{self.port}"
        self.db_uri = f"sqlite:///{tmp / 'mlflow.db'}"
        self.log = (tmp / "mlflow.log").open("wb")
        self.process = subprocess.Popen(
            [
                str(MLFLOW_VENV / "bin" / "mlflow"),
                "server",
                "--backend-store-uri", self.db_uri,
                "--artifacts-destination", str(tmp / "mlflow-artifacts"),
                "--host", "127.0.0.1",
                "--port", str(self.port),
            ],
            stdout=self.log,
            stderr=subprocess.STDOUT,
        )  # fmt: skip
        deadline = time.monotonic() + 180
        while time.monotonic() < deadline:
            try:
                if httpx.get(self.url + "/health", timeout=2).status_code == 200:
                    return
            except httpx.HTTPError:
                pass
            if self.process.poll() is not None:
                break
            time.sleep(0.5)
        raise RuntimeError(f"the MLflow server did not start; see {self.log.name}")

    def stop(self) -> None:
        self.process.terminate()
        self.process.wait(timeout=30)
        self.log.close()
