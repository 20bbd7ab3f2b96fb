"""JSON value types shared by the domains' schemas.

Free-form JSON that a request may carry (provenance, profiles, samples), bounded:
Python parses deeply nested JSON happily, but such a value is stored and later fails to
serialise (Pydantic stops at its maximum depth), so a run or version would answer 500
on every read. A value nested deeper than :data:`MAX_JSON_DEPTH` is refused on the way
in, naming its field. And :data:`JsonFloat`, a float that keeps NaN and infinities.
"""

from __future__ import annotations

import math
from typing import Annotated, Any

from pydantic import AfterValidator, PlainSerializer

MAX_JSON_DEPTH = 32


def bounded_depth(value: Any, *, limit: int = MAX_JSON_DEPTH) -> Any:
    """``value`` unchanged, or ``ValueError`` if its lists and objects nest past ``limit``."""
    stack: list[tuple[Any, int]] = [(value, 1)]
    while stack:
        item, depth = stack.pop()
        if isinstance(item, dict | list):
            if depth > limit:
                raise ValueError(f"nested deeper than {limit} levels of lists and objects")
            children = item.values() if isinstance(item, dict) else item
            stack.extend((child, depth + 1) for child in children)
    return value


JsonObject = Annotated[dict[str, Any], AfterValidator(bounded_depth)]
"""A JSON object of any content, nested at most :data:`MAX_JSON_DEPTH` levels."""


def _json_float(value: float) -> float | str:
    """JSON has no NaN or infinity: they travel as the strings Python's float() reads."""
    if math.isfinite(value):
        return value
    if math.isnan(value):
        return "NaN"
    return "Infinity" if value > 0 else "-Infinity"


JsonFloat = Annotated[float, PlainSerializer(_json_float, return_type=Any, when_used="json")]
"""A float that keeps NaN and +-inf through JSON (as "NaN", "Infinity", "-Infinity")."""
