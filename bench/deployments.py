"""Deployments against the serving runtime served directly: the gateway's overhead, the
cold start of a replica, and the A/B sequential test's false-positive rate.

One run, on this machine, 127.0.0.1 only:
  (a) 1-row /predict requests at 32 connections (wrk; a Python client without it):
      through a deployment's gateway route, two variants of one model split 50/50 by
      weight, against the same model served directly by the runtime (``ghaf serve
      --bundle``, its invoke key). Throughput (goal: at most 10% lower) and p50 (goal:
      at most 5% higher). Shadow mirroring is not built yet: the row says so.
  (b) cold start: a new deployment's first request, held while its replica starts from
      zero replicas, until the answer; the median of ``--starts`` (goal <= 1.5 s).
  (c) A/A experiments read at every hourly look for a week (``--experiments``, 168
      looks of 100 outcomes per arm): how often each test ever declares a difference at
      alpha 0.05, the fixed-horizon z-test (the peer: what a dashboard computes) beside
      the always-valid mSPRT (goal <= alpha).
Prints a table and, last, one JSON line (DESIGN.md "Benchmarks").
Usage: python bench/deployments.py [--duration 8] [--connections 32] [--starts 3]
                                   [--experiments 10000] [--quick]
"""

from __future__ import annotations

import argparse
import json
import os
import secrets
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import httpx
import numpy as np
from _load import Target, check, measure, unloaded_ms
from _report import case, print_report

from ghaf.client import Client
from ghaf.core.settings import Settings
from ghaf.deployments.abtest import peeking_false_positive_rates
from ghaf.server.install import initialise
from ghaf.server.process import ServerProcess, free_port

PROJECT = "bench"


def build_model(folder: Path) -> tuple[Path, np.ndarray]:
    import skops.io as sio
    from sklearn.datasets import make_classification
    from sklearn.linear_model import LogisticRegression

    X, y = make_classification(n_samples=500, n_features=20, random_state=0)
    path = folder / "model.skops"
    sio.dump(LogisticRegression(max_iter=500).fit(X, y), path)
    return path, X.astype(np.float64)


def runtime_server(client: Client, folder: Path, port: int) -> tuple[subprocess.Popen[bytes], str]:
    """``ghaf serve --bundle`` of version 1 behind its own invoke key, once ready."""
    bundle = client.models.download(PROJECT, "scorer", 1, destination=folder / "b", bundle=True)
    key = secrets.token_urlsafe(32)
    process = subprocess.Popen(
        [sys.executable, "-m", "ghaf", "serve", "--bundle", str(bundle), "--port", str(port),
         "--no-prediction-log", "--threads", "1"],
        env={**os.environ, "GHAF_SERVE_INVOKE_KEY": key},
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )  # fmt: skip
    deadline = time.monotonic() + 60
    while True:
        try:
            if httpx.get(f"http://127.0.0.1:{port}/v2/health/ready").status_code == 200:
                return process, key
        except httpx.HTTPError:
            pass
        if time.monotonic() > deadline or process.poll() is not None:
            process.kill()
            raise RuntimeError("ghaf serve --bundle did not start")
        time.sleep(0.05)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--duration", type=float, default=8.0)
    parser.add_argument("--connections", type=int, default=32)
    parser.add_argument("--calls", type=int, default=500, help="unloaded calls per case")
    parser.add_argument("--starts", type=int, default=3, help="cold starts to time")
    parser.add_argument("--experiments", type=int, default=10_000)
    parser.add_argument("--quick", action="store_true", help="tiny run for CI smoke tests")
    args = parser.parse_args()
    if args.quick:
        args.duration, args.calls, args.starts, args.experiments = 1.0, 30, 1, 300
    conns, results = args.connections, {}

    with tempfile.TemporaryDirectory(prefix="ghaf-bench-deployments-") as tmp:
        folder = Path(tmp)
        model, X = build_model(folder)
        home = folder / "home"
        env = {"GHAF_HOME": str(home), "GHAF_DATABASE_URL": "", "GHAF_LOG_LEVEL": "warning"}
        token = initialise(Settings(home=home, database_url="", master_key=None)).token
        assert token is not None
        server = ServerProcess(env=env, log_path=folder / "platform.log").start()
        try:
            client = Client(url=server.url, token=token.token, timeout=120)
            client.projects.create(PROJECT)
            client.models.register(PROJECT, "scorer", path=model, sample=X[:5])
            body = json.dumps(X[:1].tolist()).encode()
            json_headers = {"Content-Type": "application/json"}

            # (b) cold starts: each a new deployment, so each first request starts one
            starts = []
            for i in range(args.starts):
                name = f"cold{i}"
                client.deployments.create(
                    PROJECT,
                    name,
                    variants=[{"name": "a", "model": "scorer", "version": 1, "weight": 100}],
                )
                started = time.perf_counter()
                client.deployments.predict(PROJECT, name, X[:1].tolist())
                starts.append(time.perf_counter() - started)
                client.deployments.delete(PROJECT, name)  # its replica stops
            results["cold_start_s"] = statistics.median(starts)

            # (a) the gateway against the runtime served directly
            client.deployments.create(
                PROJECT,
                "api",
                variants=[
                    {"name": "a", "model": "scorer", "version": 1, "weight": 50},
                    {"name": "b", "model": "scorer", "version": 1, "weight": 50},
                ],
            )
            gateway_port = int(server.url.rsplit(":", 1)[1])
            gateway = Target(
                gateway_port,
                f"/api/v1/projects/{PROJECT}/deployments/api/predict",
                body,
                {**json_headers, "Authorization": f"Bearer {token.token}"},
            )
            for variant in ("a", "b"):  # both replicas up before the clock starts
                check(Target(gateway.port, gateway.path, body,
                             {**gateway.headers, "x-ghaf-variant": variant}))  # fmt: skip
            results["gateway"] = measure(gateway, folder, conns, args.duration)
            results["gateway_unloaded"] = unloaded_ms(gateway, args.calls)
            # The same split with a shadow getting a copy of every request.
            client.deployments.update(
                PROJECT,
                "api",
                variants=[
                    {"name": "a", "model": "scorer", "version": 1, "weight": 50},
                    {"name": "b", "model": "scorer", "version": 1, "weight": 50},
                    {"name": "s", "model": "scorer", "version": 1, "shadow": True},
                ],
            )
            for variant in ("a", "b"):
                check(Target(gateway.port, gateway.path, body,
                             {**gateway.headers, "x-ghaf-variant": variant}))  # fmt: skip
            time.sleep(3.0)  # the shadow's replica starts off the callers' path
            results["gateway_shadow"] = measure(gateway, folder, conns, args.duration)
            port = free_port()
            direct_process, key = runtime_server(client, folder, port)
            try:
                direct = Target(port, "/predict", body,
                                {**json_headers, "Authorization": f"Bearer {key}"})  # fmt: skip
                if check(direct) != check(gateway):
                    raise RuntimeError("the gateway and the runtime answered differently")
                results["direct"] = measure(direct, folder, conns, args.duration)
                results["direct_unloaded"] = unloaded_ms(direct, args.calls)
            finally:
                direct_process.terminate()
                direct_process.wait()
            client.close()
        finally:
            server.stop()

    # (c) the sequential test under peeking
    rng = np.random.default_rng(0)
    fixed, sequential = peeking_false_positive_rates(
        experiments=args.experiments, looks=168, per_look=100, alpha=0.05, kind="binary", rng=rng
    )

    rps_g, p50_g, _ = results["gateway"]
    rps_d, p50_d, _ = results["direct"]
    cases = [
        case("(a) 1-row /predict at 32 connections, split 50/50", "req/s", "runtime direct",
             rps_d, rps_g, rps_g / rps_d, ">= 0.9x", rps_g / rps_d >= 0.9),
        case("(a) the same, p50", "ms", "runtime direct", p50_d, p50_g, p50_d / p50_g,
             "ghaf <= 1.05x peer", p50_g <= 1.05 * p50_d, digits=2),
        case("(a) one request at a time, p50", "ms", "runtime direct",
             results["direct_unloaded"], results["gateway_unloaded"],
             results["direct_unloaded"] / results["gateway_unloaded"], "-", None, digits=2),
        case("(a) split plus shadow mirroring, 32 connections", "req/s", "runtime direct",
             rps_d, results["gateway_shadow"][0], results["gateway_shadow"][0] / rps_d,
             ">= 0.9x", results["gateway_shadow"][0] / rps_d >= 0.9),
        case("(a) what the shadow costs the split", "req/s", "split alone",
             rps_g, results["gateway_shadow"][0], results["gateway_shadow"][0] / rps_g,
             "-", None),
        case("(b) cold start, zero replicas to the first answer", "s", "goal", 1.5,
             results["cold_start_s"], 1.5 / results["cold_start_s"], "<= 1.5 s",
             results["cold_start_s"] <= 1.5, digits=2),
        case(f"(c) A/A false positives, {args.experiments:,} experiments, 168 hourly looks",
             "rate", "fixed-horizon z-test", fixed, sequential, fixed / max(sequential, 1e-9),
             "mSPRT <= 0.05", sequential <= 0.05, digits=4),
    ]  # fmt: skip
    print_report(
        "deployments",
        cases,
        note=(
            "ratio: how many times better ghaf is (peer/ghaf for times, ghaf/peer for "
            "rates); the gateway (ghaf server) and the replicas share this machine's cores "
            "with wrk"
        ),
    )


if __name__ == "__main__":
    main()
