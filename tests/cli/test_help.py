"""Every command's help, walked from the Typer app itself (every group, every command):
each has help text, each option says what it does, boolean options are flags, and the
lazy ``ghaf`` command (ghaf/cli/index.py) shows exactly what the eager one would."""

from __future__ import annotations

import re
from collections.abc import Iterator
from importlib import import_module
from typing import Any

import pytest
import typer
from typer.core import TyperArgument, TyperOption
from typer.testing import CliRunner

from ghaf.cli.index import COMMANDS
from ghaf.cli.main import app, build_cli
from ghaf.domains import DOMAINS

# What a boolean rendered as a value looks like: `--json <bool>`, `--json BOOLEAN`.
_BOOL_AS_VALUE = re.compile(r"--[\w-]+(?: / --[\w-]+)?\s+(?:<bool(?:ean)?>|BOOLEAN)", re.I)


def _walk(command: Any, ctx: typer.Context, path: tuple[str, ...]) -> Iterator[Any]:
    yield path, command, ctx
    if hasattr(command, "list_commands"):  # a group
        for name in command.list_commands(ctx):
            sub = command.get_command(ctx, name)
            assert sub is not None, f"{' '.join(path)} lists {name} but has no such command"
            yield from _walk(sub, typer.Context(sub, info_name=name, parent=ctx), (*path, name))


def _commands(root: typer.Typer) -> list[tuple[tuple[str, ...], Any, typer.Context]]:
    command = typer.main.get_command(root)
    return list(_walk(command, typer.Context(command, info_name="ghaf"), ("ghaf",)))


def test_the_walk_reaches_every_group() -> None:
    paths = {" ".join(path) for path, _, _ in _commands(app)}
    for entry in COMMANDS:
        assert f"ghaf {entry.name}" in paths
    assert {"ghaf admin init", "ghaf audit ls", "ghaf models policy show"} <= paths
    assert len(paths) > 80


def _type_name(param: Any) -> str:
    """The parameter's type name: click's ``type.name`` (typer < 0.28) or the
    ``bare_type()`` of typer's own parameters (0.28 and later)."""
    kind = getattr(param, "type", None)
    if kind is not None:
        return str(kind.name).lower()
    return str(param.bare_type()).lower()


def test_every_command_and_option_has_help_and_booleans_are_flags() -> None:
    problems: list[str] = []
    for path, command, ctx in _commands(app):
        where = " ".join(path)
        if not (command.help or command.short_help):
            problems.append(f"{where}: no help text (a docstring or help=)")
        for param in command.params:
            if isinstance(param, TyperOption):
                if param.name != "help" and not param.help:
                    problems.append(f"{where} {'/'.join(param.opts)}: no help text")
                if _type_name(param) in ("bool", "boolean") and not param.is_flag:
                    problems.append(f"{where} {param.opts[0]}: a boolean that takes a value")
            elif isinstance(param, TyperArgument):
                assert _type_name(param) not in ("bool", "boolean"), where
        text = command.get_help(ctx)
        for match in _BOOL_AS_VALUE.finditer(text):
            problems.append(f"{where}: renders {match.group(0)!r}")
    assert problems == [], "\n".join(problems)


def test_boolean_flags_render_as_flags() -> None:
    runner = CliRunner()
    upload = runner.invoke(app, ["artifacts", "upload", "--help"], env={"COLUMNS": "120"})
    assert "--overwrite / --no-overwrite" in upload.output
    init = runner.invoke(app, ["admin", "init", "--help"], env={"COLUMNS": "120"})
    assert re.search(r"^\s+--json\s+Print", init.output, re.M), init.output
    assert "<bool" not in init.output and "BOOLEAN" not in init.output


def test_the_index_is_what_the_domains_declare() -> None:
    """ghaf/cli/index.py lists the very commands build_cli() adds, in its order, with
    their help; a group added to a manifest without its line there fails here."""
    eager = typer.main.get_command(build_cli())
    assert [entry.name for entry in COMMANDS] == list(eager.commands)  # type: ignore[attr-defined]
    declared: dict[str, Any] = {}
    for domain in DOMAINS:
        declared.update(domain.cli)
    for entry in COMMANDS:
        real = eager.commands[entry.name]  # type: ignore[attr-defined]
        # The index holds the first paragraph: what `ghaf --help` shows of it.
        assert entry.help == " ".join(real.help.split("\n\n")[0].split()), entry.name
        module, _, attribute = entry.target.partition(":")
        target = getattr(import_module(module), attribute)
        if entry.name in declared:  # a domain's: the very object its manifest names
            assert target is declared[entry.name], entry.name
        assert isinstance(target, typer.Typer) == hasattr(real, "list_commands"), entry.name


@pytest.mark.parametrize("columns", ["80", "200"])
def test_lazy_and_eager_help_are_identical(columns: str) -> None:
    runner = CliRunner()
    eager = build_cli()
    for path, _, _ in _commands(eager):
        args = [*path[1:], "--help"]
        lazy_help = runner.invoke(app, args, env={"COLUMNS": columns})
        eager_help = runner.invoke(eager, args, env={"COLUMNS": columns})
        assert lazy_help.exit_code == eager_help.exit_code == 0, (path, lazy_help.output)
        assert lazy_help.output == eager_help.output, path


def test_a_group_missing_from_the_index_still_runs(monkeypatch: pytest.MonkeyPatch) -> None:
    """Until its line is added, a domain's group is found through the domains."""
    from ghaf.cli import index, main

    monkeypatch.setattr(main, "COMMANDS", tuple(e for e in index.COMMANDS if e.name != "keys"))
    lazy = typer.Typer(cls=main._LazyRoot, **main._SETTINGS)
    lazy.callback()(main._root)
    shown = CliRunner().invoke(lazy, ["keys", "--help"])
    assert shown.exit_code == 0 and "rotate" in shown.output
