"""Turning DataFrames and Parquet files into what a tabular version records."""

from __future__ import annotations

from pathlib import Path
from typing import Any

from ghaf.core.errors import InvalidInput


def to_arrow(data: Any) -> Any:
    """A pyarrow Table from a pyarrow Table, a pandas or a polars DataFrame."""
    import pyarrow as pa

    if isinstance(data, pa.Table):
        return data
    module = type(data).__module__.split(".")[0]
    if module == "polars":
        return data.to_arrow()
    if module == "pandas":
        try:
            return pa.Table.from_pandas(data, preserve_index=False)
        except (pa.ArrowInvalid, pa.ArrowTypeError) as exc:
            column = _failing_pandas_column(data)
            raise InvalidInput(
                f"column {column!r} cannot be stored as a table column: {exc}",
                field=f"columns.{column}",
            ) from None
    raise InvalidInput(
        f"cannot version a {type(data).__name__}: give a file or folder path, a pandas or "
        "polars DataFrame, or a pyarrow Table",
        field="source",
    )


def _failing_pandas_column(frame: Any) -> str:
    import pyarrow as pa

    for column in frame.columns:
        try:
            pa.array(frame[column])
        except (pa.ArrowInvalid, pa.ArrowTypeError):
            return str(column)
    return "?"


def write_parquet(table: Any, path: Path) -> None:
    import pyarrow.parquet as pq

    from ghaf.datasets.profile import check_types

    check_types(table.schema)
    pq.write_table(table, path, compression="zstd")


def table_info(table: Any) -> dict[str, Any]:
    from ghaf.datasets.profile import profile, schema_json

    return {"table_schema": schema_json(table.schema), "profile": profile(table)}


def parquet_info(path: Path) -> dict[str, Any]:
    import pyarrow.parquet as pq

    try:
        table = pq.read_table(path)
    except Exception as exc:  # a damaged or non-Parquet file named .parquet
        raise InvalidInput(f"{path} is not a readable Parquet file: {exc}", field="path") from None
    return table_info(table)
