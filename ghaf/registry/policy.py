"""A project's registry policy: one YAML document, validated with errors that name the
line (see docs/registry.md for every key).

```yaml
allow_pickle: false           # scanned pickles may be registered (needs model:trust)
approvals: {required: 2}      # four-eyes approvals before a version is approved
card: {required: [intended_use, owners]}
protected_aliases: [champion] # need approved status and passing gates
gates:
  - metric: validation_score  # from the version's run
    min: 0.8
  - {metric: accuracy, min: 0.8, dataset: customers, target: churned}
  - no_regression: {metric: validation_score, margin: 0.01}
  - latency: {max_ms: 20, percentile: 95, repeats: 100}
```
"""

from __future__ import annotations

import difflib
from typing import Annotated, Any, Literal

import yaml
from pydantic import BaseModel, ConfigDict, Field, ValidationError, model_validator

from ghaf.core.errors import InvalidInput
from ghaf.registry.cards import CARD_FIELDS
from ghaf.registry.checker import METRICS

Loc = tuple[str | int, ...]


class _Strict(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)


class Approvals(_Strict):
    required: Annotated[int, Field(ge=1, le=10)] = 1


class Card(_Strict):
    required: list[Literal[CARD_FIELDS]] = []  # type: ignore[valid-type]


class MetricGate(_Strict):
    name: str | None = None
    metric: Annotated[str, Field(min_length=1)]
    min: float | None = None
    max: float | None = None
    dataset: str | None = None
    version: int | str = "latest"
    target: str | None = None

    @model_validator(mode="after")
    def _bounded(self) -> MetricGate:
        if self.min is None and self.max is None:
            raise ValueError("a metric gate needs min or max")
        if self.dataset is not None:
            if self.target is None:
                raise ValueError("a metric gate on a dataset needs target (the label column)")
            if self.metric not in METRICS:
                raise ValueError(
                    f"metric {self.metric!r} cannot be computed on a dataset; "
                    f"use one of {', '.join(METRICS)}"
                )
        return self


class Regression(_Strict):
    metric: Annotated[str, Field(min_length=1)]
    margin: Annotated[float, Field(ge=0)] = 0.0
    against: str = "champion"
    higher_is_better: bool = True


class NoRegressionGate(_Strict):
    name: str | None = None
    no_regression: Regression


class CardFieldsGate(_Strict):
    name: str | None = None
    card_fields: list[Literal[CARD_FIELDS]]  # type: ignore[valid-type]


class SignatureGate(_Strict):
    name: str | None = None
    signature: Literal["required"]


class SafeFormatGate(_Strict):
    name: str | None = None
    safe_format: Literal[True]


class MaxSizeGate(_Strict):
    name: str | None = None
    max_size_mb: Annotated[float, Field(gt=0)]


class Latency(_Strict):
    max_ms: Annotated[float, Field(gt=0)]
    percentile: Literal[50, 95, 99] = 95
    repeats: Annotated[int, Field(ge=1, le=10_000)] = 100


class LatencyGate(_Strict):
    name: str | None = None
    latency: Latency


Gate = (
    MetricGate
    | NoRegressionGate
    | CardFieldsGate
    | SignatureGate
    | SafeFormatGate
    | MaxSizeGate
    | LatencyGate
)
GATE_KINDS: dict[str, type[_Strict]] = {
    "metric": MetricGate,
    "no_regression": NoRegressionGate,
    "card_fields": CardFieldsGate,
    "signature": SignatureGate,
    "safe_format": SafeFormatGate,
    "max_size_mb": MaxSizeGate,
    "latency": LatencyGate,
}


class Policy(_Strict):
    allow_pickle: bool = False
    pickle_allow: list[str] = []
    trusted_types: list[str] = []
    approvals: Approvals = Approvals()
    card: Card = Card()
    protected_aliases: list[str] = []
    gates: list[Any] = []

    def gate_rules(self) -> list[Gate]:
        return list(self.gates)


DEFAULT = Policy()


# --- YAML with line numbers -------------------------------------------------------------

MAX_DEPTH = 32


class _PolicyLoader(yaml.SafeLoader):  # type: ignore[misc]  # yaml is untyped here
    """SafeLoader without aliases and with bounded nesting.

    An alias lets ~300 bytes expand to 10^6 leaves ("billion laughs") or refer to itself;
    a policy never needs one, so any alias is refused while composing, before anything
    is expanded. Depth is bounded so a deeply nested document cannot exhaust the stack.
    """

    def __init__(self, stream: str) -> None:
        super().__init__(stream)
        self._depth = 0

    def compose_node(self, parent: yaml.Node | None, index: Any) -> yaml.Node | None:
        if self.check_event(yaml.AliasEvent):
            event = self.peek_event()
            line = event.start_mark.line + 1
            raise InvalidInput(
                f"line {line}: YAML aliases (*{event.anchor}) are not allowed in a policy; "
                "write the value out",
                field="policy",
                line=line,
            )
        self._depth += 1
        try:
            if self._depth > MAX_DEPTH:
                line = self.peek_event().start_mark.line + 1
                raise InvalidInput(
                    f"line {line}: the policy is nested more than {MAX_DEPTH} levels deep",
                    field="policy",
                    line=line,
                )
            node: yaml.Node | None = super().compose_node(parent, index)
            return node
        finally:
            self._depth -= 1


def _construct(node: yaml.Node) -> Any:
    """A key or scalar's value, built by the safe constructors from the node itself (a
    round trip through ``yaml.serialize`` fails on some nodes, an empty ``?`` key, and a
    tag they do not know is refused as bad input, not a server error)."""
    loader = yaml.SafeLoader("")
    try:
        return loader.construct_object(node, deep=True)
    except yaml.YAMLError as exc:
        line = node.start_mark.line + 1
        problem = getattr(exc, "problem", None) or str(exc)
        raise InvalidInput(f"line {line}: {problem}", field="policy", line=line) from None
    finally:
        loader.dispose()


def _plain(node: yaml.Node, path: Loc, lines: dict[Loc, int]) -> Any:
    lines[path] = node.start_mark.line + 1
    if isinstance(node, yaml.MappingNode):
        out: dict[str, Any] = {}
        for key_node, value_node in node.value:
            if not isinstance(key_node, yaml.ScalarNode):  # `? [a, b]`: not hashable
                line = key_node.start_mark.line + 1
                raise InvalidInput(
                    f"line {line}: a key must be a plain word", field="policy", line=line
                )
            key = _construct(key_node)
            if key in out:
                raise InvalidInput(
                    f"line {key_node.start_mark.line + 1}: key {key!r} appears twice",
                    field="policy",
                    line=key_node.start_mark.line + 1,
                )
            out[str(key)] = _plain(value_node, (*path, str(key)), lines)
        return out
    if isinstance(node, yaml.SequenceNode):
        return [_plain(item, (*path, i), lines) for i, item in enumerate(node.value)]
    return _construct(node)


def _line(lines: dict[Loc, int], loc: Loc) -> int:
    for end in range(len(loc), -1, -1):
        if loc[:end] in lines:
            return lines[loc[:end]]
    return 1


def _where(loc: Loc) -> str:
    text = ""
    for part in loc:
        text += f"[{part}]" if isinstance(part, int) else (f".{part}" if text else part)
    return text or "policy"


def _fail(lines: dict[Loc, int], loc: Loc, message: str) -> InvalidInput:
    line = _line(lines, loc)
    return InvalidInput(f"line {line}: {_where(loc)}: {message}", field="policy", line=line)


def _from_pydantic(error: ValidationError, lines: dict[Loc, int], prefix: Loc) -> InvalidInput:
    first = error.errors()[0]
    loc = (*prefix, *(p for p in first["loc"] if not str(p).startswith("function-")))
    message = first["msg"]
    if first["type"] == "extra_forbidden":
        name = str(loc[-1])
        model_fields: list[str] = []
        parent = loc[:-1]
        if parent and parent[0] == "gates" and len(parent) >= 2:
            model_fields = [*list(GATE_KINDS), "name", "min", "max", "dataset", "target"]
        else:
            model_fields = list(Policy.model_fields)
        close = difflib.get_close_matches(name, model_fields, n=1)
        message = f"unknown key {name!r}" + (f"; did you mean {close[0]!r}?" if close else "")
    elif first["type"] == "value_error":
        message = message.removeprefix("Value error, ")
    return _fail(lines, loc, message)


def parse(text: str) -> Policy:
    """Validate a policy document; ``InvalidInput`` names the line of the first problem."""
    lines: dict[Loc, int] = {}
    try:
        root = yaml.compose(text, Loader=_PolicyLoader)
    except yaml.YAMLError as exc:
        mark = getattr(exc, "problem_mark", None)
        line = mark.line + 1 if mark is not None else 1
        problem = getattr(exc, "problem", None) or str(exc)
        raise InvalidInput(
            f"line {line}: not valid YAML: {problem}", field="policy", line=line
        ) from None
    data = {} if root is None else _plain(root, (), lines)
    if not isinstance(data, dict):
        raise _fail(lines, (), "the policy must be a mapping of keys (allow_pickle, gates, ...)")
    try:
        policy = Policy.model_validate(data)
    except ValidationError as exc:
        raise _from_pydantic(exc, lines, ()) from None
    gates: list[Any] = []
    for index, rule in enumerate(data.get("gates") or []):
        loc: Loc = ("gates", index)
        if not isinstance(rule, dict):
            raise _fail(lines, loc, "a gate is a mapping such as {metric: auc, min: 0.8}")
        kinds = [k for k in GATE_KINDS if k in rule]
        if len(kinds) != 1:
            unknown = [k for k in rule if k not in GATE_KINDS and k != "name"]
            rules = f"a gate names one rule: {', '.join(GATE_KINDS)}"
            if kinds:
                raise _fail(lines, loc, f"names {', '.join(kinds)}; {rules}")
            close = difflib.get_close_matches(unknown[0], GATE_KINDS, n=1) if unknown else []
            hint = f"; did you mean {close[0]!r}?" if close else ""
            raise _fail(
                lines,
                (*loc, unknown[0]) if unknown else loc,
                f"unknown rule {unknown[0]!r}{hint} ({rules})" if unknown else rules,
            )
        try:
            gates.append(GATE_KINDS[kinds[0]].model_validate(rule))
        except ValidationError as exc:
            raise _from_pydantic(exc, lines, loc) from None
    return policy.model_copy(update={"gates": gates})


def dump(policy: Policy) -> str:
    text: str = yaml.safe_dump(policy.model_dump(mode="json", exclude_none=True), sort_keys=False)
    return text
