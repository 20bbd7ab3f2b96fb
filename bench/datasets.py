"""Dataset versioning against DVC: first add, incremental add, and one large file.

In one run, on the same generated random data:
  1. a folder of 10,000 files of 100 KB (about 1 GB): `dvc add` + `dvc push` to a local
     remote, against ghaf's `add_version` (SDK -> HTTP -> server on SQLite, every byte
     encrypted at rest and checked by the server);
  2. the same folder again after 10 of its files changed;
  3. one 1 GB file, first add;
  4. raw SHA-256 over the same bytes (read + hash, one pass), the floor for any tool
     that content-addresses its input;
  5. what an encrypting store must at least do, in the same run: per file, read +
     SHA-256 + AES-256-GCM + write a new file, on one thread, then one ``sync`` (no
     HTTP, database or metadata at all).

DVC runs from its own virtual environment, `.bench/dvc`, created on first use
(`pip install dvc`). Every first add starts empty (a new DVC repository and remote, a new
ghaf project and hash cache); the incremental adds keep them (DVC's state database,
ghaf's hash cache). Each figure is the median of 3 runs. The data is left to settle for
2 s after it is written, as data on disk normally is, and each timed step starts after
`sync` and a 5 s pause, so that neither tool pays for the other's writes.

Prints a table and, last, one JSON line (DESIGN.md "Benchmarks").
Usage: python bench/datasets.py [--files 10000] [--file-kb 100] [--big-mb 1024] [--quick]
       (--quick: tiny sizes, and DVC only if .bench/dvc already exists)
"""

from __future__ import annotations

import argparse
import hashlib
import os
import shutil
import statistics
import subprocess
import tempfile
import time
from functools import partial
from pathlib import Path
from typing import Any

from _peers import ensure_peer, peer_venv
from _report import case, print_report

from ghaf.client import Client
from ghaf.core.settings import Settings
from ghaf.server.install import initialise
from ghaf.server.process import ServerProcess

MB = 1 << 20
DVC = peer_venv("dvc") / "bin" / "dvc"
CHANGED = 10
# DVC ends a command by forking a detached daemon (usage analytics, update check) from
# a process whose hashing threads may still hold locks; the forked child can deadlock
# before it reports its pid, and its parent, `dvc add`, then waits for it for ever (the
# smoke test hung so under `make test`). Neither daemon runs when both are off.
DVC_ENV = {"DVC_NO_ANALYTICS": "1"}
DVC_TIMEOUT_S = 1800.0
ROUNDS = 3
COOL_DOWN_S = 5.0


def make_folder(root: Path, files: int, size: int) -> list[Path]:
    paths = []
    for i in range(files):
        path = root / f"part-{i % 100:02d}" / f"file-{i:06d}.bin"
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_bytes(os.urandom(size))
        paths.append(path)
    return paths


def make_file(path: Path, size_mb: int) -> Path:
    with path.open("wb") as handle:
        for _ in range(size_mb):
            handle.write(os.urandom(MB))
    return path


def raw_sha256(paths: list[Path]) -> tuple[float, list[str]]:
    """Seconds to read and hash every file once, and the hashes (to check ghaf's)."""
    hashes = []
    start = time.perf_counter()
    for path in paths:
        digest = hashlib.sha256()
        with path.open("rb", buffering=0) as handle:
            while piece := handle.read(MB):
                digest.update(piece)
        hashes.append(digest.hexdigest())
    return time.perf_counter() - start, hashes


def raw_encrypted_copy(paths: list[Path], target: Path) -> None:
    """Per file: read, SHA-256, AES-256-GCM and write a new file; then one ``sync``
    (one thread's floor for an encrypting, durable, content-addressed store)."""
    from cryptography.hazmat.primitives.ciphers.aead import AESGCM

    aead = AESGCM(AESGCM.generate_key(bit_length=256))
    target.mkdir()
    for i, path in enumerate(paths):
        data = path.read_bytes()
        digest = hashlib.sha256(data).hexdigest()
        sealed = aead.encrypt(os.urandom(12), data, digest.encode())
        (target / f"{i:06d}").write_bytes(sealed)
    os.sync()


class DvcRepo:
    """A git + DVC repository (in an existing folder) pushing to a local remote."""

    def __init__(self, root: Path, remote: Path) -> None:
        self.root = root
        self.remote = remote
        self._run("git", "init", "-q")
        self._run(str(DVC), "init", "-q")
        self._run(str(DVC), "config", "core.analytics", "false")
        self._run(str(DVC), "config", "core.check_update", "false")
        self._run(str(DVC), "remote", "add", "-d", "local", str(remote))

    def _run(self, *command: str) -> None:
        try:
            subprocess.run(
                command,
                cwd=self.root,
                check=True,
                capture_output=True,
                stdin=subprocess.DEVNULL,  # never a prompt waiting on the terminal
                env={**os.environ, **DVC_ENV},
                timeout=DVC_TIMEOUT_S,
            )
        except subprocess.TimeoutExpired as exc:
            raise RuntimeError(
                f"{' '.join(command)} did not finish in {exc.timeout:.0f} s"
            ) from None

    def add_and_push(self, target: str) -> tuple[float, float]:
        """Seconds for ``dvc add`` + ``dvc push``, and then for ``sync``: DVC does not
        make what it writes durable, ghaf does before it answers."""

        def add_and_push() -> None:
            self._run(str(DVC), "add", "-q", target)
            self._run(str(DVC), "push", "-q")

        seconds = timed(add_and_push)
        start = time.perf_counter()
        os.sync()
        return seconds, time.perf_counter() - start


def timed(fn: Any) -> float:
    # Each timed step starts with no dirty pages left by the step before it and after a
    # pause for the disk to catch up, so neither tool pays for the other's writes.
    os.sync()
    time.sleep(COOL_DOWN_S)
    start = time.perf_counter()
    fn()
    return time.perf_counter() - start


def settle(started: float) -> None:
    """Wait until data written at ``started`` is 2 s old (see docs/datasets.md)."""
    time.sleep(max(0.0, started + 2.5 - time.monotonic()))


def _median_pair(pairs: list[tuple[float, float]]) -> tuple[float, float]:
    """The (add+push, sync) pair whose add+push time is the median."""
    return sorted(pairs)[len(pairs) // 2]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--files", type=int, default=10_000)
    parser.add_argument("--file-kb", type=int, default=100)
    parser.add_argument("--big-mb", type=int, default=1024)
    parser.add_argument("--quick", action="store_true", help="tiny sizes for CI smoke tests")
    parser.add_argument("--dir", type=Path, default=None, help="where to put the test data")
    args = parser.parse_args()
    if args.quick:
        args.files, args.file_kb, args.big_mb = 200, 4, 8
        global COOL_DOWN_S, DVC_TIMEOUT_S
        COOL_DOWN_S, DVC_TIMEOUT_S = 0.0, 60.0
    with_dvc = ensure_peer("dvc", install=not args.quick)
    size = args.file_kb * 1024
    cases: list[dict[str, Any]] = []
    rounds = 1 if args.quick else ROUNDS
    with tempfile.TemporaryDirectory(dir=args.dir) as tmp_name:
        tmp = Path(tmp_name)
        written = time.monotonic()
        work = tmp / "work"
        folder_paths = make_folder(work / "data", args.files, size)
        names = [p.relative_to(work / "data") for p in folder_paths]
        make_file(work / "big.bin", args.big_mb)
        folder_mb = args.files * size / MB
        settle(written)

        sha_folder, folder_hashes = raw_sha256(folder_paths)
        sha_big, big_hashes = raw_sha256([work / "big.bin"])
        floor_folder = timed(partial(raw_encrypted_copy, folder_paths, tmp / "floor"))
        shutil.rmtree(tmp / "floor")
        nan = float("nan")
        dvc_first = dvc_big = (nan, nan)
        dvc_incremental = nan
        # This machine is noisy: each first add is the median of a few, every one into
        # an empty DVC repository and remote, or a new ghaf project with an empty cache.
        repo: DvcRepo | None = None
        dvc_firsts, dvc_bigs = [], []
        for round_ in range(rounds if with_dvc else 0):
            if repo is not None:  # the data moves on; the previous repository goes
                for name in ("data", "big.bin"):
                    (repo.root / name).rename(work / name)
                shutil.rmtree(repo.root)
                shutil.rmtree(repo.remote)
            root = tmp / f"dvc-{round_}"
            root.mkdir()
            for name in ("data", "big.bin"):  # `dvc add` wants the data inside the repo
                (work / name).rename(root / name)
            repo = DvcRepo(root, tmp / f"dvc-remote-{round_}")
            dvc_firsts.append(repo.add_and_push("data"))
            dvc_bigs.append(repo.add_and_push("big.bin"))
        if repo is not None:
            dvc_first, dvc_big = _median_pair(dvc_firsts), _median_pair(dvc_bigs)
        where = repo.root if repo is not None else work
        data, big = where / "data", where / "big.bin"
        folder_paths = [data / name for name in names]

        home = tmp / "home"
        token = initialise(Settings(home=home, database_url="", master_key=None)).token
        assert token is not None
        env = {"GHAF_HOME": str(home), "GHAF_DATABASE_URL": "", "GHAF_LOG_LEVEL": "warning"}
        uploaded: list[int] = []
        with (
            ServerProcess(env=env) as server,
            Client(url=server.url, token=token.token, timeout=600) as client,
        ):
            ghaf_firsts, ghaf_bigs = [], []
            for round_ in range(rounds):
                project = client.projects.create(f"bench-{round_}").name
                os.environ["GHAF_CACHE"] = str(tmp / f"ghaf-cache-{round_}")  # empty
                client.datasets.create(project, "folder")
                client.datasets.create(project, "big")
                add = client.datasets.add_version
                ghaf_firsts.append(timed(partial(add, project, "folder", data)))
                ghaf_bigs.append(timed(partial(add, project, "big", big)))
            ghaf_first, ghaf_big = statistics.median(ghaf_firsts), statistics.median(ghaf_bigs)
            # Same answer: ghaf recorded exactly the SHA-256s computed here.
            recorded = {f.path: f.sha256 for f in client.datasets.files(project, "folder", 1)}
            assert recorded == {n.as_posix(): h for n, h in zip(names, folder_hashes, strict=True)}
            assert [f.sha256 for f in client.datasets.files(project, "big", 1)] == big_hashes

            # Incremental adds are short and this machine is noisy: median of 3 rounds,
            # each changing 10 other files.
            dvc_rounds, ghaf_rounds = [], []
            for round_ in range(ROUNDS):
                step = max(1, len(folder_paths) // CHANGED)
                for path in folder_paths[round_::step][:CHANGED]:
                    path.write_bytes(os.urandom(size))
                if repo is not None:
                    dvc_rounds.append(repo.add_and_push("data")[0])
                uploaded.clear()
                ghaf_rounds.append(
                    timed(
                        lambda: client.datasets.add_version(
                            project, "folder", data, upload_progress=uploaded.append
                        )
                    )
                )
                assert sum(uploaded) == CHANGED * size, f"uploaded {sum(uploaded)} bytes"
            if with_dvc:
                dvc_incremental = statistics.median(dvc_rounds)
            ghaf_incremental = statistics.median(ghaf_rounds)
            version = client.datasets.version(project, "folder")
            assert version.file_count == args.files and version.version == 1 + ROUNDS

    peer = "DVC add+push" if with_dvc else "DVC (not installed)"

    def versus_dvc(name: str, dvc_s: float, ghaf_s: float, goal: float) -> dict[str, Any]:
        ratio = dvc_s / ghaf_s if with_dvc else float("nan")
        return case(
            name,
            "s",
            peer,
            dvc_s,
            ghaf_s,
            ratio,
            f">= {goal:g}x faster",
            ratio >= goal if with_dvc else None,
            digits=2,
        )

    def durable(name: str, dvc: tuple[float, float], ghaf_s: float) -> dict[str, Any]:
        total = sum(dvc)
        ratio = total / ghaf_s if with_dvc else float("nan")
        return case(name, "s", "DVC add+push+sync", total, ghaf_s, ratio, "-", None, digits=2)

    def versus_sha(name: str, sha_s: float, ghaf_s: float) -> dict[str, Any]:
        ratio = sha_s / ghaf_s
        return case(
            name,
            "s",
            "raw SHA-256",
            sha_s,
            ghaf_s,
            ratio,
            ">= 0.5 (within 2x)",
            ratio >= 0.5,
            digits=2,
        )

    files = f"{args.files:,} files"
    cases += [
        versus_dvc(f"first add, {folder_mb:.0f} MB in {files}", dvc_first[0], ghaf_first, 3),
        versus_dvc(
            f"incremental add, {CHANGED} of {files} changed", dvc_incremental, ghaf_incremental, 10
        ),
        versus_dvc(f"first add, one {args.big_mb} MB file", dvc_big[0], ghaf_big, 3),
        durable(f"first add, {folder_mb:.0f} MB in {files}", dvc_first, ghaf_first),
        durable(f"first add, one {args.big_mb} MB file", dvc_big, ghaf_big),
        versus_sha(f"first add, {folder_mb:.0f} MB in {files}", sha_folder, ghaf_first),
        versus_sha(f"first add, one {args.big_mb} MB file", sha_big, ghaf_big),
        case(
            f"first add, {folder_mb:.0f} MB in {files}",
            "s",
            "floor: read+SHA+AES+write, sync",
            floor_folder,
            ghaf_first,
            floor_folder / ghaf_first,
            "-",
            None,
            digits=2,
        ),
    ]
    print_report(
        "datasets",
        cases,
        note=(
            f"ratio = peer time / ghaf time (higher is better); ghaf server on SQLite, "
            f"encrypting; medians of {rounds} runs (first adds into empty repositories / "
            f"projects); each incremental add uploaded {sum(uploaded) // 1024} KiB "
            f"({CHANGED} files); {os.cpu_count()} CPUs"
        ),
    )


if __name__ == "__main__":
    main()
