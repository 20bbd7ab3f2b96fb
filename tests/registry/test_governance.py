"""Four-eyes approvals, the registry policy, quality gates, protected aliases, cards,
lineage and ONNX conversion."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

import ghaf
from ghaf.client import Client
from ghaf.core.errors import Conflict, InvalidInput, PermissionDenied
from tests.conftest import TrainedModel, audited


def _register(client: Client, project: str, trained: TrainedModel, name: str = "churn", **kw):
    return client.models.register(project, name, path=trained.path, sample=trained.X[:5], **kw)


def test_four_eyes_approval(
    admin: Client, project: str, trained: TrainedModel, reviewer, member_in
) -> None:
    _register(admin, project, trained)
    with pytest.raises(PermissionDenied, match="four-eyes rule: you registered version 1"):
        admin.models.approve(project, "churn", 1, comment="looks good to me")
    denied = audited(admin, project, "model:approve")
    assert denied[-1].outcome == "denied"
    _, member = member_in(project, "member")
    with pytest.raises(PermissionDenied, match="model:approve is required"):
        member.models.approve(project, "churn", 1)
    admin.models.request_approval(project, "churn", 1, comment="please review")
    name, client = reviewer
    approved = client.models.approve(project, "churn", 1, comment="AUC fine, card ok")
    assert approved.status == "approved" and approved.approvals == 1
    with pytest.raises(Conflict, match="only a pending version"):
        client.models.approve(project, "churn", 1)
    reviews = admin.models.reviews(project, "churn@latest")
    assert [(r.kind, r.principal, r.comment) for r in reviews] == [
        ("request", "admin", "please review"),
        ("approve", name, "AUC fine, card ok"),
    ]
    assert audited(admin, project, "model:approve")[-1].detail["status"] == "approved"


def test_policy_requires_n_approvals_and_card_fields(
    admin: Client, project: str, trained: TrainedModel, member_in
) -> None:
    admin.models.set_policy(
        project, "approvals:\n  required: 2\ncard:\n  required: [intended_use, owners]\n"
    )
    _register(admin, project, trained)
    _, first = member_in(project, "maintainer")
    _, second = member_in(project, "maintainer")
    with pytest.raises(Conflict, match="lacks required field\\(s\\) intended_use, owners"):
        first.models.approve(project, "churn", 1)
    card = admin.models.update_card(
        project, "churn", 1, intended_use="Churn triage", owners=["risk-team"]
    )
    assert card.missing == []
    assert first.models.approve(project, "churn", 1).status == "pending"
    with pytest.raises(Conflict, match="already approved"):
        first.models.approve(project, "churn", 1)
    done = second.models.approve(project, "churn", 1)
    assert (done.status, done.approvals, done.approvals_required) == ("approved", 2, 2)


def test_reject_needs_a_comment_and_blocks_aliases(
    admin: Client, project: str, trained: TrainedModel, reviewer
) -> None:
    _register(admin, project, trained)
    _, client = reviewer
    with pytest.raises(InvalidInput, match="needs a comment"):
        client.models.reject(project, "churn", 1, comment=" ")
    assert client.models.reject(project, "churn", 1, comment="leaks the label").status == "rejected"
    with pytest.raises(Conflict, match="rejected"):
        admin.models.set_alias(project, "churn", "challenger", 1)
    assert audited(admin, project, "model:reject")[-1].detail["comment"] == "leaks the label"


def test_policy_errors_name_the_line(admin: Client, project: str) -> None:
    cases = {
        "allow_pickle: true\napprovals:\n  requird: 2\n": "line 3: approvals.requird: unknown key",
        "gates:\n  - metric: auc\n    min: 0.8\n  - metirc: auc\n    min: 0.7\n": (
            "line 4: gates[1].metirc: unknown rule 'metirc'; did you mean 'metric'?"
        ),
        "gates:\n  - latency: {max_ms: -1}\n": "line 2: gates[0].latency.max_ms",
        "gates: [\n": "line 2: not valid YAML",
        "card: {required: [intended_us]}\n": "line 1: card.required[0]",
        "protected_aliases: [a]\nprotected_aliases: [b]\n": "line 2: key 'protected_aliases'",
    }
    for text, message in cases.items():
        with pytest.raises(InvalidInput) as refused:
            admin.models.set_policy(project, text)
        assert message in str(refused.value), (text, str(refused.value))
    assert admin.models.policy(project).text == ""  # nothing was stored


def _train_run(project: str, trained: TrainedModel, C: float) -> str:
    from sklearn.linear_model import LogisticRegression

    with ghaf.start_run("churn", project=project) as run:
        model = LogisticRegression(C=C, max_iter=500).fit(trained.X, trained.y)
        run.log_metric("validation_score", float(model.score(trained.X, trained.y)))
        run.log_metric("auc", 0.5 + C / 10)
    return run.id


@pytest.fixture
def sdk_env(admin: Client, platform, monkeypatch) -> None:
    monkeypatch.setenv("GHAF_URL", platform.url)
    monkeypatch.setenv("GHAF_TOKEN", platform.admin_token)


GATES = """\
protected_aliases: [champion]
gates:
  - metric: validation_score
    min: 0.5
  - {metric: accuracy, min: 0.6, dataset: scored, target: label}
  - no_regression: {metric: auc, margin: 0.01}
  - card_fields: [intended_use]
  - signature: required
  - safe_format: true
  - max_size_mb: 5
  - latency: {max_ms: 1000, percentile: 95, repeats: 20}
"""


def test_gates_measure_every_rule_and_guard_protected_aliases(
    admin: Client, project: str, trained: TrainedModel, reviewer, sdk_env
) -> None:
    import pandas as pd

    frame = pd.DataFrame(trained.X, columns=["a", "b", "c", "d"]).assign(label=trained.y)
    admin.datasets.create(project, "scored")
    admin.datasets.add_version(project, "scored", frame)
    admin.models.set_policy(project, GATES)
    strong = _train_run(project, trained, C=3.0)
    weak = _train_run(project, trained, C=1.0)
    first = admin.models.register(
        project,
        "churn",
        path=trained.path,
        run=strong,
        sample=trained.X[:5],
        card={"intended_use": "triage"},
    )
    _, client = reviewer
    # Protected: a pending version cannot hold it.
    with pytest.raises(Conflict, match="only an approved version may hold it"):
        admin.models.set_alias(project, "churn", "champion", 1)
    client.models.approve(project, "churn", 1)
    report = admin.models.check_gates(project, "churn", 1)
    by_kind = {r.kind: r for r in report.results}
    assert report.passed, report.results
    logged = admin.runs.get(project, strong).metrics["validation_score"]
    assert report.results[0].measured == pytest.approx(logged)
    accuracy = next(r for r in report.results if "on scored@latest" in r.rule)
    assert accuracy.passed and 0.6 <= accuracy.measured <= 1
    assert by_kind["no_regression"].detail == "no champion yet"
    assert by_kind["latency"].passed and by_kind["latency"].measured > 0
    assert admin.models.set_alias(project, "churn", "champion", 1).version == 1
    assert first.run == strong
    # A weaker, card-less version regresses and misses a card field: both fail.
    admin.models.register(project, "churn", path=trained.path, run=weak, sample=trained.X[:5])
    client.models.approve(project, "churn", 2)
    report = admin.models.check_gates(project, "churn", 2)
    failed = {r.kind: r for r in report.results if not r.passed}
    assert set(failed) == {"no_regression", "card_fields"}, report.results
    assert "champion is version 1" in failed["no_regression"].detail
    with pytest.raises(Conflict, match=r"needs passing quality gates.*no regression of auc"):
        admin.models.set_alias(project, "churn", "champion", 2)
    assert admin.models.version(project, "churn@champion").version == 1
    # Unprotected aliases need neither approval nor gates.
    assert admin.models.set_alias(project, "churn", "challenger", 2).version == 2


def test_gate_on_a_missing_metric_fails_with_a_reason(
    admin: Client, project: str, trained: TrainedModel, sdk_env
) -> None:
    run = _train_run(project, trained, C=1.0)
    admin.models.set_policy(project, "gates:\n  - {metric: f1_macro, min: 0.5}\n")
    admin.models.register(project, "churn", path=trained.path, run=run, sample=trained.X[:2])
    report = admin.models.check_gates(project, "churn", 1)
    assert not report.passed
    assert "has no metric 'f1_macro' (it has: auc, validation_score)" in report.results[0].detail
    admin.models.register(project, "plain", path=trained.path, sample=trained.X[:2])
    report = admin.models.check_gates(project, "plain", 1)
    assert "no linked run" in report.results[0].detail


def test_cards_render_and_lineage_reads_both_ways(
    admin: Client, project: str, trained: TrainedModel, sdk_env
) -> None:
    import pandas as pd

    admin.datasets.create(project, "customers")
    admin.datasets.add_version(project, "customers", pd.DataFrame({"x": [1, 2, 3]}))
    with ghaf.start_run("churn", project=project) as run:
        run.log_input("customers", 1)
        run.log_metric("auc", 0.91)
    admin.models.register(
        project,
        "churn",
        path=trained.path,
        run=run.id,
        sample=trained.X[:2],
        card={"intended_use": "Flag <b>churn</b> risk", "owners": ["risk"]},
    )
    card = admin.models.card(project, "churn", 1)
    assert card.card.evaluation == {"auc": 0.91}  # from the linked run
    assert "## Intended use" in card.markdown and "| auc | 0.91 |" in card.markdown
    assert "Flag &lt;b&gt;churn&lt;/b&gt; risk" in card.html and "<b>churn</b>" not in card.html
    with pytest.raises(InvalidInput, match="unknown card field"):
        admin.models.update_card(project, "churn", 1, intended_usage="x")
    lineage = admin.models.lineage(project, "churn", 1)
    assert lineage.run["id"] == run.id
    assert lineage.datasets == [{"dataset": "customers", "version": 1, "via": "run"}]
    consumers = admin.datasets.lineage(project, "customers", 1).consumers
    assert {"kind": "model", "id": admin.models.version(project, "churn", 1).id} in consumers


@pytest.mark.parametrize("flavour", ["sklearn", "xgboost", "lightgbm"])
def test_onnx_conversion_is_checked_and_linked(
    admin: Client, project: str, trained: TrainedModel, tmp_path: Path, flavour: str
) -> None:
    import onnxruntime as ort

    if flavour == "sklearn":
        path = trained.path
    elif flavour == "xgboost":
        import xgboost as xgb

        booster = xgb.train({"objective": "binary:logistic"}, xgb.DMatrix(trained.X, trained.y), 5)
        path = tmp_path / "model.json"
        booster.save_model(path)
    else:
        import lightgbm as lgb

        params = {"objective": "regression", "verbose": -1}
        booster = lgb.train(params, lgb.Dataset(trained.X, trained.X[:, 0]), 5)
        path = tmp_path / "model.txt"
        booster.save_model(path)
    version = admin.models.register(
        project, flavour, path=path, sample=trained.X[:20], convert_onnx=True
    )
    assert version.onnx is not None and version.onnx.max_abs_diff <= 1e-3
    converted = admin.models.download(project, flavour, 1, destination=tmp_path, onnx=True)
    session = ort.InferenceSession(str(converted))
    outputs = session.run(None, {session.get_inputs()[0].name: trained.X[:3].astype(np.float32)})
    assert outputs[0].shape[0] == 3
    assert admin.models.lineage(project, flavour, 1).onnx["sha256"] == version.onnx.sha256
