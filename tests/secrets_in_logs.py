"""A pytest plugin: no token or password created during the suite appears in its logs.

Registered from ``tests/conftest.py``, it runs in every test process (each pytest-xdist
worker, or the one process without xdist) and records, into one folder the controller
shares with its workers:

- **what was logged**: every log record of the process (a root handler; records are
  formatted with their traceback, stack and ``extra`` fields), the output of every
  ``ghaf server`` child (``ServerProcess``; one without a log file gets one), and the
  audit rows of every test installation when it stops (``Platform.stop``), each line
  tagged with the id of the test that was running;
- **the secrets**: every token the code mints in-process (``generate_token``), every
  password hashed or checked in-process (argon2), and every password the SDK sends
  (user creation, password change, login), which covers servers in child processes.

At the end of the session the controller reads every worker's files and fails the run
(exit status 1) when any secret, or any token-shaped string at all (``ghaf_`` + 43
characters: that also covers tokens minted by child processes), appears in anything
logged. The report names the kind of secret, where it appeared and the test that was
running; it never prints the secret. :func:`find_leaks` is the detector, called directly
by ``tests/test_secrets_in_logs.py`` on a planted secret so this can never pass
vacuously.
"""

from __future__ import annotations

import json
import logging
import re
import shutil
import sys
import tempfile
import traceback
from collections.abc import Callable, Iterable, Iterator, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import IO, Any

import pytest

from ghaf.security import tokens as token_module
from ghaf.security.tokens import TOKEN_PATTERN

DIR_KEY = "ghaf_secrets_in_logs_dir"
MIN_PASSWORD = 8  # shorter strings are too common to judge (no ghaf password is this short)
_TOKEN_BODY = 43
_RUN = re.compile(r"[A-Za-z0-9_-]{43,}")
_STANDARD = set(vars(logging.makeLogRecord({}))) | {"message", "asctime"}


@dataclass(frozen=True)
class Leak:
    """One secret found in something logged (the secret itself is never kept here)."""

    kind: str  # "token", "password", "token-shaped string"
    source: str  # "log ghaf.server", "ghaf server output", "audit rows"
    test: str

    def __str__(self) -> str:
        return f"a {self.kind} appears in {self.source}, logged during {self.test}"


def find_leaks(lines: Iterable[Mapping[str, str]], secrets: Mapping[str, str]) -> list[Leak]:
    """The secrets (value -> kind) that appear in ``lines`` (each ``{"test", "source",
    "text"}``), one :class:`Leak` per (test, source, kind). Any token-shaped string is a
    leak, known or not; a known token counts without its ``ghaf_`` prefix too."""
    bodies = {v[len(token_module.TOKEN_PREFIX) :]: k for v, k in secrets.items() if k == "token"}
    # A "password" of one or two repeated characters ("0000000000") is fuzzer filler,
    # which the same fuzzer also writes into names and descriptions that are audited:
    # not a secret anything could leak. Every password the tests set is random.
    others = sorted(
        (
            v
            for v, k in secrets.items()
            if k != "token" and len(v) >= MIN_PASSWORD and len(set(v)) > 2
        ),
        key=len,
        reverse=True,
    )
    pattern = re.compile("|".join(map(re.escape, others))) if others else None
    found: dict[Leak, None] = {}
    for line in lines:
        text, where, test = line["text"], line["source"], line["test"]
        for token in TOKEN_PATTERN.findall(text):
            found[Leak("token" if token in secrets else "token-shaped string", where, test)] = None
        for run in _RUN.findall(text):
            if any(run[i : i + _TOKEN_BODY] in bodies for i in range(len(run) - _TOKEN_BODY + 1)):
                found[Leak("token", where, test)] = None
        if pattern is not None:
            for match in pattern.finditer(text):
                found[Leak(secrets[match.group(0)], where, test)] = None
    return list(found)


def scan(folder: Path) -> list[Leak]:
    """:func:`find_leaks` over every worker's files in ``folder``."""
    secrets: dict[str, str] = {}
    for path in sorted(folder.glob("secrets-*.jsonl")):
        for raw in path.read_text(encoding="utf-8").splitlines():
            entry = json.loads(raw)
            secrets.setdefault(entry["value"], entry["kind"])
    return find_leaks(_lines(folder), secrets)


def _lines(folder: Path) -> Iterator[Mapping[str, str]]:
    for path in sorted(folder.glob("log-*.jsonl")):
        with path.open(encoding="utf-8") as file:
            for raw in file:
                yield json.loads(raw)


class Recorder:
    """One test process's two files: what was logged, and the secrets it saw."""

    def __init__(self, folder: Path, worker: str) -> None:
        self.folder = folder
        self.test = "<collection>"
        self._seen: set[str] = set()
        self._log: IO[str] = (folder / f"log-{worker}.jsonl").open("a", encoding="utf-8")
        self._secrets: IO[str] = (folder / f"secrets-{worker}.jsonl").open("a", encoding="utf-8")
        self.handler = RecordingHandler(self)

    def secret(self, kind: str, value: object) -> None:
        if isinstance(value, str) and value and value not in self._seen:
            self._seen.add(value)
            self._secrets.write(json.dumps({"kind": kind, "value": value}) + "\n")
            self._secrets.flush()

    def logged(self, source: str, text: str) -> None:
        self._log.write(json.dumps({"test": self.test, "source": source, "text": text}) + "\n")

    def flush(self) -> None:
        self._log.flush()
        self._secrets.flush()

    def close(self) -> None:
        self._log.close()
        self._secrets.close()


class RecordingHandler(logging.Handler):
    """Writes every record, formatted with its traceback, stack and extra fields."""

    def __init__(self, recorder: Recorder) -> None:
        super().__init__(logging.NOTSET)
        self.recorder = recorder
        self.setFormatter(logging.Formatter("%(levelname)s %(name)s %(message)s"))

    def emit(self, record: logging.LogRecord) -> None:
        try:
            text = self.format(record)
            extra = {k: v for k, v in vars(record).items() if k not in _STANDARD}
            if extra:
                text += " " + repr(extra)
            self.recorder.logged(f"log {record.name}", text)
        except Exception:  # never let recording break a test; say so on stderr
            traceback.print_exc(file=sys.stderr)


# --- the process's recorder and its hooks --------------------------------------------

_recorder: Recorder | None = None


def current() -> Recorder | None:
    """This process's recorder (None when the plugin is not active)."""
    return _recorder


def _install_handler(recorder: Recorder) -> None:
    """On the root logger, and loud enough to see what a server logs by default: INFO
    everywhere, everything from ghaf. ``configure_logging`` replaces the root's
    handlers (and sets its level), so this runs again before every test."""
    root = logging.getLogger()
    replaced = recorder.handler not in root.handlers
    if replaced:
        root.addHandler(recorder.handler)
    for logger, loudest in ((root, logging.INFO), (logging.getLogger("ghaf"), logging.DEBUG)):
        if replaced or logger.level != _SET.get(logger.name):
            _ASKED[logger.name] = logger.level  # what the process set itself
            if logger.level == logging.NOTSET or logger.level > loudest:
                logger.setLevel(loudest if logger is not root or logger.level else 0)
            _SET[logger.name] = logger.level


_ASKED: dict[str, int] = {}
"""The levels the root and ``ghaf`` loggers were given by the process, not this plugin."""
_SET: dict[str, int] = {}


def _would_pass(record: logging.LogRecord) -> bool:
    """Whether ``record`` would have been logged at the levels the process set itself."""
    found = logging.Logger.manager.loggerDict.get(record.name)
    logger: logging.Logger | None = found if isinstance(found, logging.Logger) else logging.root
    while logger is not None:
        level = _ASKED.get(logger.name, logger.level)
        if level or logger is logging.root:
            return record.levelno >= level
        logger = logger.parent
    return True


def _gate_other_handlers() -> None:
    """Every other handler (pytest's report and caplog, a stderr handler) sees only what
    it would have without the lowered levels: the plugin watches, it changes nothing."""
    handle = logging.Handler.handle
    if getattr(handle, "_records_secrets", False):
        return

    def gated(self: logging.Handler, record: logging.LogRecord) -> Any:
        if not isinstance(self, RecordingHandler) and not _would_pass(record):
            return False
        return handle(self, record)

    gated._records_secrets = True  # type: ignore[attr-defined]
    logging.Handler.handle = gated  # type: ignore[method-assign]


def _wrap(owner: Any, name: str, before: Callable[..., None]) -> None:
    """Replace ``owner.name`` by a function that calls ``before(*args, **kwargs)`` first."""
    original = getattr(owner, name)
    if getattr(original, "_records_secrets", False):
        return
    raw = owner.__dict__.get(name) if isinstance(owner, type) else original
    is_static = isinstance(raw, staticmethod)
    function = raw.__func__ if isinstance(raw, staticmethod) else original

    def wrapper(*args: Any, **kwargs: Any) -> Any:
        before(*args, **kwargs)
        return function(*args, **kwargs)

    wrapper._records_secrets = True  # type: ignore[attr-defined]
    wrapper.__wrapped__ = function  # type: ignore[attr-defined]
    setattr(owner, name, staticmethod(wrapper) if is_static else wrapper)


def _hook_secrets(recorder: Recorder) -> None:
    import argon2

    from ghaf.client.client import Client, Users

    original = token_module.generate_token

    def generate_token() -> str:
        token = original()
        recorder.secret("token", token)
        return token

    # Modules that imported the function by name hold their own reference to it.
    for module in list(sys.modules.values()):
        if getattr(module, "generate_token", None) is original:
            module.generate_token = generate_token  # type: ignore[attr-defined]

    def password(value: object) -> None:
        recorder.secret("password", value)

    _wrap(argon2.PasswordHasher, "hash", lambda _self, value, **_: password(value))
    _wrap(argon2.PasswordHasher, "verify", lambda _self, _hash, value: password(value))
    _wrap(Client, "login", lambda _url, _name, value, **_: password(value))
    _wrap(Users, "create", lambda *_, password=None, **__: recorder.secret("password", password))
    _wrap(Users, "set_password", lambda _self, _name, value: password(value))


def _hook_outputs(recorder: Recorder) -> None:
    """``ghaf server`` children's output, and the audit rows of test installations."""
    from ghaf.server.process import ServerProcess

    start, stop = ServerProcess.start, ServerProcess.stop

    def started(self: ServerProcess, **kwargs: Any) -> ServerProcess:
        if self.log_path is None:  # its output would go nowhere: keep it to read
            self.log_path = Path(tempfile.mkstemp(prefix="server-", dir=recorder.folder)[1])
        self._log_offset = self.log_path.stat().st_size if self.log_path.exists() else 0  # type: ignore[attr-defined]
        return start(self, **kwargs)

    def stopped(self: ServerProcess, **kwargs: Any) -> int | None:
        code = stop(self, **kwargs)
        if self.log_path is not None and self.log_path.exists():
            with self.log_path.open("rb") as log:
                log.seek(getattr(self, "_log_offset", 0))
                output = log.read().decode("utf-8", "replace")
            if output:
                recorder.logged("ghaf server output", output)
        return code

    ServerProcess.start = started  # type: ignore[method-assign]
    ServerProcess.stop = stopped  # type: ignore[method-assign]

    conftest = sys.modules.get("tests.conftest")
    platform = getattr(conftest, "Platform", None)
    if platform is not None:
        _wrap(platform, "stop", lambda live: _record_audit(recorder, live.runtime.database))


def _record_audit(recorder: Recorder, database: Any) -> None:
    from sqlalchemy import text

    try:
        with database.engine.connect() as connection:
            rows = connection.execute(text("SELECT * FROM audit_events")).all()
    except Exception as error:  # a test may have dropped or broken its database
        recorder.logged("audit rows", f"(unreadable: {type(error).__name__})")
        return
    recorder.logged("audit rows", "\n".join(repr(tuple(row)) for row in rows))


# --- pytest hooks ---------------------------------------------------------------------

_FOLDER = pytest.StashKey[Path]()
_LEAKS = pytest.StashKey[list[Leak]]()


def pytest_configure(config: pytest.Config) -> None:
    global _recorder
    workerinput = getattr(config, "workerinput", None)
    if workerinput is not None:
        folder, worker = Path(workerinput[DIR_KEY]), str(workerinput["workerid"])
    else:
        folder, worker = Path(tempfile.mkdtemp(prefix="ghaf-secrets-in-logs-")), "main"
        config.stash[_FOLDER] = folder
    _recorder = Recorder(folder, worker)
    _install_handler(_recorder)
    _gate_other_handlers()
    _hook_secrets(_recorder)
    _hook_outputs(_recorder)


@pytest.hookimpl(optionalhook=True)
def pytest_configure_node(node: Any) -> None:
    """xdist: tell each worker where to write."""
    node.workerinput[DIR_KEY] = str(node.config.stash[_FOLDER])


@pytest.hookimpl(wrapper=True)
def pytest_runtest_protocol(item: pytest.Item) -> Iterator[None]:
    if _recorder is not None:
        _recorder.test = item.nodeid
        _install_handler(_recorder)
    try:
        return (yield)
    finally:
        if _recorder is not None:
            _recorder.flush()


@pytest.hookimpl(trylast=True)
def pytest_sessionfinish(session: pytest.Session) -> None:
    if _recorder is not None:
        _recorder.test = "<session teardown>"
        _recorder.flush()
    if getattr(session.config, "workerinput", None) is not None:
        return  # the controller judges, once every worker is done
    folder = session.config.stash.get(_FOLDER, None)
    if folder is None:
        return
    leaks = scan(folder)
    session.config.stash[_LEAKS] = leaks
    if leaks:
        session.exitstatus = pytest.ExitCode.TESTS_FAILED


def pytest_terminal_summary(terminalreporter: Any, config: pytest.Config) -> None:
    leaks = config.stash.get(_LEAKS, [])
    if leaks:
        terminalreporter.section("secrets in logs", red=True)
        for leak in leaks[:50]:
            terminalreporter.write_line(str(leak))
        if len(leaks) > 50:
            terminalreporter.write_line(f"... and {len(leaks) - 50} more")


def pytest_unconfigure(config: pytest.Config) -> None:
    global _recorder
    if _recorder is not None:
        logging.getLogger().removeHandler(_recorder.handler)
        _recorder.close()
        _recorder = None
    folder = config.stash.get(_FOLDER, None)
    if folder is not None:
        shutil.rmtree(folder, ignore_errors=True)
