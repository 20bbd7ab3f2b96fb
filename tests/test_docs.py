"""Every code block in README.md and docs/*.md runs as written.

Each Markdown file is one test. Its fenced blocks run in order, as one session a reader
would type in one terminal and one notebook:

- ``sh``/``bash``/``shell``/``console`` blocks: each in ``bash -euo pipefail``; exported
  variables and the working directory carry on to the next block, and a process a block
  leaves in the background (``ghaf server &``) lives until the file is done.
- ``python`` blocks: one interpreter, one namespace, in order (like a notebook), with the
  environment and directory the shell blocks left.
- ``yaml``/``json``/``toml`` blocks are parsed; ``text`` blocks (output, diagrams) are
  not run.
- A block preceded by ``<!-- not-run: REASON -->`` is skipped (the reason is required);
  one preceded by ``<!-- file: NAME -->`` is written to ``NAME`` for later blocks to use
  (e.g. a ``train.py`` that a shell block then runs). A fence without a language fails.

Where they run: a fresh folder holding ``.venv`` (a link to this venv, so
``.venv/bin/ghaf`` works as the README writes it; ``ghaf`` and ``python`` are on PATH),
with its own ``GHAF_HOME``, credentials file and cache. A file whose blocks start
``ghaf server`` themselves gets nothing more; there the one liberty taken is that port
8080 becomes a free port, so parallel runs never collide. Every other file runs against a
fresh live platform (the ``fresh_platform`` fixture, so ``--db=postgresql`` covers them),
reached through ``GHAF_URL``/``GHAF_TOKEN`` as its platform admin, with a project
``risk``: the docs say so in their first lines.

The test ids count the blocks per file (run, parsed, text, not run), so a report shows
how many blocks ran and how many were skipped.
"""

from __future__ import annotations

import contextlib
import json
import os
import re
import select
import signal
import subprocess
import sys
import time
import tomllib
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import IO

import pytest
import yaml

from ghaf.server.process import free_port
from tests.conftest import Platform

ROOT = Path(__file__).resolve().parent.parent
DOCS = [ROOT / "README.md", *sorted((ROOT / "docs").glob("*.md"))]

SHELL = {"sh", "bash", "shell", "console"}
PYTHON = {"python", "py", "python3"}
PARSED = {"yaml", "yml", "json", "toml"}
TEXT = {"text", "txt"}
BLOCK_TIMEOUT_S = 180.0

FENCE = re.compile(r"^(?P<indent>[ \t]*)(?P<fence>`{3,}|~{3,})(?P<lang>[^\s`]*)[^`]*$")
MARKER = re.compile(r"^\s*<!--\s*(?P<kind>not-run|file):\s*(?P<value>.*?)\s*-->\s*$")
SERVER = re.compile(r"(^|[\s/])ghaf server\b", re.MULTILINE)


@dataclass(frozen=True)
class Block:
    """One fenced code block of a Markdown file."""

    doc: Path
    line: int  # 1-based line of the opening fence
    lang: str
    text: str
    not_run: str | None = None  # the marker's reason
    file: str | None = None  # write the block to this file instead of running it

    @property
    def where(self) -> str:
        return f"{self.doc.relative_to(ROOT)}:{self.line}"

    @property
    def kind(self) -> str:
        if self.not_run is not None:
            return "not run"
        if self.file is not None:
            return "file"
        if self.lang in SHELL:
            return "shell"
        if self.lang in PYTHON:
            return "python"
        if self.lang in PARSED:
            return "parsed"
        if self.lang in TEXT:
            return "text"
        return "unknown"


def parse(doc: Path) -> list[Block]:
    """The fenced blocks of ``doc``, each with the marker on the line before it."""
    lines = doc.read_text(encoding="utf-8").splitlines()
    blocks: list[Block] = []
    i = 0
    while i < len(lines):
        opening = FENCE.match(lines[i])
        if not opening:
            i += 1
            continue
        indent, fence = len(opening["indent"]), opening["fence"]
        body: list[str] = []
        j = i + 1
        while j < len(lines) and not lines[j].strip().startswith(fence):
            body.append(lines[j][indent:] if lines[j][:indent].strip() == "" else lines[j])
            j += 1
        before = next((lines[k] for k in range(i - 1, -1, -1) if lines[k].strip()), "")
        marker = MARKER.match(before)
        blocks.append(
            Block(
                doc,
                i + 1,
                opening["lang"].lower(),
                "\n".join(body) + "\n",
                not_run=marker["value"] if marker and marker["kind"] == "not-run" else None,
                file=marker["value"] if marker and marker["kind"] == "file" else None,
            )
        )
        i = j + 1
    return blocks


def _counts(doc: Path) -> str:
    kinds = [b.kind for b in parse(doc)]
    ran = sum(k in {"shell", "python", "file"} for k in kinds)
    return (
        f"{doc.relative_to(ROOT)}: {ran} run, {kinds.count('parsed')} parsed, "
        f"{kinds.count('text')} text, {kinds.count('not run')} not run"
    )


def _starts_own_server(blocks: list[Block]) -> bool:
    return any(b.kind == "shell" and SERVER.search(b.text) for b in blocks)


def test_every_block_is_labelled() -> None:
    """A fence names its language and a skipped block names its reason, in every file."""
    problems = []
    for doc in DOCS:
        for block in parse(doc):
            if block.not_run is not None and not block.not_run:
                problems.append(f"{block.where}: not-run marker without a reason")
            elif block.kind == "unknown":
                problems.append(
                    f"{block.where}: fence language {block.lang or '(none)'!r} is neither run "
                    "nor parsed; use sh/python, yaml/json/toml, text for output, or "
                    "<!-- not-run: REASON -->"
                )
    assert not problems, "\n".join(problems)


# --- running a file's blocks -------------------------------------------------------------

WORKER = r"""
import json, os, sys, traceback
namespace = {"__name__": "__main__"}
control = os.fdopen(int(sys.argv[1]), "w")
source = sys.stdin.buffer
while True:
    header = source.readline()
    if not header:
        break
    chunk = json.loads(header)
    code = source.read(chunk["size"]).decode()
    for key in set(os.environ) - set(chunk["env"]):
        del os.environ[key]
    os.environ.update(chunk["env"])
    os.chdir(chunk["cwd"])
    print(f"### {chunk['name']}", flush=True)
    try:
        exec(compile("\n" * chunk["line"] + code, chunk["name"], "exec"), namespace)
        result = {"ok": True}
    except BaseException:
        result = {"ok": False, "error": traceback.format_exc()}
    sys.stdout.flush()
    sys.stderr.flush()
    control.write(json.dumps(result) + "\n")
    control.flush()
"""


class Session:
    """One reader's terminal and notebook: shell blocks in bash with shared state, python
    blocks in one long-lived interpreter."""

    def __init__(self, work: Path, env: dict[str, str]) -> None:
        self.work = work
        self.env = env
        self.cwd = work
        self.state = work.parent / "shell-state.sh"
        self.groups: list[int] = []  # process groups to end when the file is done
        self.log = work.parent / "python.log"
        self._python: subprocess.Popen[bytes] | None = None
        self._control: IO[str] | None = None

    def shell(self, block: Block, text: str) -> None:
        envfile = self.work.parent / "shell-env"
        script = self.work.parent / f"block-{block.line}.sh"
        log = self.work.parent / f"block-{block.line}.log"
        trap = (
            f'trap \'export -p > {self.state}; printf "cd %q\\n" "$PWD" >> {self.state}; '
            f"env -0 > {envfile}; pwd > {envfile}.cwd' EXIT\n"
        )
        restore = f"source {self.state}\n" if self.state.exists() else ""
        script.write_text(trap + restore + text)
        with log.open("wb") as out:
            # Output goes to a file, not a pipe: a server the block leaves running keeps
            # its copy of the descriptor open.
            child = subprocess.Popen(
                ["bash", "-euo", "pipefail", str(script)],
                cwd=self.cwd,
                env=self.env,
                stdin=subprocess.DEVNULL,
                stdout=out,
                stderr=subprocess.STDOUT,
                start_new_session=True,
            )
            self.groups.append(child.pid)
            try:
                code = child.wait(timeout=BLOCK_TIMEOUT_S)
            except subprocess.TimeoutExpired:
                code = None
        output = log.read_text(errors="replace")
        if code != 0:
            status = "timed out" if code is None else f"exit {code}"
            pytest.fail(
                f"{block.where}: shell block failed ({status}):\n{text}\n--- output\n{output}"
            )
        raw = envfile.read_bytes().split(b"\0")
        self.env = dict(item.decode(errors="replace").split("=", 1) for item in raw if b"=" in item)
        self.cwd = Path((envfile.parent / "shell-env.cwd").read_text().strip())

    def python(self, block: Block) -> None:
        if self._python is None:
            read, write = os.pipe()
            self._python = subprocess.Popen(
                [sys.executable, "-c", WORKER, str(write)],
                stdin=subprocess.PIPE,
                stdout=self.log.open("ab"),
                stderr=subprocess.STDOUT,
                pass_fds=(write,),
                env=self.env,
                cwd=self.cwd,
                start_new_session=True,
            )
            os.close(write)
            self._control = os.fdopen(read, "r")
            self.groups.append(self._python.pid)
        assert self._python.stdin is not None and self._control is not None
        code = block.text.encode()
        header = {
            "size": len(code),
            "env": self.env,
            "cwd": str(self.cwd),
            "name": block.where,
            "line": block.line,
        }
        self._python.stdin.write(json.dumps(header).encode() + b"\n" + code)
        self._python.stdin.flush()
        ready, _, _ = select.select([self._control], [], [], BLOCK_TIMEOUT_S)
        answer = self._control.readline() if ready else ""
        if not answer:
            pytest.fail(
                f"{block.where}: python block "
                f"{'timed out' if not ready else 'ended the interpreter'}:\n{block.text}"
                f"\n--- output\n{self._output()}"
            )
        result = json.loads(answer)
        if not result["ok"]:
            pytest.fail(
                f"{block.where}: python block failed:\n{block.text}\n--- output\n"
                f"{self._output()}\n--- traceback\n{result['error']}"
            )

    def _output(self) -> str:
        text = self.log.read_text(errors="replace")
        return text[text.rfind("### ") :][-6000:]

    def close(self) -> None:
        if self._python is not None and self._python.stdin is not None:
            self._python.stdin.close()
            with contextlib.suppress(subprocess.TimeoutExpired):
                self._python.wait(timeout=10)
        for sig in (signal.SIGTERM, signal.SIGKILL):
            alive = []
            for group in self.groups:
                try:
                    os.killpg(group, sig)
                    alive.append(group)
                except ProcessLookupError:
                    pass
            if not alive:
                break
            deadline = time.monotonic() + 10
            while alive and time.monotonic() < deadline:
                alive = [g for g in alive if _group_alive(g)]
                time.sleep(0.1)
            self.groups = alive
        if self._control is not None:
            self._control.close()


def _group_alive(group: int) -> bool:
    try:
        os.killpg(group, 0)
    except ProcessLookupError:
        return False
    with contextlib.suppress(ChildProcessError):  # reap our own child if it is a zombie
        os.waitpid(group, os.WNOHANG)
    return True


def _base_env(tmp: Path) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith(("GHAF_", "PYTEST_"))}
    venv_bin = Path(sys.prefix) / "bin"
    env.update(
        PATH=f"{venv_bin}{os.pathsep}{env.get('PATH', '')}",
        GHAF_HOME=str(tmp / "home"),
        GHAF_CREDENTIALS=str(tmp / "config" / "credentials.json"),
        GHAF_CACHE=str(tmp / "cache"),
        TMPDIR=str(tmp / "tmp"),  # mktemp -d in a block stays inside the test's folder
        COLUMNS="100",
        PYTHONUNBUFFERED="1",
    )
    return env


def _check_parsed(block: Block) -> None:
    try:
        if block.lang in {"yaml", "yml"}:
            list(yaml.safe_load_all(block.text))
        elif block.lang == "json":
            json.loads(block.text)
        else:
            tomllib.loads(block.text)
    except Exception as exc:
        pytest.fail(f"{block.where}: {block.lang} block does not parse: {exc}")


@pytest.fixture
def session(tmp_path: Path) -> Iterator[Session]:
    work = tmp_path / "work"
    work.mkdir()
    (tmp_path / "tmp").mkdir()
    (work / ".venv").symlink_to(Path(sys.prefix))
    live = Session(work, _base_env(tmp_path))
    yield live
    live.close()


# The docs follow a new user on the embedded defaults; the commands they run are tested
# on PostgreSQL by their own domains' tests, so once per suite is enough (CI time).
@pytest.mark.embedded
@pytest.mark.timeout(600)
@pytest.mark.parametrize("doc", DOCS, ids=_counts)
def test_blocks_run_as_written(
    doc: Path, session: Session, fresh_platform: Callable[..., Platform]
) -> None:
    blocks = parse(doc)
    substitute: Callable[[str], str] = lambda text: text  # noqa: E731
    if _starts_own_server(blocks):
        port = str(free_port())
        substitute = lambda text: re.sub(r"\b8080\b", port, text)  # noqa: E731
    elif any(b.kind in {"shell", "python"} for b in blocks):
        live = fresh_platform()
        live.admin.projects.create("risk")
        session.env.update(GHAF_URL=live.url, GHAF_TOKEN=live.admin_token)
    for block in blocks:
        kind = block.kind
        if kind == "shell":
            text = substitute(block.text)
            if block.lang == "console":
                text = "".join(
                    line[2:] + "\n" for line in text.splitlines() if line.startswith("$ ")
                )
            session.shell(block, text)
        elif kind == "python":
            session.python(Block(block.doc, block.line, block.lang, substitute(block.text)))
        elif kind == "file":
            assert block.file is not None
            (session.cwd / block.file).write_text(block.text)
        elif kind == "parsed":
            _check_parsed(block)
    # What ran is in the test id; say it in the output too (pytest -rA shows it).
    print(_counts(doc))
