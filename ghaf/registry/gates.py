"""Quality gates: each rule of the policy's ``gates`` list, measured and judged.

The service gathers the facts in one read transaction (:class:`GateFacts`); this module
measures what needs the model itself (latency, metrics on a dataset version) in the
checker's child process, outside any transaction, and returns one result per rule.
"""

from __future__ import annotations

import math
import tempfile
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from ghaf.core.errors import InvalidInput
from ghaf.registry import policy as policies
from ghaf.registry import sandbox
from ghaf.registry.cards import ModelCard, missing
from ghaf.registry.checks import write_file
from ghaf.registry.formats import SAFE_FORMATS, Trust
from ghaf.registry.schemas import GateResult

Reader = Callable[[], Iterable[bytes]]


@dataclass
class Baseline:
    """The version an alias names, for no-regression rules."""

    version: int
    is_self: bool
    run: str | None
    metrics: dict[str, float] | None


@dataclass
class GateFacts:
    model: str
    version: int
    format: str
    filename: str
    size: int
    inputs: list[dict[str, Any]]
    outputs: list[dict[str, Any]]
    card: ModelCard
    run: str | None
    metrics: dict[str, float] | None
    sample_npz: bytes
    trust: Trust
    read_model: Reader
    rules: list[policies.Gate]
    baselines: dict[str, Baseline | None] = field(default_factory=dict)
    tables: dict[str, tuple[str, Reader] | str] = field(default_factory=dict)  # or an error


def _bound(rule: policies.MetricGate) -> str:
    parts = []
    if rule.min is not None:
        parts.append(f">= {rule.min:g}")
    if rule.max is not None:
        parts.append(f"<= {rule.max:g}")
    return " and ".join(parts)


def _within(rule: policies.MetricGate, value: float) -> bool:
    if math.isnan(value):
        return False
    return (rule.min is None or value >= rule.min) and (rule.max is None or value <= rule.max)


def table_key(rule: policies.MetricGate) -> str:
    return f"{rule.dataset}@{rule.version}"


def label(rule: policies.Gate) -> str:
    if rule.name:
        return rule.name
    if isinstance(rule, policies.MetricGate):
        where = f" on {table_key(rule)}" if rule.dataset else ""
        return f"{rule.metric}{where} {_bound(rule)}"
    if isinstance(rule, policies.NoRegressionGate):
        r = rule.no_regression
        return f"no regression of {r.metric} vs {r.against} (margin {r.margin:g})"
    if isinstance(rule, policies.CardFieldsGate):
        return f"card fields: {', '.join(rule.card_fields)}"
    if isinstance(rule, policies.SignatureGate):
        return "signature required"
    if isinstance(rule, policies.SafeFormatGate):
        return "safe format"
    if isinstance(rule, policies.MaxSizeGate):
        return f"size <= {rule.max_size_mb:g} MB"
    assert isinstance(rule, policies.LatencyGate)
    lat = rule.latency
    return f"p{lat.percentile} latency <= {lat.max_ms:g} ms ({lat.repeats} runs)"


class _Measurer:
    """Runs child jobs lazily, once per kind, sharing one copy of the model file."""

    def __init__(self, facts: GateFacts, folder: Path, timeout_s: float) -> None:
        self.facts = facts
        self.folder = folder
        self.timeout_s = timeout_s
        self._model: Path | None = None
        self._cache: dict[str, dict[str, Any]] = {}

    def _job(self, action: str, **extra: Any) -> dict[str, Any]:
        if self._model is None:
            self._model = write_file(self.folder, self.facts.filename, self.facts.read_model())
            (self.folder / "sample.npz").write_bytes(self.facts.sample_npz)
        return {
            "action": action,
            "format": self.facts.format,
            "model": str(self._model),
            "sample": str(self.folder / "sample.npz"),
            "skops_types": list(self.facts.trust.skops_types),
            "pickle_globals": list(self.facts.trust.pickle_globals),
        } | extra

    def latency(self, repeats: int) -> dict[str, Any]:
        key = f"latency:{repeats}"
        if key not in self._cache:
            self._cache[key] = sandbox.run(
                self._job("latency", repeats=repeats),
                folder=self.folder,
                timeout_s=self.timeout_s,
                what="latency",
            )
        return self._cache[key]

    def evaluate(self, key: str, metrics: list[str], target: str) -> dict[str, Any]:
        cache_key = f"evaluate:{key}:{target}"
        if cache_key not in self._cache:
            source = self.facts.tables[key]
            if isinstance(source, str):
                raise InvalidInput(source, field="dataset")
            filename, read = source
            data = write_file(self.folder, "table-" + filename, read())
            self._cache[cache_key] = sandbox.run(
                self._job(
                    "evaluate",
                    data=str(data),
                    target=target,
                    metrics=metrics,
                    inputs=self.facts.inputs,
                ),
                folder=self.folder,
                timeout_s=self.timeout_s,
                what=f"evaluation on {key}",
            )
        return self._cache[cache_key]


def evaluate(facts: GateFacts, *, timeout_s: float) -> list[GateResult]:
    with tempfile.TemporaryDirectory(prefix="ghaf-gates-") as folder:
        measurer = _Measurer(facts, Path(folder), timeout_s)
        dataset_metrics: dict[str, list[str]] = {}
        for rule in facts.rules:
            if isinstance(rule, policies.MetricGate) and rule.dataset:
                dataset_metrics.setdefault(table_key(rule), []).append(rule.metric)
        return [_judge(rule, facts, measurer, dataset_metrics) for rule in facts.rules]


def _result(
    rule: policies.Gate, kind: str, passed: bool, measured: Any, expected: str, detail: str = ""
) -> GateResult:
    return GateResult(
        rule=label(rule),
        kind=kind,
        passed=passed,
        measured=measured,
        expected=expected,
        detail=detail,
    )


def _judge(
    rule: policies.Gate,
    facts: GateFacts,
    measurer: _Measurer,
    dataset_metrics: dict[str, list[str]],
) -> GateResult:
    try:
        return _judge_rule(rule, facts, measurer, dataset_metrics)
    except InvalidInput as exc:
        return _result(rule, _kind(rule), False, None, "", str(exc))


def _kind(rule: policies.Gate) -> str:
    for kind, model in policies.GATE_KINDS.items():
        if isinstance(rule, model):
            return kind
    return "?"


def _run_metric(facts: GateFacts, metric: str) -> tuple[float | None, str]:
    if facts.run is None or facts.metrics is None:
        return None, "the version has no linked run to read metrics from"
    if metric not in facts.metrics:
        known = ", ".join(sorted(facts.metrics)) or "none"
        return None, f"run {facts.run} has no metric {metric!r} (it has: {known})"
    return facts.metrics[metric], f"from run {facts.run}"


def _judge_rule(
    rule: policies.Gate,
    facts: GateFacts,
    measurer: _Measurer,
    dataset_metrics: dict[str, list[str]],
) -> GateResult:
    kind = _kind(rule)
    if isinstance(rule, policies.MetricGate):
        if rule.dataset:
            key = table_key(rule)
            assert rule.target is not None
            answer = measurer.evaluate(key, sorted(set(dataset_metrics[key])), rule.target)
            value = answer["metrics"][rule.metric]
            detail = f"computed on {key} ({answer['rows']} rows, target {rule.target})"
        else:
            found, detail = _run_metric(facts, rule.metric)
            if found is None:
                return _result(rule, kind, False, None, _bound(rule), detail)
            value = found
        return _result(rule, kind, _within(rule, value), value, _bound(rule), detail)
    if isinstance(rule, policies.NoRegressionGate):
        r = rule.no_regression
        expected = f"{'>=' if r.higher_is_better else '<='} {r.against} " + (
            f"{'-' if r.higher_is_better else '+'} {r.margin:g}"
        )
        baseline = facts.baselines.get(r.against)
        if baseline is None:
            return _result(rule, kind, True, None, expected, f"no {r.against} yet")
        if baseline.is_self:
            return _result(rule, kind, True, None, expected, f"this version is {r.against}")
        value, detail = _run_metric(facts, r.metric)
        if value is None:
            return _result(rule, kind, False, None, expected, detail)
        if baseline.metrics is None or r.metric not in baseline.metrics:
            return _result(
                rule,
                kind,
                False,
                value,
                expected,
                f"{r.against} (version {baseline.version}) has no {r.metric!r} to compare",
            )
        base = baseline.metrics[r.metric]
        delta = value - base
        passed = delta >= -r.margin if r.higher_is_better else delta <= r.margin
        return _result(
            rule,
            kind,
            passed and not math.isnan(delta),
            value,
            expected,
            f"{r.against} is version {baseline.version} with {base:.6g} (change {delta:+.6g})",
        )
    if isinstance(rule, policies.CardFieldsGate):
        gaps = missing(facts.card, rule.card_fields)
        return _result(
            rule,
            kind,
            not gaps,
            "complete" if not gaps else f"missing {', '.join(gaps)}",
            "all filled",
        )
    if isinstance(rule, policies.SignatureGate):
        present = bool(facts.inputs) and bool(facts.outputs)
        return _result(rule, kind, present, "present" if present else "missing", "present")
    if isinstance(rule, policies.SafeFormatGate):
        safe = facts.format in SAFE_FORMATS
        return _result(rule, kind, safe, facts.format, " / ".join(SAFE_FORMATS))
    if isinstance(rule, policies.MaxSizeGate):
        size_mb = facts.size / 1e6
        return _result(
            rule,
            kind,
            size_mb <= rule.max_size_mb,
            round(size_mb, 3),
            f"<= {rule.max_size_mb:g} MB",
        )
    assert isinstance(rule, policies.LatencyGate)
    lat = rule.latency
    answer = measurer.latency(lat.repeats)
    measured = answer[f"p{lat.percentile}"]
    return _result(
        rule,
        kind,
        measured <= lat.max_ms,
        round(measured, 4),
        f"<= {lat.max_ms:g} ms",
        f"predicting the sample of v{facts.version} {answer['repeats']} times",
    )
