"""How much do authentication, authorisation and audit cost a request?

Runs, in one go on this machine:
  1. an authenticated ``GET /api/v1/projects/{name}`` on ``ghaf server`` (one uvicorn
     worker, SQLite), and a bare FastAPI endpoint returning the same JSON under the same
     uvicorn settings, both driven by the same load generator (wrk if installed, else a
     small Python keep-alive client) at 16 connections;
  2. sequential authenticated calls over one kept-alive connection (the per-call floor);
  3. the server's start-up time to healthy and its idle RSS.

Prints a table and, last, one JSON line (see DESIGN.md "Benchmarks").
Usage: python bench/api_overhead.py [--duration 10] [--connections 16] [--quick]
"""

from __future__ import annotations

import argparse
import http.client
import json
import os
import re
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

from _load import generator as load_generator
from _load import load
from _report import case, print_report

from ghaf.client import Client
from ghaf.core.settings import Settings
from ghaf.server.install import initialise
from ghaf.server.process import ServerProcess, free_port

BARE_APP = """
from fastapi import FastAPI
app = FastAPI()
PAYLOAD = json.loads(PAYLOAD_JSON)

@app.get("/api/v1/projects/{name}")
async def get_project(name: str) -> dict:
    return PAYLOAD
"""


def _rss_mb(pid: int) -> float:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1]) / 1024
    return float("nan")


def _children_rss_mb(pid: int) -> float:
    total = _rss_mb(pid)
    for child in Path("/proc").glob("[0-9]*"):
        try:
            if f"PPid:\t{pid}\n" in (child / "status").read_text():
                total += _rss_mb(int(child.name))
        except OSError:
            continue
    return total


def _sequential_ms(url: str, token: str, calls: int) -> float:
    host, port, path = re.match(r"http://([^:/]+):(\d+)(/.*)", url).groups()  # type: ignore[union-attr]
    conn = http.client.HTTPConnection(host, int(port))
    headers = {"Authorization": f"Bearer {token}"}
    for _ in range(20):  # warm up
        conn.request("GET", path, headers=headers)
        conn.getresponse().read()
    samples = []
    for _ in range(calls):
        started = time.perf_counter()
        conn.request("GET", path, headers=headers)
        response = conn.getresponse()
        response.read()
        assert response.status == 200
        samples.append((time.perf_counter() - started) * 1000)
    conn.close()
    return statistics.mean(samples)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--duration", type=float, default=10.0)
    parser.add_argument("--connections", type=int, default=16)
    parser.add_argument("--calls", type=int, default=2000)
    parser.add_argument("--quick", action="store_true", help="tiny run for CI smoke tests")
    args = parser.parse_args()
    if args.quick:
        args.duration, args.calls = 2.0, 100
    generator = load_generator()

    with tempfile.TemporaryDirectory() as tmp:
        home = Path(tmp) / "home"
        env = {"GHAF_HOME": str(home), "GHAF_DATABASE_URL": "", "GHAF_LOG_LEVEL": "warning"}
        token = initialise(Settings(home=home, database_url="", master_key=None)).token
        assert token is not None
        server = ServerProcess(env=env, log_path=Path(tmp) / "server.log").start()
        try:
            startup_s = server.started_in or float("nan")
            time.sleep(1.0)
            idle_rss = _children_rss_mb(server.process.pid)  # type: ignore[union-attr]
            with Client(url=server.url, token=token.token) as client:
                project = client.projects.create("bench")
                payload = client.request("GET", "/api/v1/projects/bench").json()
            url = f"{server.url}/api/v1/projects/bench"
            load(url, token.token, args.connections, min(args.duration, 2))  # warm up
            ghaf_rps, _, ghaf_p99 = load(url, token.token, args.connections, args.duration)
            sequential = _sequential_ms(url, token.token, args.calls)
        finally:
            server.stop()

        bare_port = free_port()
        app_dir = Path(tmp) / "bare"
        app_dir.mkdir()
        (app_dir / "bare_app.py").write_text(
            f"import json\nPAYLOAD_JSON = {json.dumps(json.dumps(payload))}\n" + BARE_APP
        )
        bare = subprocess.Popen(
            [
                sys.executable,
                "-m",
                "uvicorn",
                "bare_app:app",
                "--app-dir",
                str(app_dir),
                "--port",
                str(bare_port),
                "--log-level",
                "warning",
                "--no-access-log",
            ],
            env={**os.environ},
        )
        try:
            bare_url = f"http://127.0.0.1:{bare_port}/api/v1/projects/bench"
            deadline = time.time() + 20
            while True:
                try:
                    http.client.HTTPConnection("127.0.0.1", bare_port).request("GET", "/")
                    break
                except OSError:
                    if time.time() > deadline:
                        raise
                    time.sleep(0.05)
            load(bare_url, None, args.connections, min(args.duration, 2))
            bare_rps, _, bare_p99 = load(bare_url, None, args.connections, args.duration)
        finally:
            bare.terminate()
            bare.wait()
    assert project.name == "bench"

    ratio = ghaf_rps / bare_rps
    cases: list[dict[str, Any]] = [
        case(
            f"authenticated GET project, {args.connections} conns",
            "req/s",
            "bare FastAPI",
            bare_rps,
            ghaf_rps,
            ratio,
            ">= 0.40 of bare",
            ratio >= 0.40,
        ),
        case(
            f"p99 latency, {args.connections} conns",
            "ms",
            "bare FastAPI",
            bare_p99,
            ghaf_p99,
            ghaf_p99 / bare_p99,
            "< 15 ms",
            ghaf_p99 < 15,
            digits=2,
        ),
        case(
            "sequential call, kept-alive connection",
            "ms/call",
            "MLflow 3.17 (measured, issue #2)",
            44.0,
            sequential,
            sequential / 44.0,
            "< 2 ms",
            sequential < 2,
            digits=3,
        ),
        case(
            "start-up to healthy",
            "s",
            "MLflow 3.17 (measured, issue #2)",
            19.0,
            startup_s,
            startup_s / 19.0,
            "< 3 s",
            startup_s < 3,
            digits=2,
        ),
        case(
            "idle RSS",
            "MB",
            "MLflow 3.17 (measured, issue #2)",
            2600.0,
            idle_rss,
            idle_rss / 2600.0,
            "< 300 MB",
            idle_rss < 300,
        ),
    ]
    print_report(
        "api_overhead",
        cases,
        note=f"load generator: {generator}; {args.duration:.0f}s per run; one uvicorn worker",
    )


if __name__ == "__main__":
    main()
