"""deploy/prometheus/rules.yml: it parses, covers what an on-call operator must hear about, and every
expression names only metrics and labels that fallback_daemon/metrics.py declares (no alert watches nothing).
"""

from __future__ import annotations

import pathlib
import re
from typing import Any

import yaml

from tests.unit.test_deploy import TARGET_LABELS, declared_metrics, parse_promql

ROOT = pathlib.Path(__file__).resolve().parents[2]
RULES = ROOT / "deploy" / "prometheus" / "rules.yml"
METRICS_TEST = ROOT / "tests" / "integration" / "test_metrics.py"
DURATION = re.compile(r"\boffset\s+\d+[smhdwy]\b")


def rules() -> list[dict[str, Any]]:
    doc = yaml.safe_load(RULES.read_text())
    return [rule for group in doc["groups"] for rule in group["rules"]]


def used(expr: str) -> tuple[set[str], set[str]]:
    return parse_promql(DURATION.sub(" ", expr))


def test_rules_are_well_formed_alerts() -> None:
    """Every rule is an alert with an expression, a severity and a summary; names are unique."""
    found = rules()
    assert found
    for rule in found:
        assert set(rule) <= {"alert", "expr", "for", "labels", "annotations"}, rule
        assert rule["alert"].startswith("Fallback") and rule["expr"].strip(), rule
        assert rule["labels"]["severity"] in {"critical", "warning", "info"}, rule["alert"]
        assert rule["annotations"]["summary"], rule["alert"]
        if "for" in rule:
            assert re.fullmatch(r"\d+[smh]", rule["for"]), rule["alert"]
    names = [r["alert"] for r in found]
    assert len(names) == len(set(names))


def test_rules_cover_what_the_operator_must_hear_about() -> None:
    """Feed down, fallback-rate spike, overdue timers, SMS without receipt and dead letters are alerted on."""
    watched = {name for rule in rules() for name in used(rule["expr"])[0]}
    assert {
        "fallback_feed_gate_closed",
        "fallback_fired_total",
        "fallback_overdue_timers",
        "fallback_sms_without_receipt",
        "fallback_dead_letters_total",
    } <= watched


def test_expressions_name_only_declared_metrics_and_labels() -> None:
    """Each metric in each expression is declared in metrics.py, with the labels the expression uses."""
    declared = declared_metrics()
    for rule in rules():
        metric_names, labels = used(rule["expr"])
        assert metric_names, rule["alert"]
        unknown = metric_names - set(declared)
        assert not unknown, f"{rule['alert']}: {sorted(unknown)} not in metrics.py"
        allowed = set().union(*(declared[m].labels for m in metric_names)) | TARGET_LABELS
        assert labels <= allowed, f"{rule['alert']}: labels {sorted(labels - allowed)} not declared"


def test_every_alerted_metric_is_shown_moving() -> None:
    """The metrics behind the alerts appear in tests/integration/test_metrics.py, which makes them move."""
    moving = METRICS_TEST.read_text()
    for rule in rules():
        for name in used(rule["expr"])[0]:
            assert f'"{name}"' in moving, f"{rule['alert']}: no test makes {name} move"
