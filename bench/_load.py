"""Closed-loop HTTP load at N connections: wrk when installed (``apt-get install wrk``),
else a small Python keep-alive client. Returns (requests per second, p50 ms, p99 ms)."""

from __future__ import annotations

import http.client
import re
import shutil
import subprocess
import threading
import time

_UNITS = {"us": 0.001, "ms": 1.0, "s": 1000.0}


def _percentile(output: str, label: str) -> float:
    match = re.search(rf"{label}%\s+([\d.]+)(us|ms|s)\b", output)
    assert match, output
    return float(match.group(1)) * _UNITS[match.group(2)]


def parse_wrk(output: str) -> tuple[float, float, float]:
    rps = float(re.search(r"Requests/sec:\s+([\d.]+)", output).group(1))  # type: ignore[union-attr]
    if "Non-2xx or 3xx responses" in output:
        raise RuntimeError(f"the server answered errors under load:\n{output}")
    return rps, _percentile(output, "50"), _percentile(output, "99")


def load_wrk(
    url: str, token: str | None, connections: int, duration: float
) -> tuple[float, float, float]:
    cmd = ["wrk", "-t2", f"-c{connections}", f"-d{duration:.0f}s", "--latency", url]
    if token:
        cmd[1:1] = ["-H", f"Authorization: Bearer {token}"]
    out = subprocess.run(cmd, capture_output=True, text=True, check=True).stdout
    return parse_wrk(out)


def load_python(
    url: str, token: str | None, connections: int, duration: float
) -> tuple[float, float, float]:
    host, port, path = re.match(r"http://([^:/]+):(\d+)(/.*)", url).groups()  # type: ignore[union-attr]
    headers = {"Authorization": f"Bearer {token}"} if token else {}
    latencies: list[float] = []
    lock = threading.Lock()
    stop = time.perf_counter() + duration

    def worker() -> None:
        conn = http.client.HTTPConnection(host, int(port))
        mine = []
        while time.perf_counter() < stop:
            started = time.perf_counter()
            conn.request("GET", path, headers=headers)
            response = conn.getresponse()
            response.read()
            assert response.status == 200, response.status
            mine.append((time.perf_counter() - started) * 1000)
        conn.close()
        with lock:
            latencies.extend(mine)

    threads = [threading.Thread(target=worker) for _ in range(connections)]
    begun = time.perf_counter()
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    elapsed = time.perf_counter() - begun
    latencies.sort()
    return (
        len(latencies) / elapsed,
        latencies[len(latencies) // 2],
        latencies[int(len(latencies) * 0.99) - 1],
    )


def generator() -> str:
    return "wrk" if shutil.which("wrk") else "python threads"


def load(
    url: str, token: str | None, connections: int, duration: float
) -> tuple[float, float, float]:
    runner = load_wrk if shutil.which("wrk") else load_python
    return runner(url, token, connections, duration)
