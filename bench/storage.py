"""Throughput, memory and dedup of the encrypted artifact store.

In one run, on generated random data:
  1. encrypted put and get of one large file at the store level (hash + AES-256-GCM
     chunks + local disk), against a raw file copy and raw ``cryptography`` AES-GCM on
     the same chunk size; and the same put and get end to end (SDK -> HTTP -> server).
     The CPU path (hash + encrypt, bytes discarded) is judged against raw AES-GCM; the
     put to disk against the disk's own raw copy, measured in the same run (a disk
     writes slower than AES-GCM encrypts, so AES-GCM is no goal for it);
  2. peak RSS of the server and of the client while putting and getting a bigger file;
  3. dedup: putting the same file twice stores it once, and the second put costs about
     what hashing it costs.

Prints a table and, last, one JSON line (DESIGN.md "Benchmarks").
Usage: python bench/storage.py [--size-mb 2048] [--rss-mb 5120] [--dedup-mb 1024] [--quick]
"""

from __future__ import annotations

import argparse
import hashlib
import json
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

from _report import case, print_report
from cryptography.hazmat.primitives.ciphers.aead import AESGCM

from ghaf.client import Client
from ghaf.core.ids import new_id
from ghaf.core.settings import Settings
from ghaf.security.envelope import new_data_key
from ghaf.security.keyring import LocalKeyring
from ghaf.security.kms import LocalKms
from ghaf.server.install import initialise
from ghaf.server.process import ServerProcess
from ghaf.storage.backends.base import ObjectWriter
from ghaf.storage.backends.local import LocalBackend
from ghaf.storage.store import ObjectName, Slice, Store, Upload

MB = 1 << 20
CHUNK = 1 << 20


def make_file(path: Path, size_mb: int) -> Path:
    with path.open("wb") as handle:
        block = os.urandom(64 * MB)
        for i in range(0, size_mb, 64):
            # vary each block so nothing dedups or compresses by accident
            handle.write(i.to_bytes(8, "big") + block[8 : min(64, size_mb - i) * MB])
    return path


def timed(fn: Any) -> tuple[float, Any]:
    start = time.perf_counter()
    result = fn()
    return time.perf_counter() - start, result


def read_pieces(path: Path) -> Any:
    with path.open("rb", buffering=0) as handle:
        while piece := handle.read(CHUNK):
            yield piece


def raw_copy(src: Path, dst: Path) -> None:
    with dst.open("wb", buffering=0) as out:
        for piece in read_pieces(src):
            out.write(piece)
        os.fsync(out.fileno())


def raw_aes_gcm(src: Path) -> None:
    """``cryptography``'s AES-GCM as most code calls it: ``encrypt`` per 1 MiB chunk."""
    aead = AESGCM(AESGCM.generate_key(bit_length=256))
    for index, piece in enumerate(read_pieces(src)):
        aead.encrypt(index.to_bytes(12, "big"), piece, b"")


def raw_aes_gcm_into(src: Path) -> None:
    """The fastest plain use: ``encrypt_into`` one reused buffer (what the store does)."""
    aead = AESGCM(AESGCM.generate_key(bit_length=256))
    out = bytearray(CHUNK + 16)
    for index, piece in enumerate(read_pieces(src)):
        view = memoryview(out)[: len(piece) + 16]
        aead.encrypt_into(index.to_bytes(12, "big"), piece, b"", view)


def raw_sha256(src: Path) -> None:
    digest = hashlib.sha256()
    for piece in read_pieces(src):
        digest.update(piece)


def raw_read(src: Path) -> None:
    for _ in read_pieces(src):
        pass


def store_put(store: Store, src: Path) -> Any:
    handle = store.start_upload(project_id="bench")
    for piece in read_pieces(src):
        handle.write(piece)
    handle.finish()
    handle.commit()
    return handle


class NullWriter(ObjectWriter):
    """Discards bytes: isolates hashing + chunk framing + AES-GCM from storage speed."""

    def write(self, data: bytes) -> None:
        pass

    def commit(self) -> int:
        return 0

    def abort(self) -> None:
        pass


def write_path_only(src: Path) -> None:
    handle = Upload(
        NullWriter(), new_data_key(), ObjectName(new_id(), "objects/x/y", 1, ""), chunk_size=CHUNK
    )
    for piece in read_pieces(src):
        handle.write(piece)
    handle.finish()


def store_get(store: Store, handle: Any, size: int) -> None:
    data_key = store.data_key(
        project_id="bench",
        object_id=handle.object_id,
        kek_version=handle.kek_version,
        wrapped_key=handle.wrapped_key,
    )
    for _ in store.read(Slice(handle.key, handle.object_id, size, 0, size), data_key=data_key):
        pass


# VmHWM, not ru_maxrss: on Linux a child's ru_maxrss starts from the parent's at fork.
CLIENT_SCRIPT = """
import json, sys, time
from pathlib import Path
from ghaf.client import Client
url, token, src, dst = sys.argv[1:5]
with Client(url=url, token=token, timeout=600) as c:
    t = time.perf_counter()
    c.artifacts.upload("bench", "rss/big.bin", src)
    put = time.perf_counter() - t
    t = time.perf_counter()
    c.artifacts.download("bench", "rss/big.bin", dst)
    get = time.perf_counter() - t
hwm = [l for l in Path("/proc/self/status").read_text().splitlines() if l.startswith("VmHWM")]
print(json.dumps({"put_s": put, "get_s": get, "peak_rss_mb": int(hwm[0].split()[1]) / 1024}))
"""


def peak_rss_mb(pid: int) -> float:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmHWM:"):
            return int(line.split()[1]) / 1024
    return float("nan")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--size-mb", type=int, default=2048)
    parser.add_argument("--rss-mb", type=int, default=5120)
    parser.add_argument("--dedup-mb", type=int, default=1024)
    parser.add_argument("--quick", action="store_true", help="tiny sizes for CI smoke tests")
    parser.add_argument("--dir", type=Path, default=None, help="where to put the test files")
    args = parser.parse_args()
    if args.quick:
        args.size_mb, args.rss_mb, args.dedup_mb = 64, 128, 32
    cases: list[dict[str, Any]] = []
    with tempfile.TemporaryDirectory(dir=args.dir) as tmp_name:
        tmp = Path(tmp_name)
        src = make_file(tmp / "src.bin", args.size_mb)
        size = src.stat().st_size
        mbs = size / MB

        copy_s, _ = timed(lambda: raw_copy(src, tmp / "copy.bin"))
        (tmp / "copy.bin").unlink()
        aes_s, _ = timed(lambda: raw_aes_gcm(src))
        aes_into_s, _ = timed(lambda: raw_aes_gcm_into(src))
        sha_s, _ = timed(lambda: raw_sha256(src))
        read_s, _ = timed(lambda: raw_read(src))
        keyring = LocalKeyring(tmp / "keyring.json", os.urandom(32))
        store = Store(
            LocalBackend(f"file://{tmp / 'store'}", region="local"), LocalKms(keyring), CHUNK
        )
        path_s, _ = timed(lambda: write_path_only(src))
        put_s, handle = timed(lambda: store_put(store, src))
        get_s, _ = timed(lambda: store_get(store, handle, size))
        store.backend.delete(handle.key)
        cases += [
            case(
                f"hash + encrypt {mbs:.0f} MB, bytes discarded",
                "MB/s",
                "raw AES-GCM encrypt",
                mbs / aes_s,
                mbs / path_s,
                aes_s / path_s,
                ">= 0.60 of raw AES-GCM",
                aes_s / path_s >= 0.6,
            ),
            case(
                f"hash + encrypt {mbs:.0f} MB, bytes discarded",
                "MB/s",
                "raw AES-GCM encrypt_into",
                mbs / aes_into_s,
                mbs / path_s,
                aes_into_s / path_s,
                "-",
                None,
            ),
            case(
                f"hash + encrypt {mbs:.0f} MB, bytes discarded",
                "MB/s",
                "SHA-256 alone (the ceiling)",
                mbs / sha_s,
                mbs / path_s,
                sha_s / path_s,
                "-",
                None,
            ),
            # The put writes to disk, so the disk's own raw copy (read + write + fsync,
            # same chunks, same run) is its goal; raw AES-GCM, faster than this disk
            # can write, is shown beside it and judges only the CPU path above.
            case(
                f"encrypted put {mbs:.0f} MB (store)",
                "MB/s",
                "raw file copy",
                mbs / copy_s,
                mbs / put_s,
                copy_s / put_s,
                ">= 0.90 of raw file copy",
                copy_s / put_s >= 0.9,
            ),
            case(
                f"encrypted put {mbs:.0f} MB (store)",
                "MB/s",
                "raw AES-GCM encrypt",
                mbs / aes_s,
                mbs / put_s,
                aes_s / put_s,
                "-",
                None,
            ),
            case(
                f"encrypted get {mbs:.0f} MB (store)",
                "MB/s",
                "raw file read",
                mbs / read_s,
                mbs / get_s,
                read_s / get_s,
                "-",
                None,
            ),
        ]

        home = tmp / "home"
        token = initialise(Settings(home=home, database_url="", master_key=None)).token
        assert token is not None
        env = {"GHAF_HOME": str(home), "GHAF_DATABASE_URL": "", "GHAF_LOG_LEVEL": "warning"}
        with (
            ServerProcess(env=env) as server,
            Client(url=server.url, token=token.token, timeout=600) as client,
        ):
            client.projects.create("bench")
            http_put_s, _ = timed(lambda: client.artifacts.upload("bench", "e2e/src.bin", src))
            http_get_s, _ = timed(
                lambda: client.artifacts.download("bench", "e2e/src.bin", tmp / "back.bin")
            )
            assert (
                hashlib.sha256((tmp / "back.bin").read_bytes()).hexdigest()
                == client.artifacts.get("bench", "e2e/src.bin").sha256
                if args.quick
                else True
            )
            (tmp / "back.bin").unlink()
            client.artifacts.delete("bench", "e2e/src.bin")
            cases += [
                case(
                    f"put {mbs:.0f} MB, SDK -> HTTP -> server",
                    "MB/s",
                    "raw file copy",
                    mbs / copy_s,
                    mbs / http_put_s,
                    copy_s / http_put_s,
                    "-",
                    None,
                ),
                case(
                    f"get {mbs:.0f} MB, SDK <- HTTP <- server",
                    "MB/s",
                    "raw file copy",
                    mbs / copy_s,
                    mbs / http_get_s,
                    copy_s / http_get_s,
                    "-",
                    None,
                ),
            ]
            src.unlink()

            big = make_file(tmp / "big.bin", args.rss_mb)
            assert server.process is not None
            child = subprocess.run(
                [
                    sys.executable,
                    "-c",
                    CLIENT_SCRIPT,
                    server.url,
                    token.token,
                    str(big),
                    str(tmp / "big.back"),
                ],
                capture_output=True,
                text=True,
                check=True,
            )
            client_stats = json.loads(child.stdout.strip().splitlines()[-1])
            server_peak = peak_rss_mb(server.process.pid)
            big.unlink()
            (tmp / "big.back").unlink()
            client.artifacts.delete("bench", "rss/big.bin")
            label = f"{args.rss_mb / 1024:.1f} GB" if args.rss_mb >= 1024 else f"{args.rss_mb} MB"
            cases += [
                case(
                    f"peak RSS, server, put+get {label}",
                    "MB",
                    "-",
                    0,
                    server_peak,
                    0,
                    "< 150 MB",
                    server_peak < 150,
                ),
                case(
                    f"peak RSS, client, put+get {label}",
                    "MB",
                    "-",
                    0,
                    client_stats["peak_rss_mb"],
                    0,
                    "< 150 MB",
                    client_stats["peak_rss_mb"] < 150,
                ),
            ]

            dup = make_file(tmp / "dup.bin", args.dedup_mb)
            hash_s, _ = timed(lambda: hashlib.file_digest(dup.open("rb"), "sha256"))
            client.artifacts.upload("bench", "dedup/first.bin", dup)
            objects_before = sum(1 for p in (home / "artifacts").rglob("*") if p.is_file())
            second_s, _ = timed(lambda: client.artifacts.upload("bench", "dedup/second.bin", dup))
            objects_after = sum(1 for p in (home / "artifacts").rglob("*") if p.is_file())
            dmb = dup.stat().st_size / MB
            cases += [
                case(
                    f"second put of the same {dmb:.0f} MB",
                    "s",
                    "sha256 of the file",
                    hash_s,
                    second_s,
                    second_s / hash_s,
                    "<= 1.10 x hashing",
                    second_s / hash_s <= 1.10,
                ),
                case(
                    "objects stored by the second put",
                    "count",
                    "-",
                    0,
                    objects_after - objects_before,
                    0,
                    "0",
                    objects_after == objects_before,
                ),
            ]

    print_report(
        "storage",
        cases,
        note=f"files in {args.dir or tempfile.gettempdir()}; chunk 1 MiB; one server process",
    )


if __name__ == "__main__":
    main()
