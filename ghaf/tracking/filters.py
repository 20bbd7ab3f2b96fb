"""The run search language: a small grammar, parsed here and never evaluated.

    filter   := or
    or       := and ("or" and)*
    and      := atom ("and" atom)*
    atom     := "(" or ")" | compare
    compare  := field op value
              | field ["not"] "in" "(" value ("," value)* ")"
              | field ["not"] ("like" | "ilike") string
              | field "is" ["not"] "null"
    field    := ("metrics" | "params" | "tags") "." key | ["attributes" "."] attribute
    order_by := field ["asc" | "desc"]

A key is letters, digits and ``_ - . /``, or anything inside backticks. A metric means
its latest value. The result is a tree of :class:`Compare`, :class:`And` and :class:`Or`
nodes, turned into SQL with bound parameters by :mod:`ghaf.tracking.query`. Every error
names the position (1-based) where the input stopped making sense.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from datetime import UTC, datetime

from ghaf.core.errors import InvalidInput

METRIC, PARAM, TAG, ATTRIBUTE = "metric", "param", "tag", "attribute"
_KINDS = {
    "metrics": METRIC,
    "metric": METRIC,
    "params": PARAM,
    "param": PARAM,
    "tags": TAG,
    "tag": TAG,
    "attributes": ATTRIBUTE,
    "attribute": ATTRIBUTE,
    "attr": ATTRIBUTE,
}
# Attribute name -> its type: text, status or time.
ATTRIBUTES = {
    "id": "text",
    "run_id": "text",
    "name": "text",
    "run_name": "text",
    "status": "status",
    "created_by": "text",
    "experiment": "text",
    "start_time": "time",
    "end_time": "time",
}
_KEYWORDS = {"and", "or", "not", "in", "like", "ilike", "is", "null", "asc", "desc"}
_TOKEN = re.compile(
    r"""
    (?P<space>\s+)
  | (?P<number>[-+]?(?:\d+\.?\d*|\.\d+)(?:[eE][-+]?\d+)?(?![A-Za-z_]))
  | (?P<field>[A-Za-z_][A-Za-z0-9_]*(?:\.(?:`[^`]*`|[A-Za-z0-9_\-./]+))?)
  | (?P<string>'(?:[^'\\]|\\.)*'|"(?:[^"\\]|\\.)*")
  | (?P<op>>=|<=|!=|<>|==|=|<|>)
  | (?P<punct>[(),])
    """,
    re.VERBOSE,
)
COMPARE_OPS = {"=", "!=", "<", "<=", ">", ">="}


@dataclass(frozen=True)
class Field:
    kind: str
    key: str


@dataclass(frozen=True)
class Compare:
    field: Field
    op: str  # = != < <= > >= in not-in like not-like ilike not-ilike is-null is-not-null
    value: float | str | datetime | tuple[str, ...] | None


@dataclass(frozen=True)
class And:
    items: tuple[Node, ...]


@dataclass(frozen=True)
class Or:
    items: tuple[Node, ...]


Node = Compare | And | Or


@dataclass(frozen=True)
class OrderKey:
    field: Field
    descending: bool


@dataclass
class _Token:
    kind: str  # number, field, keyword, string, op, punct, end
    text: str
    position: int  # 1-based


def _error(what: str, token: _Token, source: str) -> InvalidInput:
    found = "the end of the filter" if token.kind == "end" else repr(token.text)
    return InvalidInput(
        f"{source} syntax error at position {token.position}: {what}, found {found}",
        field=source,
        position=token.position,
    )


def _tokens(text: str, source: str) -> list[_Token]:
    tokens: list[_Token] = []
    position = 0
    while position < len(text):
        match = _TOKEN.match(text, position)
        if match is None:
            raise InvalidInput(
                f"{source} syntax error at position {position + 1}: unexpected character "
                f"{text[position]!r}",
                field=source,
                position=position + 1,
            )
        kind = match.lastgroup or ""
        value = match.group()
        if kind != "space":
            if kind == "field" and value.lower() in _KEYWORDS:
                kind, value = "keyword", value.lower()
            tokens.append(_Token(kind, value, position + 1))
        position = match.end()
    tokens.append(_Token("end", "", len(text) + 1))
    return tokens


class _Parser:
    def __init__(self, text: str, source: str) -> None:
        self.source = source
        self.tokens = _tokens(text, source)
        self.index = 0

    @property
    def token(self) -> _Token:
        return self.tokens[self.index]

    def take(self) -> _Token:
        token = self.tokens[self.index]
        self.index += 1
        return token

    def accept(self, kind: str, text: str | None = None) -> _Token | None:
        token = self.token
        if token.kind == kind and (text is None or token.text == text):
            return self.take()
        return None

    def expect(self, kind: str, text: str, what: str) -> _Token:
        token = self.accept(kind, text)
        if token is None:
            raise _error(what, self.token, self.source)
        return token

    def parse_or(self) -> Node:
        items = [self.parse_and()]
        while self.accept("keyword", "or"):
            items.append(self.parse_and())
        return items[0] if len(items) == 1 else Or(tuple(items))

    def parse_and(self) -> Node:
        items = [self.parse_atom()]
        while self.accept("keyword", "and"):
            items.append(self.parse_atom())
        return items[0] if len(items) == 1 else And(tuple(items))

    def parse_atom(self) -> Node:
        if self.accept("punct", "("):
            node = self.parse_or()
            self.expect("punct", ")", "expected ')'")
            return node
        return self.parse_compare()

    def parse_field(self) -> Field:
        token = self.token
        if token.kind != "field":
            raise _error(
                "expected a field such as metrics.auc, params.model, tags.team or status",
                token,
                self.source,
            )
        self.take()
        prefix, dot, key = token.text.partition(".")
        kind = _KINDS.get(prefix.lower()) if dot else ATTRIBUTE
        if kind is None:
            raise _error(
                "expected metrics., params., tags. or attributes. before the key",
                token,
                self.source,
            )
        name = key if dot else prefix
        if name.startswith("`"):
            name = name[1:-1]
        if not name:
            raise _error("expected a key after the dot", token, self.source)
        if kind == ATTRIBUTE:
            name = name.lower()
            if name not in ATTRIBUTES:
                known = ", ".join(sorted(ATTRIBUTES))
                raise _error(f"expected a run attribute ({known})", token, self.source)
        return Field(kind, name)

    def parse_compare(self) -> Compare:
        field = self.parse_field()
        negated = bool(self.accept("keyword", "not"))
        if self.accept("keyword", "in"):
            return self._check(field, "not-in" if negated else "in", self.parse_list())
        for word in ("like", "ilike"):
            if self.accept("keyword", word):
                token = self.token
                if token.kind != "string":
                    raise _error(f"expected a quoted pattern after {word}", token, self.source)
                pattern = self.parse_value()
                return self._check(field, f"not-{word}" if negated else word, pattern, token)
        if negated:
            raise _error("expected 'in', 'like' or 'ilike' after 'not'", self.token, self.source)
        if self.accept("keyword", "is"):
            op = "is-not-null" if self.accept("keyword", "not") else "is-null"
            self.expect("keyword", "null", "expected 'null'")
            return Compare(field, op, None)
        token = self.token
        if token.kind != "op":
            raise _error(
                "expected a comparison (=, !=, <, <=, >, >=, in, like, ilike, is null)",
                token,
                self.source,
            )
        self.take()
        op = {"==": "=", "<>": "!="}.get(token.text, token.text)
        value_token = self.token
        return self._check(field, op, self.parse_value(), value_token)

    def parse_value(self) -> float | str:
        token = self.token
        if token.kind == "number":
            self.take()
            return float(token.text)
        if token.kind == "string":
            self.take()
            return re.sub(r"\\(.)", r"\1", token.text[1:-1])
        raise _error("expected a number or a quoted string", token, self.source)

    def parse_list(self) -> tuple[str, ...]:
        self.expect("punct", "(", "expected '(' to start the list")
        values = [self._text(self.parse_value())]
        while self.accept("punct", ","):
            values.append(self._text(self.parse_value()))
        self.expect("punct", ")", "expected ',' or ')'")
        return tuple(values)

    @staticmethod
    def _text(value: float | str) -> str:
        if isinstance(value, float):
            return str(int(value)) if value.is_integer() else repr(value)
        return value

    def _check(
        self,
        field: Field,
        op: str,
        value: float | str | tuple[str, ...],
        token: _Token | None = None,
    ) -> Compare:
        """Type rules: metrics compare numbers; params, tags and text compare strings."""
        at = token or self.tokens[self.index - 1]
        kind = field.kind
        attribute_type = ATTRIBUTES.get(field.key) if kind == ATTRIBUTE else None
        if kind == METRIC:
            if op not in COMPARE_OPS:
                raise _error(
                    f"metrics compare with {', '.join(sorted(COMPARE_OPS))}", at, self.source
                )
            if not isinstance(value, float):
                raise _error("expected a number for a metric", at, self.source)
            return Compare(field, op, value)
        if attribute_type == "time":
            if op not in COMPARE_OPS:
                raise _error("times compare with =, !=, <, <=, > or >=", at, self.source)
            return Compare(field, op, _time(value, at, self.source))
        if op in {"<", "<=", ">", ">="}:
            raise _error(
                f"{kind}s are text: compare them with =, !=, in, like or ilike", at, self.source
            )
        if isinstance(value, tuple):
            return Compare(field, op, value)
        return Compare(field, op, self._text(value))


def _time(value: object, token: _Token, source: str) -> datetime:
    from ghaf.core.clock import as_utc

    if isinstance(value, float):
        return datetime.fromtimestamp(value / 1000, tz=UTC)
    if isinstance(value, str):
        try:
            return as_utc(datetime.fromisoformat(value))
        except ValueError:
            pass
    raise _error(
        "expected a time: milliseconds since the epoch or an ISO 8601 string", token, source
    )


def parse_filter(text: str) -> Node | None:
    """The filter's tree, or ``None`` for an empty filter."""
    if not text.strip():
        return None
    parser = _Parser(text, "filter")
    node = parser.parse_or()
    if parser.token.kind != "end":
        raise _error("expected 'and', 'or' or the end of the filter", parser.token, "filter")
    return node


def parse_order_by(text: str) -> OrderKey:
    """One ``order_by`` entry: a field and an optional ``asc``/``desc``."""
    parser = _Parser(text, "order_by")
    field = parser.parse_field()
    descending = False
    if parser.accept("keyword", "desc"):
        descending = True
    else:
        parser.accept("keyword", "asc")
    if parser.token.kind != "end":
        raise _error("expected 'asc', 'desc' or the end", parser.token, "order_by")
    return OrderKey(field, descending)
