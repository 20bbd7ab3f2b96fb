"""What the CLI prints is never read as Rich markup: square brackets survive."""

from __future__ import annotations

import pytest
import typer
from pydantic import BaseModel

from ghaf.console import output
from ghaf.core.errors import InvalidInput


class _Row(BaseModel):
    name: str


def test_fail_keeps_brackets(capsys: pytest.CaptureFixture[str]) -> None:
    with pytest.raises(typer.Exit):
        output.fail("ONNX conversion needs onnxmltools: pip install 'ghaf[onnx-convert]'")
    assert "pip install 'ghaf[onnx-convert]'" in capsys.readouterr().err


def test_errors_keep_their_text_and_field(capsys: pytest.CaptureFixture[str]) -> None:
    with pytest.raises(typer.Exit) as exited, output.reporting_errors():
        raise InvalidInput("use [bold]x[/bold] or ghaf[s3]", field="policy")
    assert exited.value.exit_code == output.EXIT_USAGE
    assert "use [bold]x[/bold] or ghaf[s3] [policy]" in capsys.readouterr().err


def test_tables_items_and_messages_keep_brackets(capsys: pytest.CaptureFixture[str]) -> None:
    output.print_table([_Row(name="[red]a[/red]")], ["name"])
    output.print_item({"hint": "pip install 'ghaf[s3]'"})
    output.done("stored [x].txt", as_json=False)
    printed = capsys.readouterr().out
    assert "[red]a[/red]" in printed
    assert "ghaf[s3]" in printed
    assert "stored [x].txt" in printed
