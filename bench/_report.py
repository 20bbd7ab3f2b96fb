"""The table and JSON line every bench script ends with (DESIGN.md "Benchmarks")."""

from __future__ import annotations

import json
from typing import Any

COLUMNS = ("case", "unit", "peer", "peer_value", "ghaf_value", "ratio", "goal", "met")
HEADINGS = ("workload", "unit", "peer", "peer", "ghaf", "ratio", "goal", "met")


def case(
    name: str,
    unit: str,
    peer: str,
    peer_value: float,
    ghaf_value: float,
    ratio: float,
    goal: str,
    met: bool | None,
    *,
    digits: int = 1,
) -> dict[str, Any]:
    """One row; ``met`` is None where the row has no goal."""
    return {
        "case": name,
        "unit": unit,
        "peer": peer,
        "peer_value": round(peer_value, digits),
        "ghaf_value": round(ghaf_value, digits),
        "ratio": round(ratio, 3),
        "goal": goal,
        "met": met,
    }


def _cell(row: dict[str, Any], column: str) -> str:
    if column == "met":
        return "-" if row["met"] is None else ("yes" if row["met"] else "NO")
    return str(row[column])


def print_report(bench: str, cases: list[dict[str, Any]], *, note: str) -> None:
    """A side-by-side table, then one JSON object as the last line."""
    cells = [[_cell(row, c) for c in COLUMNS] for row in cases]
    widths = [max(len(h), *(len(r[i]) for r in cells)) for i, h in enumerate(HEADINGS)]
    numeric = {3, 4, 5}

    def line(values: list[str] | tuple[str, ...]) -> str:
        return "  ".join(
            v.rjust(w) if i in numeric else v.ljust(w)
            for i, (v, w) in enumerate(zip(values, widths, strict=True))
        )

    print(note)
    print(line(HEADINGS))
    print("-" * len(line(HEADINGS)))
    for row in cells:
        print(line(row))
    print(json.dumps({"bench": bench, "cases": cases}))
