"""deploy/metrics.txt is the metrics contract: every dashboard query, alert
rule and autoscaling metric may only use the names it lists (plus their
histogram _bucket/_sum/_count and counter _total/_created forms, and `up`),
with the labels it lists. Expressions are parsed with Prometheus' own PromQL
grammar (npm @prometheus-io/lezer-promql). A test on the code side checks
that the code exports exactly these names."""

from __future__ import annotations

import re
from pathlib import Path
from typing import Any

import pytest

from .tooling import (
    ROOT,
    TARGET_LABELS,
    dashboard_queries,
    load_yaml,
    load_yaml_all,
    metrics_contract,
    rule_expressions,
    run_node_json,
)

NAME = re.compile(r"^[a-zA-Z_:][a-zA-Z0-9_:]*$")


def allowed_series() -> dict[str, tuple[str, ...]]:
    """series name -> the labels a selector on it may use"""
    out: dict[str, tuple[str, ...]] = {"up": ()}
    for metric in metrics_contract().values():
        for series in metric.series_names():
            labels = metric.labels + (("le",) if series.endswith("_bucket") else ())
            out[series] = labels
    return out


def all_expressions() -> list[tuple[str, str]]:
    rules = load_yaml(ROOT / "deploy" / "prometheus" / "rules.yml")
    exprs = rule_expressions(rules["groups"], "rules.yml")
    for doc in load_yaml_all((ROOT / "k8s" / "base" / "monitoring.yaml").read_text()):
        if doc["kind"] == "PrometheusRule":
            exprs += rule_expressions(doc["spec"]["groups"], "PrometheusRule")
    return exprs + dashboard_queries()


@pytest.fixture(scope="module")
def parsed(node_ws: Path) -> list[tuple[str, str, dict[str, Any]]]:
    exprs = all_expressions()
    results = run_node_json(node_ws, "promql.mjs", [e for _, e in exprs])
    assert len(results) == len(exprs)
    return [(where, expr, res) for (where, expr), res in zip(exprs, results, strict=True)]


def test_contract_file_is_well_formed() -> None:
    metrics = metrics_contract()
    assert len(metrics) >= 20
    for m in metrics.values():
        assert NAME.match(m.name)
        assert m.name.startswith(("xmppd_", "process_", "python_")), m.name
        if m.type == "counter":
            assert m.name.endswith("_total"), f"{m.name}: counters are listed as exposed"
        else:
            assert not m.name.endswith(("_total", "_bucket", "_sum", "_count", "_created")), m.name
        if m.type == "histogram":
            assert "le" not in m.labels
            assert m.name.endswith("_seconds"), f"{m.name}: latency histograms in seconds"
        assert len(set(m.labels)) == len(m.labels)
        assert not set(m.labels) & TARGET_LABELS, f"{m.name}: clashes with a target label"
    # the names the issue asks for
    for name in (
        "xmppd_connections",
        "xmppd_auth_total",
        "xmppd_stanzas_in_total",
        "xmppd_stanzas_out_total",
        "xmppd_routing_latency_seconds",
        "xmppd_grpc_call_seconds",
        "xmppd_grpc_errors_total",
        "xmppd_redis_latency_seconds",
        "xmppd_db_latency_seconds",
        "xmppd_offline_messages_stored_total",
        "xmppd_offline_queue_messages",
        "xmppd_registered_users",
        "xmppd_online_users",
        "xmppd_sessions",
        "xmppd_edge_up",
        "process_cpu_seconds_total",
        "process_resident_memory_bytes",
    ):
        assert name in metrics, name


def test_every_expression_parses(parsed: list[tuple[str, str, dict[str, Any]]]) -> None:
    bad = [f"{where}: {res['error']}\n  {expr}" for where, expr, res in parsed if res["error"]]
    assert not bad, "\n".join(bad)


def test_expressions_use_only_contract_metrics(
    parsed: list[tuple[str, str, dict[str, Any]]],
) -> None:
    allowed = allowed_series()
    bad = []
    for where, _, res in parsed:
        assert res["selectors"], f"{where}: reads no metric"
        for sel in res["selectors"]:
            if sel["name"] not in allowed:
                bad.append(f"{where}: {sel['name']!r} is not in deploy/metrics.txt")
    assert not bad, "\n".join(bad)


def test_expressions_use_only_contract_labels(
    parsed: list[tuple[str, str, dict[str, Any]]],
) -> None:
    allowed = allowed_series()
    every_label = {label for labels in allowed.values() for label in labels} | TARGET_LABELS
    bad = []
    for where, _, res in parsed:
        for sel in res["selectors"]:
            own = set(allowed.get(sel["name"], ())) | TARGET_LABELS
            bad += [
                f"{where}: {sel['name']} has no label {lb!r}"
                for lb in sel["labels"]
                if lb not in own
            ]
        bad += [
            f"{where}: no metric has a label {lb!r}"
            for lb in res["grouping"]
            if lb not in every_label
        ]
    assert not bad, "\n".join(bad)


def test_contract_check_catches_unknown_names(node_ws: Path) -> None:
    res = run_node_json(
        node_ws,
        "promql.mjs",
        ['sum by (kind) (rate(xmppd_stanzas_total{job="xmppd"}[5m])) / on() {__name__="up"}'],
    )
    names = {s["name"] for s in res[0]["selectors"]}
    assert names == {"xmppd_stanzas_total", "up"}
    assert "xmppd_stanzas_total" not in allowed_series()
    assert res[0]["grouping"] == ["kind"]


def test_dashboards_cover_every_xmppd_metric(
    parsed: list[tuple[str, str, dict[str, Any]]],
) -> None:
    used = {sel["name"] for where, _, res in parsed if ".json" in where for sel in res["selectors"]}
    unused = []
    for metric in metrics_contract().values():
        if metric.name.startswith("xmppd_") and not metric.series_names() & used:
            unused.append(metric.name)
    assert not unused, f"metrics no dashboard shows: {unused}"


def test_autoscaling_metrics_are_in_the_contract() -> None:
    contract = metrics_contract()
    for kfile in (ROOT / "k8s").rglob("*.yaml"):
        for doc in load_yaml_all(kfile.read_text()) if kfile.name != "kustomization.yaml" else []:
            if not isinstance(doc, dict) or doc.get("kind") != "HorizontalPodAutoscaler":
                continue
            for metric in doc.get("spec", {}).get("metrics", []):
                if metric["type"] == "Pods":
                    name = metric["pods"]["metric"]["name"]
                    assert name in contract and contract[name].type == "gauge", name
