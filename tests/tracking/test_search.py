"""Run search: the filter grammar, ordering, paging, and hostile filters."""

from __future__ import annotations

import pytest

from ghaf.client import Client
from ghaf.core.errors import InvalidInput, NotFound
from ghaf.tracking.batches import LogBatch, metrics_table
from ghaf.tracking.filters import parse_filter


@pytest.fixture
def seeded(admin: Client, project: str) -> dict[str, str]:
    """Six runs in 'search' (and one in 'other') with known params, metrics and tags."""
    ids = {}
    for i, (model, auc, team) in enumerate(
        [
            ("rf", 0.95, "risk"),
            ("rf", 0.85, "risk"),
            ("lr", 0.92, "risk"),
            ("rf", 0.97, "ops"),
            ("gbm", 0.91, "risk"),
            ("rf", 0.99, "risk"),
        ]
    ):
        run = admin.runs.create(project, "search", name=f"r{i}", tags={"team": team})
        # auc's history ends at the value above: search must use the latest point.
        table = metrics_table(["auc", "auc", "loss"], [0.1, auc, 1 - auc], [0, 1, 0], [1, 2, 3])
        status = "failed" if i == 5 else "finished"
        admin.runs.log(
            project, run.id, LogBatch(metrics=table, params={"model": model}, status=status)
        )
        ids[f"r{i}"] = run.id
    other = admin.runs.create(project, "other", name="elsewhere")
    admin.runs.log(project, other.id, LogBatch(metrics=metrics_table(["auc"], [0.99], [0], [1])))
    ids["other"] = other.id
    return ids


def _names(runs: list) -> list[str]:  # type: ignore[type-arg]
    return [r.name for r in runs]


def test_filter_and_order(admin: Client, project: str, seeded: dict[str, str]) -> None:
    found = admin.runs.search(
        project,
        "search",
        filter="metrics.auc > 0.9 and params.model = 'rf' and tags.team = 'risk'",
        order_by=["metrics.auc desc"],
    )
    assert _names(found) == ["r5", "r0"]
    assert found[0].metrics["auc"] == 0.99 and found[0].params == {"model": "rf"}
    assert _names(
        admin.runs.search(
            project,
            "search",
            filter="status = 'failed' or params.model in ('lr', 'gbm')",
            order_by=["metrics.loss asc"],
        )
    ) == ["r5", "r2", "r4"]
    assert _names(
        admin.runs.search(project, "search", filter="name like 'r%' and metrics.auc <= 0.85")
    ) == ["r1"]
    assert _names(admin.runs.search(project, "search", filter="tags.team != 'risk'")) == ["r3"]
    assert _names(
        admin.runs.search(project, "search", filter="params.model not in ('rf')", order_by=["name"])
    ) == ["r2", "r4"]
    # Every experiment of the project when none is named.
    assert "elsewhere" in _names(admin.runs.search(project, filter="metrics.auc >= 0.99"))
    assert not admin.runs.search(project, "search", filter="metrics.missing > 0")
    assert len(admin.runs.search(project, "search", filter="metrics.missing is null")) == 6


def test_cursor_paging(admin: Client, project: str, seeded: dict[str, str]) -> None:
    seen = []
    cursor = None
    while True:
        page = admin.runs.search(
            project, "search", order_by=["metrics.auc desc"], page_size=4, cursor=cursor
        )
        seen += _names(page)
        cursor = page.next_cursor
        if cursor is None:
            break
    assert seen == ["r5", "r3", "r0", "r2", "r4", "r1"]
    assert len(admin.runs.list(project, "search", page_size=2)) == 6
    with pytest.raises(InvalidInput, match="cursor"):
        admin.runs.search(project, "search", cursor="garbage")
    url = f"/api/v1/projects/{project}/runs:search"
    for retired in ({"max_results": 4}, {"limit": 4}):
        with pytest.raises(InvalidInput):  # one word for paging: page_size
            admin.request("POST", url, json=retired)
    for size in (0, 1001):
        with pytest.raises(InvalidInput) as bad:
            admin.request("POST", url, json={"page_size": size})
        assert bad.value.field == "page_size"


def test_syntax_errors_name_the_position(admin: Client, project: str) -> None:
    cases = {
        "metrics.auc >": "position 14",
        "metrics.auc > 0.9 and": "position 22",
        "metrics.auc 0.9": "position 13",
        "foo.bar = 1": "position 1",
        "metrics.auc = 'high'": "position 15",
        "(metrics.auc > 1": "position 17",
        "params.model > 'a'": "position 16",
    }
    for text, where in cases.items():
        with pytest.raises(InvalidInput, match=where):
            admin.runs.search(project, filter=text)
    with pytest.raises(InvalidInput, match="status 'done' is not one of"):
        admin.runs.search(project, filter="status = 'done'")
    with pytest.raises(InvalidInput, match="order_by syntax error at position 13"):
        admin.runs.search(project, order_by=["metrics.auc sideways"])
    with pytest.raises(NotFound, match="no experiment"):
        admin.runs.search(project, "nope")


def test_injection_is_rejected_or_harmless(
    admin: Client, project: str, seeded: dict[str, str]
) -> None:
    for hostile in (
        "params.model = 'rf'; DROP TABLE runs; --",
        "params.model = 'rf' -- comment",
        "metrics.auc > 0 union select * from principals",
        "params.model = 'rf'' OR ''1''=''1'",
    ):
        with pytest.raises(InvalidInput, match="syntax error"):
            admin.runs.search(project, filter=hostile)
    # Quotes inside a value are data, bound as a parameter, never SQL.
    for harmless in (
        "params.model = 'x\\' OR 1=1 --'",
        "tags.`team') OR 1=1 --` = 'a'",
    ):
        assert not admin.runs.search(project, "search", filter=harmless)
    assert len(admin.runs.search(project, "search")) == 6


def test_the_parser_never_evaluates() -> None:
    node = parse_filter('params.x = \'__import__("os").system("false")\'')
    assert node is not None and node.value == '__import__("os").system("false")'  # type: ignore[union-attr]
