"""The checker child confines itself (ghaf/registry/confine.py): a model that gets code
execution anyway (a scanner miss, or an owner who vouched for ``builtins.*``) cannot read
the installation's secrets or other files, reach the network, or touch the server."""

from __future__ import annotations

import json
import pickle
import socket
import sqlite3
import threading
from collections.abc import Iterator
from pathlib import Path

import numpy as np
import pytest

from ghaf.core.errors import InvalidInput
from ghaf.registry import confine, sandbox

pytestmark = pytest.mark.skipif(
    confine.landlock_abi() < 6, reason="needs Landlock ABI 6+ (Linux 6.12+) to test it all"
)

# Runs inside the child, as the model's "load" (exec through a vouched builtins.exec).
PROBE = r"""
import json, os, socket, subprocess
results = {}
def attempt(name, action):
    try:
        action()
        results[name] = "succeeded"
    except Exception as exc:
        results[name] = f"{type(exc).__name__}: {exc}"
def read(path):
    return lambda: open(path, "rb").read(1)
def tcp():
    with socket.create_connection(("127.0.0.1", PORT), timeout=2) as s:
        s.sendall(b"leak")
def udp():
    socket.socket(socket.AF_INET, socket.SOCK_DGRAM).sendto(b"leak", ("127.0.0.1", PORT))
def unix(path):
    def go():
        s = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
        s.connect(path)
    return go
def write(path):
    return lambda: open(path, "wb").write(b"x")
def system(command):
    status = os.system(command)
    if status:
        raise OSError(f"exit status {status}")
for name, path in SECRETS.items():
    attempt("read " + name, read(path))
attempt("list the server's home", lambda: os.listdir(HOME))
attempt("read the repository's config", read(REPO + "/pyproject.toml"))
attempt("read /etc/passwd", read("/etc/passwd"))
attempt("read the parent's environ", read(f"/proc/{os.getppid()}/environ"))
attempt("read the parent's memory", read(f"/proc/{os.getppid()}/mem"))
attempt("read pid 1's environ", read("/proc/1/environ"))
attempt("signal the parent", lambda: os.kill(os.getppid(), 0))
attempt("tcp connect", tcp)
attempt("udp send", udp)
attempt("unix connect", unix(UNIX))
attempt("unix connect in the job folder", unix(JOB_UNIX))
attempt("write outside the job folder", write(OUTSIDE))
attempt("run a program", lambda: subprocess.run(["/bin/sh", "-c", "true"], check=True))
attempt("os.system", lambda: system("cat " + SECRETS["master key"] + " > " + OUTSIDE))
attempt("write in the job folder", write(JOB + "/own.txt"))
attempt("read the ghaf package", read(GHAF + "/__init__.py"))
attempt("import sklearn", lambda: __import__("sklearn.ensemble"))
with open(JOB + "/probe.json", "w") as out:
    json.dump(results, out)
"""


class _Exec:
    """Pickles as ``builtins.exec(code)``: what a vouched ``builtins.*`` lets through."""

    def __init__(self, code: str) -> None:
        self.code = code

    def __reduce__(self):
        return (exec, (self.code, {}))


@pytest.fixture
def listeners(tmp_path: Path) -> Iterator[dict[str, object]]:
    """A TCP port and a unix socket (PostgreSQL's kind) that record any connection."""
    tcp = socket.socket()
    tcp.bind(("127.0.0.1", 0))
    tcp.listen()
    tcp.settimeout(0.2)
    path = tmp_path / "pg.sock"
    unix = socket.socket(socket.AF_UNIX)
    unix.bind(str(path))
    unix.listen()
    unix.settimeout(0.2)
    accepted: list[str] = []
    stop = threading.Event()

    def serve() -> None:
        while not stop.is_set():
            for server, name in ((tcp, "tcp"), (unix, "unix")):
                try:
                    server.accept()[0].close()
                    accepted.append(name)
                except OSError:
                    pass

    thread = threading.Thread(target=serve, daemon=True)
    thread.start()
    yield {"port": tcp.getsockname()[1], "unix": str(path), "accepted": accepted}
    stop.set()
    thread.join(timeout=5)
    tcp.close()
    unix.close()


def _installation(root: Path) -> dict[str, str]:
    """A planted installation: master key, keyring, SQLite database, another project's
    artifact."""
    root.mkdir(parents=True)
    (root / "master.key").write_text("bWFzdGVyLWtleQ==")
    (root / "keyring.json").write_text('{"kek": "wrapped"}')
    with sqlite3.connect(root / "ghaf.db") as db:
        db.execute("create table tokens (hash text)")
    artifact = root / "artifacts" / "other-project" / "blob"
    artifact.parent.mkdir(parents=True)
    artifact.write_bytes(b"tenant data")
    return {
        "master key": str(root / "master.key"),
        "keyring": str(root / "keyring.json"),
        "database": str(root / "ghaf.db"),
        "other tenant's artifact": str(artifact),
    }


def test_a_model_running_code_cannot_reach_secrets_network_or_the_server(
    tmp_path: Path, listeners: dict[str, object], monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("GHAF_MASTER_KEY", "c2VjcmV0LWluLXRoZS1wYXJlbnQ=")
    home = tmp_path / "home"
    secrets = _installation(home)
    job = tmp_path / "job"
    job.mkdir()
    monkeypatch.setattr(sandbox, "_PROTECTED", set(sandbox._PROTECTED))
    sandbox.protect([home])
    repo = Path(__file__).resolve().parents[2]
    values = {
        "PORT": listeners["port"],
        "UNIX": listeners["unix"],
        "JOB_UNIX": str(job / "own.sock"),
        "SECRETS": secrets,
        "HOME": str(home),
        "REPO": str(repo),
        "OUTSIDE": str(tmp_path / "outside.txt"),
        "JOB": str(job),
        "GHAF": str(repo / "ghaf"),
    }
    code = "".join(f"{name} = {value!r}\n" for name, value in values.items()) + PROBE
    model = job / "model.pkl"
    model.write_bytes(pickle.dumps(_Exec(code)))
    np.savez(job / "sample.npz", X=np.zeros((2, 2)))
    with pytest.raises(InvalidInput, match="load and predict") as refused:
        # The load "succeeds" (exec returns None); predicting on None then fails.
        sandbox.run(
            {
                "action": "check",
                "format": "pickle",
                "model": str(model),
                "sample": str(job / "sample.npz"),
                "pickle_globals": ["builtins.*", "os.*", "posix.*"],
            },
            folder=job,
            timeout_s=60,
            what="load and predict",
        )
    assert (job / "probe.json").exists(), refused.value.detail
    results = json.loads((job / "probe.json").read_text())
    allowed = {"write in the job folder", "read the ghaf package", "import sklearn"}
    assert {k for k, v in results.items() if v == "succeeded"} == allowed, results
    for name in secrets:
        assert "PermissionError" in results["read " + name], results
    assert "PermissionError" in results["read the parent's environ"]
    assert "PermissionError" in results["read the parent's memory"]
    for name in ("tcp connect", "udp send", "unix connect", "unix connect in the job folder"):
        assert "Operation not permitted" in results[name], results
    assert "Operation not permitted" in results["signal the parent"]
    assert "Permission denied" in results["run a program"]
    assert results["os.system"].startswith("OSError: exit status")  # no shell to run
    assert listeners["accepted"] == []
    assert not (tmp_path / "outside.txt").exists()
    assert (job / "own.txt").read_bytes() == b"x"


def test_a_pickle_is_refused_where_the_child_cannot_confine_itself(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Fail closed: here the interpreter's own files lie in a protected path, so no
    ruleset can both run Python and keep that path out."""
    import sysconfig

    monkeypatch.setattr(sandbox, "_PROTECTED", set(sandbox._PROTECTED))
    sandbox.protect([sysconfig.get_paths()["stdlib"]])
    marker = tmp_path / "ran"
    model = tmp_path / "model.pkl"
    model.write_bytes(pickle.dumps(_Exec(f"open({str(marker)!r}, 'w')")))
    np.savez(tmp_path / "sample.npz", X=np.zeros((2, 2)))
    job = {
        "action": "check",
        "format": "pickle",
        "model": str(model),
        "sample": str(tmp_path / "sample.npz"),
        "pickle_globals": ["builtins.*"],
    }
    with pytest.raises(InvalidInput, match=r"cannot confine the model checker \(.* lies in "):
        sandbox.run(job, folder=tmp_path, timeout_s=60, what="load and predict")
    assert not marker.exists()


def test_the_filter_covers_each_architecture() -> None:
    for arch, (_audit, numbers) in confine.ARCHES.items():
        assert set(confine.DENIED) | {"clone", "clone3"} <= set(numbers), arch
        program = confine.seccomp_program(arch)
        assert program[1][3] == confine.ARCHES[arch][0]
        assert program[-1] == (confine.RET_K, 0, 0, confine.RET_ALLOW)
    assert confine.ARCHES["x86_64"][1]["socket"] == 41
    assert confine.ARCHES["aarch64"][1]["socket"] == 198


def test_a_root_holding_a_protected_path_is_granted_without_it(tmp_path: Path) -> None:
    (tmp_path / "lib" / "deep").mkdir(parents=True)
    (tmp_path / "lib" / "deep" / "secret").write_text("s")
    (tmp_path / "lib" / "deep" / "ok.py").write_text("")
    (tmp_path / "lib" / "other.py").write_text("")
    kept = confine.keep_out([str(tmp_path)], [str(tmp_path / "lib" / "deep" / "secret")])
    assert kept == sorted(
        str(tmp_path / p)
        for p in ("lib/deep/ok.py", "lib/other.py", "pg.sock")
        if (tmp_path / p).exists()
    )
    with pytest.raises(confine.Unconfinable, match="lies in"):
        confine.keep_out([str(tmp_path / "lib" / "deep")], [str(tmp_path / "lib")])
    # The job folder is granted whole or not at all (new files go straight into it).
    with pytest.raises(confine.Unconfinable, match="holds"):
        confine.plan(writable=[str(tmp_path)], protected=[str(tmp_path / "lib" / "deep")])
    readable, writable = confine.plan(writable=[str(tmp_path / "lib")], protected=[])
    assert writable == [str(tmp_path / "lib")]
    assert str(Path(confine.__file__).resolve().parents[1]) in readable  # ghaf/, not the repo
    assert str(Path(confine.__file__).resolve().parents[2]) not in readable
