"""Schema and statistics profile of a table, computed with vectorised pyarrow kernels.

The profile is plain JSON: drift monitoring later uses it as its reference.
"""

from __future__ import annotations

import math
from typing import Any

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc

from ghaf.core.errors import InvalidInput

QUANTILES = (0.05, 0.25, 0.5, 0.75, 0.95)
TOP_K = 10
BINS = 20


def check_types(schema: pa.Schema) -> None:
    """Refuse column types the store cannot profile, naming the column."""
    for field in schema:
        kind = field.type
        nested = (
            pa.types.is_list(kind)
            or pa.types.is_large_list(kind)
            or pa.types.is_struct(kind)
            or pa.types.is_map(kind)
            or pa.types.is_union(kind)
            or pa.types.is_null(kind)
        )
        if nested:
            raise InvalidInput(
                f"column {field.name!r} has type {kind}, which datasets do not support; "
                "use numbers, strings, booleans, dates, timestamps or binary",
                field=f"columns.{field.name}",
            )


def schema_json(schema: pa.Schema) -> list[dict[str, Any]]:
    return [{"name": f.name, "type": str(f.type), "nullable": f.nullable} for f in schema]


def _number(value: Any) -> float | int | str | None:
    if value is None:
        return None
    if isinstance(value, float):
        return value if math.isfinite(value) else str(value)  # JSON has no NaN/inf
    if isinstance(value, int | bool):
        return value
    return str(value)


def _column(column: pa.ChunkedArray) -> dict[str, Any]:
    rows = len(column)
    nulls = column.null_count
    kind = column.type
    out: dict[str, Any] = {
        "type": str(kind),
        "null_rate": nulls / rows if rows else 0.0,
        "distinct_estimate": pc.count_distinct(column).as_py(),
    }
    if pa.types.is_dictionary(kind):
        column = column.cast(kind.value_type)
        kind = kind.value_type
    numeric = pa.types.is_integer(kind) or pa.types.is_floating(kind) or pa.types.is_decimal(kind)
    if (
        numeric
        or pa.types.is_temporal(kind)
        or pa.types.is_string(kind)
        or pa.types.is_large_string(kind)
    ):
        bounds = pc.min_max(column).as_py()
        out["min"], out["max"] = _number(bounds["min"]), _number(bounds["max"])
    if numeric and rows - nulls > 0:
        values = column.cast(pa.float64())
        out["mean"] = _number(pc.mean(values).as_py())
        out["std"] = _number(pc.stddev(values).as_py())
        out["quantiles"] = {
            str(q): _number(v)
            for q, v in zip(
                QUANTILES, pc.tdigest(values, q=list(QUANTILES)).to_pylist(), strict=True
            )
        }
        finite = values.drop_null().to_numpy()
        finite = finite[np.isfinite(finite)]
        if finite.size:
            counts, edges = np.histogram(finite, bins=BINS)
            out["histogram"] = {
                "edges": [float(e) for e in edges],
                "counts": [int(c) for c in counts],
            }
    if not numeric and (
        pa.types.is_string(kind) or pa.types.is_large_string(kind) or pa.types.is_boolean(kind)
    ):
        counts = pc.value_counts(column.drop_null())
        pairs = sorted(
            zip(
                counts.field("values").to_pylist(), counts.field("counts").to_pylist(), strict=True
            ),
            key=lambda p: -p[1],
        )[:TOP_K]
        out["top"] = [{"value": _number(v), "count": c} for v, c in pairs]
    return out


def profile(table: pa.Table) -> dict[str, Any]:
    """Row count and per-column null rate, min/max/mean/std, quantiles, distinct count,
    top categories and histogram."""
    check_types(table.schema)
    return {
        "rows": table.num_rows,
        "columns": {name: _column(table.column(name)) for name in table.column_names},
    }
