"""Model cards: structured fields, rendered to Markdown and HTML.

Training data names dataset versions (``customers@3``) and evaluation comes from the
version's run, so both are links, not prose. A project's policy lists the fields a
version's card must fill before it can be approved.
"""

from __future__ import annotations

import html
import math
from typing import Any

from pydantic import BaseModel, ConfigDict, Field

CARD_FIELDS = (
    "intended_use",
    "limitations",
    "training_data",
    "evaluation",
    "ethical_considerations",
    "fairness",
    "owners",
)
TITLES = {
    "intended_use": "Intended use",
    "limitations": "Limitations",
    "training_data": "Training data",
    "evaluation": "Evaluation",
    "ethical_considerations": "Ethical considerations",
    "fairness": "Fairness",
    "owners": "Owners",
}
MAX_TEXT = 20_000


class ModelCard(BaseModel):
    """What a reviewer needs to judge a model. Every field may be updated later."""

    model_config = ConfigDict(extra="forbid")

    intended_use: str = Field("", max_length=MAX_TEXT)
    limitations: str = Field("", max_length=MAX_TEXT)
    training_data: list[str] = Field(
        default_factory=list, description="Dataset versions, as name@version."
    )
    evaluation: dict[str, float] = Field(
        default_factory=dict, description="Metrics; the linked run's metrics when empty."
    )
    ethical_considerations: str = Field("", max_length=MAX_TEXT)
    fairness: str = Field("", max_length=MAX_TEXT)
    owners: list[str] = Field(default_factory=list)


def missing(card: ModelCard, required: list[str] | tuple[str, ...]) -> list[str]:
    """The required fields ``card`` leaves empty."""
    return [name for name in required if not getattr(card, name)]


def _value(value: Any) -> str:
    if isinstance(value, float):
        return str(value) if not math.isfinite(value) else f"{value:.6g}"
    return str(value)


def _sections(card: ModelCard) -> list[tuple[str, str | list[str] | dict[str, float]]]:
    return [(TITLES[name], getattr(card, name)) for name in CARD_FIELDS]


def to_markdown(card: ModelCard, *, title: str, facts: dict[str, Any]) -> str:
    lines = [f"# {title}", ""]
    lines += [f"- **{key}**: {_value(value)}" for key, value in facts.items() if value]
    for heading, value in _sections(card):
        lines += ["", f"## {heading}", ""]
        if isinstance(value, dict):
            lines += ["| metric | value |", "|---|---|"]
            lines += [f"| {k} | {_value(v)} |" for k, v in value.items()] or []
            if not value:
                lines = [*lines[:-2], "_not given_"]
        elif isinstance(value, list):
            lines += [f"- {item}" for item in value] or ["_not given_"]
        else:
            lines.append(value or "_not given_")
    return "\n".join(lines) + "\n"


def to_html(card: ModelCard, *, title: str, facts: dict[str, Any]) -> str:
    """A standalone page; every value is escaped."""
    e = html.escape
    parts = [
        "<!doctype html>",
        '<html lang="en"><head><meta charset="utf-8">',
        f"<title>{e(title)}</title>",
        "<style>body{font:15px/1.5 system-ui,sans-serif;max-width:48rem;margin:2rem auto;"
        "padding:0 1rem}table{border-collapse:collapse}td,th{border:1px solid #ccc;"
        "padding:.2rem .6rem}.empty{color:#888}</style></head><body>",
        f"<h1>{e(title)}</h1>",
        "<ul>",
        *(f"<li><b>{e(k)}</b>: {e(_value(v))}</li>" for k, v in facts.items() if v),
        "</ul>",
    ]
    for heading, value in _sections(card):
        parts.append(f"<h2>{e(heading)}</h2>")
        if not value:
            parts.append('<p class="empty">not given</p>')
        elif isinstance(value, dict):
            rows = "".join(
                f"<tr><td>{e(k)}</td><td>{e(_value(v))}</td></tr>" for k, v in value.items()
            )
            parts.append(f"<table><tr><th>metric</th><th>value</th></tr>{rows}</table>")
        elif isinstance(value, list):
            parts.append("<ul>" + "".join(f"<li>{e(item)}</li>" for item in value) + "</ul>")
        else:
            parts.append("".join(f"<p>{e(p)}</p>" for p in value.split("\n\n")))
    parts.append("</body></html>")
    return "\n".join(parts) + "\n"
