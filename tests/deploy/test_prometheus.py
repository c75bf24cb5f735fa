"""deploy/prometheus/: promtool check config, check rules and test rules
(Debian's Prometheus 2.42), and the alerts' coverage by tests and docs."""

from __future__ import annotations

import re
from pathlib import Path
from typing import Any

from .tooling import ROOT, load_yaml, promtool, run

PROM = ROOT / "deploy" / "prometheus"


def alerts() -> list[dict[str, Any]]:
    rules = load_yaml(PROM / "rules.yml")
    return [r for g in rules["groups"] for r in g["rules"] if "alert" in r]


def test_promtool_check_config() -> None:
    res = run([promtool(), "check", "config", PROM / "prometheus.yml"], cwd=PROM)
    assert res.returncode == 0, res.output
    assert "SUCCESS: 1 rule files found" in res.output


def test_promtool_check_rules() -> None:
    res = run([promtool(), "check", "rules", PROM / "rules.yml"], cwd=PROM)
    assert res.returncode == 0, res.output
    assert f"SUCCESS: {len(alerts())} rules found" in res.output


def test_promtool_test_rules() -> None:
    res = run([promtool(), "test", "rules", PROM / "rules_test.yml"], cwd=PROM)
    assert res.returncode == 0, res.output
    assert "SUCCESS" in res.output


def test_promtool_test_rules_catches_a_wrong_expectation(tmp_path: Path) -> None:
    """The unit tests compare labels and annotations exactly."""
    text = (PROM / "rules_test.yml").read_text()
    assert "severity: critical" in text
    (tmp_path / "rules.yml").write_text((PROM / "rules.yml").read_text())
    (tmp_path / "rules_test.yml").write_text(text.replace("severity: critical", "severity: page"))
    res = run([promtool(), "test", "rules", tmp_path / "rules_test.yml"], cwd=tmp_path)
    assert res.returncode != 0, res.output


def test_every_alert_is_tested_firing_and_quiet() -> None:
    tests = load_yaml(PROM / "rules_test.yml")
    assert tests["rule_files"] == ["rules.yml"]
    firing: set[str] = set()
    quiet: set[str] = set()
    for case in tests["tests"]:
        for check in case.get("alert_rule_test", []):
            (firing if check.get("exp_alerts") else quiet).add(check["alertname"])
    names = {a["alert"] for a in alerts()}
    assert names - firing == set(), "alerts never shown firing"
    assert names - quiet == set(), "alerts never shown quiet"
    assert firing | quiet <= names


def github_anchor(heading: str) -> str:
    slug = heading.strip().lower()
    slug = re.sub(r"[^\w\- ]", "", slug)
    return slug.replace(" ", "-")


def test_every_alert_is_explained_in_the_operations_guide() -> None:
    docs = (ROOT / "docs" / "operations.md").read_text()
    anchors = {github_anchor(h) for h in re.findall(r"^#+ (.+)$", docs, re.M)}
    for alert in alerts():
        labels = alert["labels"]
        annotations = alert["annotations"]
        assert labels["severity"] in ("warning", "critical"), alert["alert"]
        assert {"summary", "description", "runbook_url"} <= set(annotations), alert["alert"]
        doc, _, anchor = annotations["runbook_url"].partition("#")
        assert doc == "docs/operations.md"
        assert anchor == github_anchor(alert["alert"])
        assert anchor in anchors, f"docs/operations.md has no section {alert['alert']}"
