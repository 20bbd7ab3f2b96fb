"""Model registry: resolving ``name@alias`` plus the version's metadata over REST.

One `GET` per request, at 16 connections (closed loop: each connection sends its next
request when the previous answer arrives), on this machine, both servers on SQLite:
  ghaf:   GET /api/v1/projects/bench/models/churn/versions/@champion  (token auth, RBAC)
  MLflow: GET /api/2.0/mlflow/registered-models/alias?name=churn&alias=champion
          (`mlflow server` from `.bench/mlflow`, default settings, no auth)
Each registry holds one model with three versions and `champion` on version 2; the script
checks that both answer version 2. Goal: ghaf's p99 < 5 ms.
Prints a table and, last, one JSON line (DESIGN.md "Benchmarks").
Usage: python bench/registry.py [--duration 10] [--connections 16] [--quick]
       (--quick: 2 s runs, one version, and MLflow only if .bench/mlflow already exists)
"""

from __future__ import annotations

import argparse
import os
import tempfile
import time
from pathlib import Path

import httpx
import numpy as np
from _load import generator, load
from _mlflow import MlflowServer, mlflow
from _peers import ensure_peer
from _report import case, print_report

from ghaf.client import Client
from ghaf.core.settings import Settings
from ghaf.server.install import initialise
from ghaf.server.process import ServerProcess

NAN = float("nan")


def _skops_model(folder: Path) -> tuple[Path, np.ndarray]:
    import skops.io as sio
    from sklearn.linear_model import LogisticRegression

    X = np.random.default_rng(0).normal(size=(200, 4))
    path = folder / "model.skops"
    sio.dump(LogisticRegression().fit(X, X[:, 0] > 0), path)
    return path, X[:5]


def ghaf_side(tmp: Path, versions: int, connections: int, duration: float) -> dict[str, float]:
    home = tmp / "ghaf-home"
    token = initialise(Settings(home=home, database_url="", master_key=None)).token
    assert token is not None
    env = {"GHAF_HOME": str(home), "GHAF_DATABASE_URL": "", "GHAF_LOG_LEVEL": "warning"}
    path, sample = _skops_model(tmp)
    with (
        ServerProcess(env=env) as server,
        Client(url=server.url, token=token.token, timeout=120) as client,
    ):
        client.projects.create("bench")
        for _ in range(versions):
            client.models.register("bench", "churn", path=path, sample=sample)
        champion = min(2, versions)
        client.models.set_alias("bench", "churn", "champion", champion)
        url = f"{server.url}/api/v1/projects/bench/models/churn/versions/@champion"
        answer = httpx.get(url, headers={"Authorization": f"Bearer {token.token}"}).json()
        assert answer["version"] == champion and answer["inputs"], answer
        load(url, token.token, connections, min(duration, 2))  # warm up
        rps, p50, p99 = load(url, token.token, connections, duration)
    return {"rps": rps, "p50": p50, "p99": p99, "version": answer["version"]}


def mlflow_side(tmp: Path, versions: int, connections: int, duration: float) -> dict[str, float]:
    server = MlflowServer(tmp)
    try:
        champion = mlflow(kind="registry", url=server.url, versions=versions)["champion"]
        url = f"{server.url}/api/2.0/mlflow/registered-models/alias?name=churn&alias=champion"
        answer = httpx.get(url).json()["model_version"]
        assert int(answer["version"]) == champion, answer
        load(url, None, connections, min(duration, 2))
        rps, p50, p99 = load(url, None, connections, duration)
    finally:
        server.stop()
    return {"rps": rps, "p50": p50, "p99": p99, "version": int(answer["version"])}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--duration", type=float, default=10.0)
    parser.add_argument("--connections", type=int, default=16)
    parser.add_argument("--versions", type=int, default=3)
    parser.add_argument("--quick", action="store_true", help="tiny run for CI smoke tests")
    args = parser.parse_args()
    if args.quick:
        args.duration, args.versions = 2.0, 1
    with_mlflow = ensure_peer("mlflow", install=not args.quick)
    peer = "MLflow" if with_mlflow else "MLflow (not installed)"
    with tempfile.TemporaryDirectory() as tmp_name:
        tmp = Path(tmp_name)
        os.environ["GHAF_CACHE"] = str(tmp / "cache")
        g = ghaf_side(tmp, args.versions, args.connections, args.duration)
        time.sleep(1)
        m = (
            mlflow_side(tmp, args.versions, args.connections, args.duration)
            if with_mlflow
            else {"rps": NAN, "p50": NAN, "p99": NAN, "version": g["version"]}
        )
    assert m["version"] == g["version"], "ghaf and MLflow resolved different versions"
    met = g["p99"] < 5
    conns = args.connections
    cases = [
        case(f"name@alias + metadata, p99, {conns} conns", "ms", peer, m["p99"], g["p99"],
             m["p99"] / g["p99"], "ghaf < 5 ms", met, digits=2),
        case(f"name@alias + metadata, p50, {conns} conns", "ms", peer, m["p50"], g["p50"],
             m["p50"] / g["p50"], "-", None, digits=2),
        case(f"name@alias + metadata, {conns} conns", "req/s", peer, m["rps"], g["rps"],
             g["rps"] / m["rps"], "-", None, digits=0),
    ]  # fmt: skip
    print_report(
        "registry",
        cases,
        note=(
            "ratio: how many times better ghaf is (peer/ghaf for latency, ghaf/peer for "
            f"rates); load generator: {generator()}, {args.duration:.0f} s per run; both "
            f"servers on SQLite on this machine, {os.cpu_count()} CPUs; ghaf authenticates "
            "and authorises every request, MLflow has no auth"
        ),
    )


if __name__ == "__main__":
    main()
