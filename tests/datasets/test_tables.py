"""Tabular versions: DataFrames and Parquet, schema and profile, classification, diff."""

from __future__ import annotations

import math
from pathlib import Path

import numpy as np
import pandas as pd
import polars as pl
import pyarrow as pa
import pyarrow.parquet as pq
import pytest

from ghaf.client import Client
from ghaf.core.errors import InvalidInput, NotFound
from ghaf.datasets.profile import profile


def _frame(rows: int = 1000, shift: float = 0.0) -> pd.DataFrame:
    rng = np.random.default_rng(7)
    income = rng.normal(50_000 + shift, 10_000, rows)
    income[::50] = np.nan
    return pd.DataFrame(
        {
            "customer_id": np.arange(rows),
            "income": income,
            "segment": rng.choice(["retail", "sme", "corporate"], rows),
            "defaulted": rng.random(rows) < 0.1,
        }
    )


def test_profile_is_vectorised_and_complete() -> None:
    stats = profile(pa.Table.from_pandas(_frame(), preserve_index=False))
    assert stats["rows"] == 1000
    income = stats["columns"]["income"]
    assert math.isclose(income["null_rate"], 0.02)
    assert set(income) >= {
        "min",
        "max",
        "mean",
        "std",
        "quantiles",
        "histogram",
        "distinct_estimate",
    }
    assert sum(income["histogram"]["counts"]) == 980
    assert {t["value"] for t in stats["columns"]["segment"]["top"]} == {
        "retail",
        "sme",
        "corporate",
    }


def test_profile_keeps_nan_and_inf_visible() -> None:
    table = pa.table({"x": [1.0, float("inf"), float("nan")]})
    stats = profile(table)["columns"]["x"]
    assert stats["max"] in ("inf", "nan")  # JSON-safe, not silently dropped


@pytest.mark.parametrize("kind", ["pandas", "polars", "arrow"])
def test_dataframe_versions_read_back(admin: Client, project: str, kind: str) -> None:
    frame = _frame()
    data = {
        "pandas": frame,
        "polars": pl.from_pandas(frame),
        "arrow": pa.Table.from_pandas(frame, preserve_index=False),
    }[kind]
    admin.datasets.create(project, f"credit-{kind}")
    version = admin.datasets.add_version(project, f"credit-{kind}", data)
    assert version.row_count == 1000
    assert [c["name"] for c in version.table_schema or []] == list(frame.columns)
    assert version.profile is not None and "income" in version.profile["columns"]
    back = admin.datasets.to_pandas(project, f"credit-{kind}")
    pd.testing.assert_frame_equal(back, frame)
    assert admin.datasets.to_polars(project, f"credit-{kind}").height == 1000
    relation = admin.datasets.duckdb(project, f"credit-{kind}")
    assert relation.filter("defaulted").count("*").fetchall()[0][0] == int(frame.defaulted.sum())


def test_parquet_file_gets_a_profile(admin: Client, project: str, tmp_path: Path) -> None:
    path = tmp_path / "loans.parquet"
    pq.write_table(pa.Table.from_pandas(_frame(), preserve_index=False), path)
    admin.datasets.create(project, "loans")
    version = admin.datasets.add_version(project, "loans", path)
    assert version.row_count == 1000
    broken = tmp_path / "broken.parquet"
    broken.write_bytes(b"not parquet")
    with pytest.raises(InvalidInput, match="not a readable Parquet"):
        admin.datasets.add_version(project, "loans", broken)


def test_unsupported_columns_are_named(admin: Client, project: str) -> None:
    admin.datasets.create(project, "bad-table")
    nested = pa.table({"ok": [1, 2], "tags": [["a"], ["b", "c"]]})
    with pytest.raises(InvalidInput, match="column 'tags'") as info:
        admin.datasets.add_version(project, "bad-table", nested)
    assert info.value.field == "columns.tags"
    mixed = pd.DataFrame({"fine": [1, 2], "mixed": [1, "two"]})
    with pytest.raises(InvalidInput, match="column 'mixed'"):
        admin.datasets.add_version(project, "bad-table", mixed)
    with pytest.raises(InvalidInput, match="cannot version a dict"):
        admin.datasets.add_version(project, "bad-table", {"a": 1})
    assert admin.datasets.versions(project, "bad-table") == []


def test_classification_is_inherited_until_changed(admin: Client, project: str) -> None:
    admin.datasets.create(project, "people")
    admin.datasets.add_version(project, "people", _frame(100))
    admin.datasets.classify(project, "people", "customer_id", "pii")
    second = admin.datasets.add_version(project, "people", _frame(200))
    assert second.classifications == {"customer_id": "pii"}
    admin.datasets.classify(project, "people", "customer_id", "sensitive")
    assert admin.datasets.version(project, "people", 1).classifications == {"customer_id": "pii"}
    assert admin.datasets.version(project, "people", 2).classifications == {
        "customer_id": "sensitive"
    }
    with pytest.raises(NotFound, match="no column 'nope'"):
        admin.datasets.classify(project, "people", "nope", "pii")
    with pytest.raises(InvalidInput):
        admin.datasets.classify(project, "people", "income", "secret")


def test_diff_files_schema_rows_and_moved_stats(
    admin: Client, project: str, tmp_path: Path
) -> None:
    admin.datasets.create(project, "drift")
    admin.datasets.add_version(project, "drift", _frame(1000))
    changed = _frame(1200, shift=25_000).drop(columns=["segment"])
    changed["score"] = 1.0
    admin.datasets.add_version(project, "drift", changed)
    result = admin.datasets.diff(project, "drift", 1, "latest")
    assert result.changed == ["data.parquet"] and not result.added and not result.removed
    assert (result.rows_before, result.rows_after) == (1000, 1200)
    changes = {(c.column, c.change) for c in result.schema_changes}
    assert changes == {("segment", "removed"), ("score", "added")}
    assert result.moved_columns[0].column == "income"
    lineage = admin.datasets.lineage(project, "drift", 2)
    assert lineage.parents == [1] and lineage.consumers == []
