"""deploy/grafana/: the dashboards against Grafana's dashboard schema and
their panel plugins' option schemas (JSON schemas generated from npm
@grafana/schema's TypeScript types; unknown fields fail), and every query
through promtool's PromQL parser."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest
import yaml

from .tooling import (
    ROOT,
    all_panels,
    dashboard_queries,
    dashboards,
    promtool,
    run,
    run_node_json,
)

Schema = dict[str, Any]


def validator(schema: Schema) -> Any:
    try:
        import jsonschema
    except ImportError:
        pytest.fail("jsonschema is missing: run `make tools`", pytrace=False)
    return jsonschema.Draft7Validator(schema)


def errors(schema: Schema, instance: Any) -> list[str]:
    return [
        f"{'/'.join(map(str, e.absolute_path)) or '<root>'}: {e.message}"
        for e in validator(schema).iter_errors(instance)
    ]


@pytest.fixture(scope="module")
def schemas(node_ws: Path) -> dict[str, Any]:
    panel_types = sorted(
        {p["type"] for d in dashboards().values() for p in all_panels(d) if p["type"] != "row"}
    )
    out = run_node_json(node_ws, "grafana_schema.mjs", None, *panel_types)
    assert out["dashboard"]["definitions"]["Dashboard"]["additionalProperties"] is False
    return dict(out)


def test_there_are_the_four_dashboards() -> None:
    assert sorted(dashboards()) == ["edge", "overview", "routing", "storage"]


@pytest.mark.parametrize("name", sorted(dashboards()))
def test_dashboard_matches_grafana_schema(name: str, schemas: dict[str, Any]) -> None:
    dash = dashboards()[name]
    assert not errors(schemas["dashboard"], dash), "\n".join(errors(schemas["dashboard"], dash))
    problems = []
    for panel in all_panels(dash):
        if panel["type"] == "row":
            continue
        plugin = schemas["panels"].get(panel["type"])
        assert plugin, f"{panel['title']}: no schema for panel type {panel['type']}"
        if plugin["options"]:
            problems += [
                f"{panel['title']} options {e}"
                for e in errors(plugin["options"], panel.get("options", {}))
            ]
        custom = panel.get("fieldConfig", {}).get("defaults", {}).get("custom")
        if custom is not None:
            assert plugin["fieldConfig"], f"{panel['title']}: {panel['type']} has no custom config"
            problems += [
                f"{panel['title']} custom {e}" for e in errors(plugin["fieldConfig"], custom)
            ]
    assert not problems, "\n".join(problems)


def test_schema_rejects_unknown_fields(schemas: dict[str, Any]) -> None:
    dash = dashboards()["overview"]
    bad = dict(dash, panels=[dict(all_panels(dash)[1], gridPosition={})])
    assert any("gridPosition" in e for e in errors(schemas["dashboard"], bad))
    ts = schemas["panels"]["timeseries"]["options"]
    assert errors(ts, {"legend": {"showLegend": True, "placement": "bottom", "calcs": []}})


@pytest.mark.parametrize("name", sorted(dashboards()))
def test_dashboard_conventions(name: str) -> None:
    dash = dashboards()[name]
    assert dash["uid"] == f"xmppd-{name}"
    assert "xmppd" in dash["tags"]
    variables = {v["name"]: v for v in dash["templating"]["list"]}
    assert variables["datasource"]["type"] == "datasource"
    assert variables["datasource"]["query"] == "prometheus"
    ids = [p["id"] for p in all_panels(dash)]
    assert len(ids) == len(set(ids)), "panel ids are unique"
    for panel in all_panels(dash):
        pos = panel["gridPos"]
        assert 0 <= pos["x"] and pos["x"] + pos["w"] <= 24, panel["title"]
        if panel["type"] == "row":
            continue
        assert panel["datasource"] == {"type": "prometheus", "uid": "${datasource}"}
        targets = panel["targets"]
        assert targets, panel["title"]
        assert len({t["refId"] for t in targets}) == len(targets)
        for t in targets:
            assert t["datasource"] == panel["datasource"]
            assert t["expr"].strip()


def test_dashboard_queries_parse_with_promtool(tmp_path: Path) -> None:
    """Each query as a recording rule: `promtool check rules` parses it with
    Prometheus' own PromQL parser (the one of the server the dashboards query)."""
    queries = dashboard_queries()
    assert len(queries) > 40
    rules = {
        "groups": [
            {
                "name": "dashboards",
                "rules": [
                    {"record": f"dashboard:query_{i}:check", "expr": expr}
                    for i, (_, expr) in enumerate(queries)
                ],
            }
        ]
    }
    path = tmp_path / "dashboard-queries.yml"
    path.write_text(yaml.safe_dump(rules))
    res = run([promtool(), "check", "rules", path])
    assert res.returncode == 0, res.output + "\n".join(
        f"{i}: {w}" for i, (w, _) in enumerate(queries)
    )
    assert f"SUCCESS: {len(queries)} rules found" in res.output


def test_dashboards_are_provisioned_for_compose() -> None:
    datasources = yaml.safe_load(
        (
            ROOT / "deploy" / "grafana" / "provisioning" / "datasources" / "prometheus.yml"
        ).read_text()
    )
    (ds,) = datasources["datasources"]
    assert ds["type"] == "prometheus" and ds["url"] == "http://prometheus:9090"
    providers = yaml.safe_load(
        (ROOT / "deploy" / "grafana" / "provisioning" / "dashboards" / "xmppd.yml").read_text()
    )
    (provider,) = providers["providers"]
    compose = yaml.safe_load((ROOT / "docker-compose.yml").read_text())
    mounts = compose["services"]["grafana"]["volumes"]
    assert f"./deploy/grafana/dashboards:{provider['options']['path']}:ro" in mounts
