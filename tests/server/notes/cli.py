"""The domain's CLI group."""

from __future__ import annotations

import typer

from ghaf.console.output import console

notes = typer.Typer(help="Sample notes.", no_args_is_help=True)


@notes.command("hello")
def hello(name: str) -> None:
    """Greet a note."""
    console.print(f"hello, note {name}")
