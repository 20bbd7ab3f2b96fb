"""What the CLI prints is never read as Rich markup: square brackets survive."""

from __future__ import annotations

import io

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


class _Event(BaseModel):
    seq: int
    ts: str
    actor: str
    project: str
    action: str
    resource: str
    outcome: str
    client: str


AUDIT_COLUMNS = ("seq", "ts", "actor", "project", "action", "resource", "outcome", "client")


def _events(count: int) -> list[_Event]:
    return [
        _Event(
            seq=i,
            ts="2026-12-02 13:32:56",
            actor="service-account:risk/trainer-with-a-long-name",
            project="0193b4c2-7d1e-7c3a-9f00-4b1d2e3f4a5b",
            action="model:request-approval",
            resource="model:0193b4c2-7d1e-7c3a-9f00-4b1d2e3f4a5b/versions/12",
            outcome="denied",
            client="127.0.0.1 python-httpx/0.29 ghaf-sdk",
        )
        for i in range(count)
    ]


def _render(monkeypatch: pytest.MonkeyPatch, width: int, rows: list[_Event]) -> str:
    from rich.console import Console

    wide = Console(markup=False, emoji=False, width=width, record=True, file=io.StringIO())
    monkeypatch.setattr(output, "console", wide)
    output.print_table(rows, AUDIT_COLUMNS, title="audit trail")
    return wide.export_text()


def test_wide_tables_stay_readable_at_80_columns(monkeypatch: pytest.MonkeyPatch) -> None:
    text = _render(monkeypatch, 80, _events(3))
    lines = text.splitlines()
    assert max(len(line) for line in lines) <= 80
    header = next(line for line in lines if "seq" in line and "┃" in line)
    cells = [cell.strip() for cell in header.strip("┃").split("┃")]
    widths = [len(cell) - 2 for cell in header.strip("┃").split("┃")]
    # Every column shown is at least its header or 8 wide: no one-letter columns.
    assert all(w >= min(8, len(c)) and w >= len(c) for c, w in zip(cells, widths, strict=True))
    assert cells[0] == "seq" and "outcome" in cells  # the name first; short ones fit
    hidden = [c for c in AUDIT_COLUMNS if c not in cells]
    assert hidden, "at 80 columns something has to give"
    assert f"(not shown at 80 columns: {', '.join(hidden)}; a wider terminal or --json" in text
    # Folded, never cut: a shown cell's text is all there.
    assert "denied" in text and "…" not in text


def test_wide_terminals_show_every_column(monkeypatch: pytest.MonkeyPatch) -> None:
    text = _render(monkeypatch, 300, _events(2))
    assert "not shown" not in text
    assert all(column in text for column in AUDIT_COLUMNS)


def test_a_page_says_how_to_get_the_next_one(monkeypatch: pytest.MonkeyPatch) -> None:
    from rich.console import Console

    from ghaf.core.paging import Page

    narrow = Console(markup=False, emoji=False, width=40, record=True, file=io.StringIO())
    monkeypatch.setattr(output, "console", narrow)
    cursor = "eyJzZXEiOiAxMjM0NTY3ODkwMTIzNDU2Nzg5MH0"
    output.print_page(Page[_Row](items=[_Row(name="a")], next_cursor=cursor), ["name"])
    last = narrow.export_text().splitlines()[-1]
    assert last.startswith("1 shown, there are more; next page: --cursor " + cursor)
