"""Closed-loop HTTP load at N connections: wrk when installed (``apt-get install wrk``),
else a small Python keep-alive client. Returns (requests per second, p50 ms, p99 ms).
GETs of one URL (``load_wrk``/``load_python``), or POSTs of one :class:`Target`'s body
(``measure``, ``unloaded_ms``)."""

from __future__ import annotations

import http.client
import re
import shutil
import statistics
import subprocess
import threading
import time
from dataclasses import dataclass
from pathlib import Path

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


WRK_SCRIPT = """
wrk.method = "POST"
local f = io.open("{body}", "rb")
wrk.body = f:read("*a")
f:close()
{headers}
"""


@dataclass
class Target:
    """One endpoint: where, which body, which headers."""

    port: int
    path: str
    body: bytes
    headers: dict[str, str]

    def post(self, conn: http.client.HTTPConnection) -> tuple[int, bytes]:
        conn.request("POST", self.path, body=self.body, headers=self.headers)
        response = conn.getresponse()
        return response.status, response.read()


def check(target: Target) -> bytes:
    conn = http.client.HTTPConnection("127.0.0.1", target.port, timeout=30)
    try:
        status, answer = target.post(conn)
    finally:
        conn.close()
    if status != 200:
        raise RuntimeError(f"{target.path} answered {status}: {answer[:300]!r}")
    return answer


def unloaded_ms(target: Target, calls: int) -> float:
    """p50 of one request at a time over one kept-alive connection."""
    conn = http.client.HTTPConnection("127.0.0.1", target.port, timeout=30)
    try:
        for _ in range(max(10, calls // 10)):  # warm up
            target.post(conn)
        samples = []
        for _ in range(calls):
            started = time.perf_counter()
            status, answer = target.post(conn)
            samples.append((time.perf_counter() - started) * 1000)
            if status != 200:
                raise RuntimeError(f"{target.path} answered {status}: {answer[:300]!r}")
    finally:
        conn.close()
    return statistics.median(samples)


def python_load(target: Target, connections: int, duration: float) -> tuple[float, float, float]:
    """The same closed loop from Python threads, where wrk is missing (--quick only: it
    measures the client as much as the server)."""
    latencies: list[float] = []
    failures: list[str] = []
    stop = time.perf_counter() + duration

    def worker() -> None:
        conn = http.client.HTTPConnection("127.0.0.1", target.port, timeout=30)
        mine = []
        while time.perf_counter() < stop:
            started = time.perf_counter()
            status, answer = target.post(conn)
            mine.append((time.perf_counter() - started) * 1000)
            if status != 200:
                failures.append(f"{status}: {answer[:200]!r}")
                break
        conn.close()
        latencies.extend(mine)

    threads = [threading.Thread(target=worker) for _ in range(connections)]
    begun = time.perf_counter()
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    if failures:
        raise RuntimeError(f"the server answered errors under load: {failures[0]}")
    latencies.sort()
    count = len(latencies)
    return (
        count / (time.perf_counter() - begun),
        latencies[count // 2],
        latencies[-max(1, count // 100)],
    )


def wrk(
    target: Target, folder: Path, connections: int, duration: float
) -> tuple[float, float, float]:
    """(requests/s, p50 ms, p99 ms) under closed-loop load; any non-2xx answer fails."""
    if not shutil.which("wrk"):
        return python_load(target, connections, duration)
    body = folder / f"body-{target.port}-{len(target.body)}.bin"
    body.write_bytes(target.body)
    headers = "\n".join(f'wrk.headers["{k}"] = "{v}"' for k, v in target.headers.items())
    script = folder / f"post-{target.port}.lua"
    script.write_text(WRK_SCRIPT.format(body=body, headers=headers))
    url = f"http://127.0.0.1:{target.port}{target.path}"
    cmd = ["wrk", "-t1", f"-c{connections}", f"-d{max(1, round(duration))}s"]
    out = subprocess.run(
        [*cmd, "--latency", "-s", str(script), url], capture_output=True, text=True, check=True
    ).stdout
    return parse_wrk(out)


def measure(
    target: Target, folder: Path, connections: int, duration: float
) -> tuple[float, float, float]:
    check(target)
    wrk(target, folder, connections, min(2.0, duration / 2))  # warm up
    return wrk(target, folder, connections, duration)
