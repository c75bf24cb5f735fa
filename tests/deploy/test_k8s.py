"""k8s/: every overlay built with kustomize (kubectl 1.32) and checked
strictly against the Kubernetes 1.32 JSON schemas (kubernetes-validate
--strict: unknown fields fail), the Prometheus Operator objects against the
operator's schemas (kubernetes-models validators) and its TypeScript types
(tsc: unknown fields fail), then the properties the deployment relies on."""

from __future__ import annotations

import json
import re
from pathlib import Path
from typing import Any

import pytest
import yaml

from .tooling import (
    K8S_VERSION,
    NODE_MODULES,
    OVERLAYS,
    ROLES,
    ROOT,
    admin_token_scopes,
    known_settings,
    kubernetes_validate,
    load_yaml,
    load_yaml_all,
    metrics_contract,
    node,
    run,
    run_node_json,
    settings_from_env,
)

Obj = dict[str, Any]
OPERATOR_GROUP = "monitoring.coreos.com/"
CLUSTER_SCOPED = {"Namespace", "ClusterRole", "ClusterRoleBinding", "PriorityClass"}
GRPC_PORTS = {
    "edge": 50051,
    "router": 50052,
    "presence": 50053,
    "storage": 50054,
    "muc": 50055,
    "pubsub": 50056,
}
#: the roles whose replicas share keys under leases in Redis (rooms, nodes),
#: announce their pod IP and forward to each other; their address setting
SHARED_ROLES = {"muc": "XMPPD_MUC_ADDRS", "pubsub": "XMPPD_PUBSUB_ADDRS"}


def kinds(objs: list[Obj], kind: str) -> list[Obj]:
    return [o for o in objs if o["kind"] == kind]


def named(objs: list[Obj], kind: str, name: str) -> Obj:
    found = [o for o in kinds(objs, kind) if o["metadata"]["name"] == name]
    assert len(found) == 1, f"expected one {kind} {name}, found {len(found)}"
    return found[0]


def xmppd_deployments(objs: list[Obj]) -> list[Obj]:
    return [
        d
        for d in kinds(objs, "Deployment")
        if d["metadata"].get("labels", {}).get("app.kubernetes.io/part-of") == "xmppd"
    ]


def pod_specs(objs: list[Obj]) -> list[tuple[Obj, Obj]]:
    """(object, pod spec) of every Deployment and Job."""
    out = []
    for o in objs:
        if o["kind"] in ("Deployment", "Job", "StatefulSet", "DaemonSet"):
            out.append((o, o["spec"]["template"]["spec"]))
    return out


def selects(selector: dict[str, str], labels: dict[str, str]) -> bool:
    return all(labels.get(k) == v for k, v in selector.items())


def label_selector_matches(sel: Obj, labels: dict[str, str]) -> bool:
    assert not sel.get("matchExpressions"), "matchExpressions not handled by this test"
    return selects(sel.get("matchLabels") or {}, labels)


def container_ports(spec: Obj) -> dict[str, int]:
    return {
        p["name"]: p["containerPort"]
        for c in spec["containers"]
        for p in c.get("ports", [])
        if "name" in p
    }


# --- the real validators ----------------------------------------------------------


@pytest.mark.parametrize("overlay", OVERLAYS)
def test_overlay_is_valid_against_kubernetes_schemas(
    overlay: str, built: dict[str, list[Obj]], tmp_path: Path
) -> None:
    core = [o for o in built[overlay] if not o["apiVersion"].startswith(OPERATOR_GROUP)]
    path = tmp_path / f"{overlay}.yaml"
    path.write_text(yaml.safe_dump_all(core))
    res = run([kubernetes_validate(), "--strict", "-k", K8S_VERSION, path])
    assert res.returncode == 0, res.output
    problems = [
        ln for ln in res.stdout.splitlines() + res.stderr.splitlines() if "passed" not in ln
    ]
    assert not problems, res.output  # no WARN either: every kind has a schema
    passed = sum("passed for resource" in ln for ln in res.stdout.splitlines())
    assert passed == len(core), res.output


def test_kubernetes_validate_rejects_unknown_fields(tmp_path: Path) -> None:
    """The strict mode the test above relies on really fails unknown fields."""
    bad = {
        "apiVersion": "apps/v1",
        "kind": "Deployment",
        "metadata": {"name": "x"},
        "spec": {
            "selector": {"matchLabels": {"a": "b"}},
            "template": {
                "metadata": {"labels": {"a": "b"}},
                "spec": {"containers": [{"name": "c", "image": "i", "livenessProbes": {}}]},
            },
        },
    }
    path = tmp_path / "bad.yaml"
    path.write_text(yaml.safe_dump(bad))
    res = run([kubernetes_validate(), "--strict", "-k", K8S_VERSION, path])
    assert res.returncode != 0, res.output
    assert "livenessProbes" in res.output


@pytest.mark.parametrize("overlay", OVERLAYS)
def test_operator_objects_match_operator_schemas(
    overlay: str, built: dict[str, list[Obj]], node_ws: Path
) -> None:
    crds = [o for o in built[overlay] if o["apiVersion"].startswith(OPERATOR_GROUP)]
    assert {o["kind"] for o in crds} == {"ServiceMonitor", "PrometheusRule"}
    results = run_node_json(node_ws, "crd_models.mjs", crds)
    errors = [r for r in results if r["error"]]
    assert not errors, json.dumps(errors, indent=2)
    assert len(results) == len(crds)


def test_operator_models_reject_bad_values(node_ws: Path) -> None:
    bad = {
        "apiVersion": "monitoring.coreos.com/v1",
        "kind": "PrometheusRule",
        "metadata": {"name": "x"},
        "spec": {
            "groups": [{"name": "g", "rules": [{"alert": "A", "expr": "up", "for": "5 min"}]}]
        },
    }
    results = run_node_json(node_ws, "crd_models.mjs", [bad])
    assert results[0]["error"] and "for" in results[0]["error"]


TS_TYPES = {
    "ServiceMonitor": "IServiceMonitor",
    "PrometheusRule": "IPrometheusRule",
}


def typecheck_operator_objects(objs: list[Obj], workdir: Path) -> str:
    """tsc --strict over object literals typed with the operator's interfaces:
    excess property checks make any unknown field an error. '' when clean."""
    workdir.mkdir(parents=True, exist_ok=True)
    lines = []
    for kind, iface in TS_TYPES.items():
        module = f"@kubernetes-models/prometheus-operator/monitoring.coreos.com/v1/{kind}"
        lines.append(f'import type {{ {iface} }} from "{module}";')
    for i, obj in enumerate(objs):
        lines.append(f"export const o{i}: {TS_TYPES[obj['kind']]} = {json.dumps(obj, indent=1)};")
    (workdir / "objects.mts").write_text("\n".join(lines) + "\n")
    (workdir / "tsconfig.json").write_text(
        json.dumps(
            {
                "compilerOptions": {
                    "strict": True,
                    "noEmit": True,
                    "module": "nodenext",
                    "moduleResolution": "nodenext",
                    "skipLibCheck": True,
                    "types": [],
                },
                "files": ["objects.mts"],
            }
        )
    )
    link = workdir / "node_modules"
    if not link.exists():
        link.symlink_to(NODE_MODULES, target_is_directory=True)
    tsc = NODE_MODULES / "typescript" / "bin" / "tsc"
    res = run([node(), tsc, "-p", workdir / "tsconfig.json"], cwd=workdir)
    return "" if res.returncode == 0 else res.output


@pytest.mark.parametrize("overlay", OVERLAYS)
def test_operator_objects_have_no_unknown_fields(
    overlay: str, built: dict[str, list[Obj]], tmp_path: Path
) -> None:
    crds = [o for o in built[overlay] if o["apiVersion"].startswith(OPERATOR_GROUP)]
    assert crds
    errors = typecheck_operator_objects(crds, tmp_path / "tsc")
    assert not errors, errors


def test_typecheck_catches_unknown_operator_fields(tmp_path: Path) -> None:
    bad = {
        "apiVersion": "monitoring.coreos.com/v1",
        "kind": "ServiceMonitor",
        "metadata": {"name": "x"},
        "spec": {"selector": {}, "endpoints": [{"port": "ops", "scrapeInterval": "15s"}]},
    }
    errors = typecheck_operator_objects([bad], tmp_path / "tsc")
    assert "scrapeInterval" in errors


# --- what the deployment relies on ---------------------------------------------------


@pytest.mark.parametrize("overlay", OVERLAYS)
def test_one_deployment_per_role_running_the_contract_command(
    overlay: str, built: dict[str, list[Obj]]
) -> None:
    deployments = xmppd_deployments(built[overlay])
    roles = {}
    for d in deployments:
        role = d["metadata"]["labels"]["app.kubernetes.io/component"]
        (container,) = d["spec"]["template"]["spec"]["containers"]
        assert container["command"] == ["xmppd", role], d["metadata"]["name"]
        assert re.search(r"(^|/)xmppd(:|$)", container["image"]), container["image"]
        roles[role] = d
    assert sorted(roles) == sorted(ROLES)
    (job,) = kinds(built[overlay], "Job")
    (container,) = job["spec"]["template"]["spec"]["containers"]
    assert container["command"] == ["xmppctl", "migrate"]
    assert job["spec"]["template"]["spec"]["restartPolicy"] in ("Never", "OnFailure")


@pytest.mark.parametrize("overlay", OVERLAYS)
def test_probes_resources_and_security(overlay: str, built: dict[str, list[Obj]]) -> None:
    for obj, spec in pod_specs(built[overlay]):
        name = f"{obj['kind']} {obj['metadata']['name']}"
        psc = spec.get("securityContext", {})
        assert psc.get("runAsNonRoot") is True, name
        assert psc.get("runAsUser", 0) != 0, name
        assert psc.get("seccompProfile", {}).get("type") == "RuntimeDefault", name
        assert spec.get("automountServiceAccountToken") is False, name
        for c in spec["containers"]:
            sc = c.get("securityContext", {})
            assert sc.get("allowPrivilegeEscalation") is False, name
            assert sc.get("capabilities", {}).get("drop") == ["ALL"], name
            res = c.get("resources", {})
            for part in ("requests", "limits"):
                assert {"cpu", "memory"} <= set(res.get(part, {})), f"{name}: {part}"
        if obj in xmppd_deployments(built[overlay]):
            (c,) = spec["containers"]
            assert c["securityContext"].get("readOnlyRootFilesystem") is True, name
            ports = container_ports(spec)
            assert ports.get("ops") == 9100, name
            assert c["livenessProbe"]["httpGet"] == {"path": "/healthz", "port": "ops"}, name
            assert c["readinessProbe"]["httpGet"] == {"path": "/readyz", "port": "ops"}, name
            mounts = {m["mountPath"] for m in c.get("volumeMounts", [])}
            assert {"/tmp", "/var/lib/xmppd"} <= mounts, f"{name}: writable dirs"


@pytest.mark.parametrize("overlay", OVERLAYS)
def test_edges_drain_gracefully(overlay: str, built: dict[str, list[Obj]]) -> None:
    edge = named(built[overlay], "Deployment", "xmppd-edge")
    spec = edge["spec"]["template"]["spec"]
    (c,) = spec["containers"]
    assert spec["terminationGracePeriodSeconds"] >= 60
    pre_stop = c["lifecycle"]["preStop"]
    sleep = pre_stop.get("sleep", {}).get("seconds") or int(pre_stop["exec"]["command"][-1])
    assert 5 <= sleep < spec["terminationGracePeriodSeconds"] - 30, "time left to drain"
    rolling = edge["spec"]["strategy"]["rollingUpdate"]
    assert rolling["maxUnavailable"] == 0, "a new edge is ready before an old one drains"
    ports = container_ports(spec)
    assert ports["xmpp-client"] == 5222
    assert ports["xmpps-client"] == 5223
    assert ports["xmpp-web"] == 5280
    assert ports["grpc"] == GRPC_PORTS["edge"]


@pytest.mark.parametrize("overlay", OVERLAYS)
def test_environment_uses_only_known_settings(overlay: str, built: dict[str, list[Obj]]) -> None:
    objs = built[overlay]
    known = known_settings()
    for cm in kinds(objs, "ConfigMap"):
        if cm["metadata"]["name"] == "xmppd-config":
            assert set(cm["data"]) <= known, set(cm["data"]) - known
    for secret in kinds(objs, "Secret"):
        keys = set(secret.get("stringData", {})) | set(secret.get("data", {}))
        assert keys <= known, keys - known
    for obj, spec in pod_specs(objs):
        if obj["metadata"].get("labels", {}).get("app.kubernetes.io/part-of") != "xmppd":
            continue
        for c in spec["containers"]:
            defined: set[str] = set()
            for env in c.get("env", []):
                if env["name"].startswith("XMPPD_"):
                    assert env["name"] in known, f"{obj['metadata']['name']}: {env['name']}"
                for ref in re.findall(r"\$\((\w+)\)", env.get("value", "")):
                    assert ref in defined, f"{env['name']} uses $({ref}) before it is defined"
                defined.add(env["name"])


@pytest.mark.parametrize("overlay", OVERLAYS)
def test_per_process_settings(overlay: str, built: dict[str, list[Obj]]) -> None:
    objs = built[overlay]
    config = named(objs, "ConfigMap", "xmppd-config")["data"]
    for role, port in GRPC_PORTS.items():
        d = named(objs, "Deployment", f"xmppd-{role}")
        (c,) = d["spec"]["template"]["spec"]["containers"]
        env = {e["name"]: e for e in c["env"]}
        assert env["XMPPD_GRPC_LISTEN"]["value"] == f"0.0.0.0:{port}"
        assert container_ports(d["spec"]["template"]["spec"])["grpc"] == port
        assert env["XMPPD_NODE_ID"]["value"] == "$(POD_NAME)"
        assert env["POD_NAME"]["valueFrom"]["fieldRef"]["fieldPath"] == "metadata.name"
    edge = named(objs, "Deployment", "xmppd-edge")
    (c,) = edge["spec"]["template"]["spec"]["containers"]
    env = {e["name"]: e for e in c["env"]}
    assert env["POD_IP"]["valueFrom"]["fieldRef"]["fieldPath"] == "status.podIP"
    assert env["XMPPD_EDGE_ADVERTISE"]["value"] == "$(POD_IP):50051"
    # the addresses in the ConfigMap name this namespace's Services and ports
    services = {s["metadata"]["name"]: s for s in kinds(objs, "Service")}
    for key, role in (
        ("XMPPD_ROUTER_ADDRS", "router"),
        ("XMPPD_PRESENCE_ADDRS", "presence"),
        ("XMPPD_MUC_ADDRS", "muc"),
        ("XMPPD_PUBSUB_ADDRS", "pubsub"),
        ("XMPPD_STORAGE_ADDRS", "storage"),
    ):
        for addr in config[key].split(","):
            host, port = addr.rsplit(":", 1)
            svc = services[host]
            assert svc["spec"]["selector"]["app.kubernetes.io/component"] == role
            assert int(port) in {p["port"] for p in svc["spec"]["ports"]}
            assert svc["spec"].get("clusterIP") == "None", f"{host}: headless for gRPC balancing"


FIELD_VALUES = {"metadata.name": "xmppd-pod-7d9f-abcde", "status.podIP": "10.1.2.3"}


def process_environment(objs: list[Obj], container: Obj) -> dict[str, str]:
    """The environment Kubernetes gives this container: envFrom ConfigMaps and
    Secrets of the overlay (absent ones are skipped: production's are created
    by hand), then env with downward-API values and $(VAR) expansion."""
    env: dict[str, str] = {}
    for source in container.get("envFrom", []):
        if "configMapRef" in source:
            found = [
                c
                for c in kinds(objs, "ConfigMap")
                if c["metadata"]["name"] == source["configMapRef"]["name"]
            ]
            assert found, source
            env.update(found[0]["data"])
        if "secretRef" in source:
            for secret in kinds(objs, "Secret"):
                if secret["metadata"]["name"] == source["secretRef"]["name"]:
                    env.update(secret.get("stringData", {}))
    for item in container.get("env", []):
        if "value" in item:
            env[item["name"]] = re.sub(r"\$\((\w+)\)", lambda m: env[m[1]], item["value"])
        else:
            env[item["name"]] = FIELD_VALUES[item["valueFrom"]["fieldRef"]["fieldPath"]]
    return env


@pytest.mark.parametrize("overlay", OVERLAYS)
def test_processes_get_settings_the_loader_accepts(
    overlay: str, built: dict[str, list[Obj]]
) -> None:
    objs = built[overlay]
    for obj, spec in pod_specs(objs):
        if obj["metadata"].get("labels", {}).get("app.kubernetes.io/part-of") != "xmppd":
            continue
        (container,) = spec["containers"]
        settings = settings_from_env(process_environment(objs, container))
        role = obj["metadata"]["labels"]["app.kubernetes.io/component"]
        assert settings.ops_port == 9100 and settings.ops_host == "0.0.0.0", role
        assert settings.data_dir == "/var/lib/xmppd"
        assert settings.log_json is True
        assert settings.router_addrs == ["xmppd-router:50052"]
        assert settings.presence_addrs == ["xmppd-presence:50053"]
        assert settings.muc_addrs == ["xmppd-muc:50055"]
        assert settings.pubsub_addrs == ["xmppd-pubsub:50056"]
        assert settings.storage_addrs == ["xmppd-storage:50054"]
        if role in GRPC_PORTS:
            assert settings.grpc_listen == f"0.0.0.0:{GRPC_PORTS[role]}"
            assert settings.node_id == FIELD_VALUES["metadata.name"]
        if role == "edge":
            assert settings.edge_advertise == "10.1.2.3:50051"
            # WebSocket and BOSH on 5280, TLS terminated at the Ingress
            assert settings.http_port == 5280
            assert settings.http_secure == "always"
        if role in SHARED_ROLES:
            # the other processes and replicas of the role reach it at its pod IP
            port = GRPC_PORTS[role]
            assert settings.grpc_advertise == f"{FIELD_VALUES['status.podIP']}:{port}"
        if role == "admin":
            assert settings.admin_host == "0.0.0.0" and settings.admin_port == 8080
            if overlay == "dev":
                scopes = admin_token_scopes(settings)
                assert any("admin" in s for s in scopes.values())
        if overlay == "dev":
            assert settings.database_url.startswith("postgresql://")
            assert settings.redis_url.startswith("redis://redis:6379/")


@pytest.mark.parametrize("overlay", OVERLAYS)
def test_services_select_pods_and_ports(overlay: str, built: dict[str, list[Obj]]) -> None:
    objs = built[overlay]
    pods = [
        (o["spec"]["template"]["metadata"]["labels"], o["spec"]["template"]["spec"])
        for o in kinds(objs, "Deployment")
    ]
    for svc in kinds(objs, "Service"):
        name = svc["metadata"]["name"]
        matched = [spec for labels, spec in pods if selects(svc["spec"]["selector"], labels)]
        assert matched, f"Service {name} selects no pods"
        for port in svc["spec"]["ports"]:
            target = port.get("targetPort", port["port"])
            for spec in matched:
                ports = container_ports(spec)
                assert target in ports or target in ports.values(), f"{name}: {target}"
    public = [
        s for s in kinds(objs, "Service") if s["spec"].get("type") in ("LoadBalancer", "NodePort")
    ]
    assert [s["metadata"]["name"] for s in public] == ["xmppd-edge"]
    (edge,) = public
    assert edge["spec"]["type"] == "LoadBalancer"
    exposed = {p["port"]: p["targetPort"] for p in edge["spec"]["ports"]}
    # the web port is plain HTTP trusted as secure: never on the load balancer
    assert exposed == {5222: "xmpp-client", 5223: "xmpps-client"}


def edge_web_port(objs: list[Obj], service: str, port: str | int) -> int:
    """The edge container port a Service port (by name or number) reaches."""
    svc = named(objs, "Service", service)
    assert svc["spec"]["selector"]["app.kubernetes.io/component"] == "edge", service
    (entry,) = [p for p in svc["spec"]["ports"] if port in (p.get("name"), p["port"])]
    target = entry.get("targetPort", entry["port"])
    edge = named(objs, "Deployment", "xmppd-edge")
    ports = container_ports(edge["spec"]["template"]["spec"])
    return ports[target] if isinstance(target, str) else target


@pytest.mark.parametrize("overlay", OVERLAYS)
def test_edge_web_service_exposes_5280_inside_the_cluster(
    overlay: str, built: dict[str, list[Obj]]
) -> None:
    objs = built[overlay]
    web = named(objs, "Service", "xmppd-edge-web")
    assert web["spec"].get("type", "ClusterIP") == "ClusterIP"
    assert {p["port"] for p in web["spec"]["ports"]} == {5280}
    assert edge_web_port(objs, "xmppd-edge-web", "xmpp-web") == 5280
    for svc in kinds(objs, "Service"):
        if svc["spec"].get("type") in ("LoadBalancer", "NodePort"):
            targets = {p.get("targetPort", p["port"]) for p in svc["spec"]["ports"]}
            assert not targets & {"xmpp-web", 5280}, svc["metadata"]["name"]


def ingress_routes(objs: list[Obj]) -> dict[str, tuple[Obj, Obj, str]]:
    """path -> (Ingress, its backend service, host) of every Ingress rule."""
    out: dict[str, tuple[Obj, Obj, str]] = {}
    for ing in kinds(objs, "Ingress"):
        for rule in ing["spec"]["rules"]:
            for path in rule["http"]["paths"]:
                assert path["path"] not in out, f"{path['path']} routed twice"
                out[path["path"]] = (ing, path["backend"]["service"], rule["host"])
    return out


WEB_PATHS = (
    "/xmpp-websocket",
    "/http-bind",
    "/.well-known/host-meta",
    "/.well-known/host-meta.json",
)


def _seconds(ing: Obj, what: str) -> int:
    return int(ing["metadata"]["annotations"][f"nginx.ingress.kubernetes.io/{what}"])


def test_production_ingress_routes_the_web_paths_to_the_edges(
    built: dict[str, list[Obj]],
) -> None:
    objs = built["production"]
    routes = ingress_routes(objs)
    assert set(WEB_PATHS) <= set(routes)
    config = named(objs, "ConfigMap", "xmppd-config")["data"]
    domains = config["XMPPD_HOSTS"].split(",")
    for path in WEB_PATHS:
        ing, backend, host = routes[path]
        port = backend["port"].get("name", backend["port"].get("number"))
        assert edge_web_port(objs, backend["name"], port) == 5280, path
        assert ing["spec"]["ingressClassName"] == "nginx"
        # TLS ends at the Ingress (the edges trust the plain hop behind it)
        assert any(host in t["hosts"] and t["secretName"] for t in ing["spec"]["tls"]), path
        # host-meta is looked up at https://<domain>/.well-known/ (XEP-0156)
        assert host in domains, path
        for rule in ing["spec"]["rules"]:
            for p in rule["http"]["paths"]:
                assert p["pathType"] == "Exact", "the edge serves exactly these paths"


def test_production_ingress_timeouts_outlast_websockets_and_held_bosh_requests(
    built: dict[str, list[Obj]],
) -> None:
    objs = built["production"]
    routes = ingress_routes(objs)
    edge = named(objs, "Deployment", "xmppd-edge")
    (container,) = edge["spec"]["template"]["spec"]["containers"]
    settings = settings_from_env(process_environment(objs, container))
    ws = routes["/xmpp-websocket"][0]
    for what in ("proxy-read-timeout", "proxy-send-timeout"):
        assert _seconds(ws, what) >= 3600, what
    bosh = routes["/http-bind"][0]
    for what in ("proxy-read-timeout", "proxy-send-timeout"):
        # a request held for the whole 'wait' must not meet nginx's 504
        assert _seconds(bosh, what) > settings.bosh_max_wait, what


def test_production_bosh_is_sticky_to_one_edge(built: dict[str, list[Obj]]) -> None:
    """A BOSH session lives in the memory of the edge that created it: every
    request of it must reach that edge (cookie affinity on the Ingress)."""
    routes = ingress_routes(built["production"])
    bosh = routes["/http-bind"][0]
    notes = bosh["metadata"]["annotations"]
    prefix = "nginx.ingress.kubernetes.io/"
    assert notes[prefix + "affinity"] == "cookie"
    assert notes[prefix + "affinity-mode"] == "persistent", "scaling up keeps sessions"
    assert notes[prefix + "session-cookie-name"]
    assert notes[prefix + "session-cookie-path"] == "/http-bind"
    # only BOSH needs it: a WebSocket is one connection
    ws = routes["/xmpp-websocket"][0]
    assert prefix + "affinity" not in ws["metadata"].get("annotations", {})


def test_production_autoscales_edges_on_connections_and_routers_on_cpu(
    built: dict[str, list[Obj]],
) -> None:
    objs = built["production"]
    contract = metrics_contract()
    edge_hpa = named(objs, "HorizontalPodAutoscaler", "xmppd-edge")
    assert edge_hpa["spec"]["scaleTargetRef"]["name"] == "xmppd-edge"
    (metric,) = edge_hpa["spec"]["metrics"]
    assert metric["type"] == "Pods"
    assert metric["pods"]["metric"]["name"] == "xmppd_connections"
    assert contract["xmppd_connections"].type == "gauge"
    assert metric["pods"]["target"]["type"] == "AverageValue"
    assert edge_hpa["spec"]["behavior"]["scaleDown"]["stabilizationWindowSeconds"] >= 300
    router_hpa = named(objs, "HorizontalPodAutoscaler", "xmppd-router")
    assert router_hpa["spec"]["scaleTargetRef"]["name"] == "xmppd-router"
    (metric,) = router_hpa["spec"]["metrics"]
    assert metric["type"] == "Resource" and metric["resource"]["name"] == "cpu"
    for hpa in (edge_hpa, router_hpa):
        assert hpa["spec"]["minReplicas"] >= 2
        target = named(objs, "Deployment", hpa["spec"]["scaleTargetRef"]["name"])
        assert "replicas" not in target["spec"], "the HPA owns the replica count"


def test_dev_runs_fixed_replicas_without_autoscaling(built: dict[str, list[Obj]]) -> None:
    objs = built["dev"]
    assert not kinds(objs, "HorizontalPodAutoscaler")
    assert named(objs, "Deployment", "xmppd-edge")["spec"]["replicas"] == 2
    assert named(objs, "Deployment", "xmppd-router")["spec"]["replicas"] == 2
    for backend in ("postgres", "redis"):
        named(objs, "Deployment", backend)
        named(objs, "Service", backend)


@pytest.mark.parametrize("overlay", OVERLAYS)
def test_disruption_budgets_cover_replicated_services(
    overlay: str, built: dict[str, list[Obj]]
) -> None:
    objs = built[overlay]
    pdbs = kinds(objs, "PodDisruptionBudget")
    for role in ("edge", "router", "presence", "muc", "pubsub", "storage"):
        d = named(objs, "Deployment", f"xmppd-{role}")
        labels = d["spec"]["template"]["metadata"]["labels"]
        covering = [p for p in pdbs if label_selector_matches(p["spec"]["selector"], labels)]
        assert len(covering) == 1, role
        assert covering[0]["spec"].get("maxUnavailable") == 1


@pytest.mark.parametrize("role", sorted(SHARED_ROLES))
@pytest.mark.parametrize("overlay", OVERLAYS)
def test_shared_replicas_roll_and_reach_each_other(
    overlay: str, role: str, built: dict[str, list[Obj]]
) -> None:
    """The muc replicas share the rooms, the pubsub replicas the nodes (a
    lease per room or node in Redis): they roll one at a time with a new
    replica up before an old one lets its keys go, each advertises its pod
    IP and gRPC port (callers and the other replicas reach a key's holder
    there), production runs several, and the NetworkPolicies let the pods of
    the role reach each other on that port."""
    objs = built[overlay]
    deployment = named(objs, "Deployment", f"xmppd-{role}")
    spec = deployment["spec"]["template"]["spec"]
    strategy = deployment["spec"]["strategy"]
    assert strategy["type"] == "RollingUpdate"
    assert strategy["rollingUpdate"]["maxUnavailable"] == 0
    assert strategy["rollingUpdate"]["maxSurge"] == 1
    expected = {"dev": 1, "production": 2}[overlay]
    assert deployment["spec"]["replicas"] == expected
    if overlay == "production":
        assert deployment["spec"]["replicas"] >= 2
    for hpa in kinds(objs, "HorizontalPodAutoscaler"):
        assert hpa["spec"]["scaleTargetRef"]["name"] != f"xmppd-{role}"
    (c,) = spec["containers"]
    assert c["command"] == ["xmppd", role]
    port = container_ports(spec)["grpc"]
    assert port == GRPC_PORTS[role]
    env = {e["name"]: e for e in c["env"]}
    assert env["POD_IP"]["valueFrom"]["fieldRef"]["fieldPath"] == "status.podIP"
    assert env["XMPPD_GRPC_ADVERTISE"]["value"] == f"$(POD_IP):{port}"
    assert env["XMPPD_GRPC_LISTEN"]["value"] == f"0.0.0.0:{port}"
    settings = settings_from_env(process_environment(objs, c))
    assert settings.grpc_advertise == f"{FIELD_VALUES['status.podIP']}:{port}"
    # like the other replicated gRPC roles: out of the Service's DNS answers
    # before SIGTERM lets the rooms or nodes go, well within the grace period
    pre_stop = c["lifecycle"]["preStop"]
    sleep = pre_stop.get("sleep", {}).get("seconds") or int(pre_stop["exec"]["command"][-1])
    presence = named(objs, "Deployment", "xmppd-presence")
    (pc,) = presence["spec"]["template"]["spec"]["containers"]
    assert pre_stop == pc["lifecycle"]["preStop"]
    assert 0 < sleep < spec["terminationGracePeriodSeconds"] - 10
    labels = deployment["spec"]["template"]["metadata"]["labels"]
    policies = kinds(objs, "NetworkPolicy")
    assert _allowed(policies, labels, labels, port, "egress", "to"), f"{role} -> {role} egress"
    assert _allowed(policies, labels, labels, port, "ingress", "from"), f"{role} -> {role} ingress"


def _allowed(
    policies: list[dict[str, Any]],
    pod: dict[str, str],
    peer_labels: dict[str, str],
    port: int,
    direction: str,
    peers: str,
) -> bool:
    """Does a policy selecting ``pod`` allow ``direction`` traffic on ``port``
    with pods labelled ``peer_labels`` in this namespace?"""
    return any(
        label_selector_matches(p["spec"]["podSelector"], pod)
        and any(
            port in _ports(rule)
            and any(
                label_selector_matches(peer.get("podSelector") or {}, peer_labels)
                and "namespaceSelector" not in peer
                for peer in rule.get(peers, [])
            )
            for rule in p["spec"].get(direction, [])
        )
        for p in policies
    )


@pytest.mark.parametrize("role", sorted(SHARED_ROLES))
@pytest.mark.parametrize("overlay", OVERLAYS)
def test_every_process_reaches_the_shared_service(
    overlay: str, role: str, built: dict[str, list[Obj]]
) -> None:
    """Every xmppd process (each role, and the migration Job) is given
    XMPPD_MUC_ADDRS / XMPPD_PUBSUB_ADDRS naming the muc / pubsub Service's
    gRPC port, which selects the role's pods and reaches their gRPC
    container port; the NetworkPolicies let the callers (router, presence,
    edge, admin, and the other of muc and pubsub) through to that port."""
    objs = built[overlay]
    setting = SHARED_ROLES[role]
    svc = named(objs, "Service", f"xmppd-{role}")
    assert svc["spec"]["selector"]["app.kubernetes.io/component"] == role
    assert svc["spec"].get("clusterIP") == "None"
    (grpc,) = [p for p in svc["spec"]["ports"] if p["name"] == "grpc"]
    deployment = named(objs, "Deployment", f"xmppd-{role}")
    assert selects(svc["spec"]["selector"], deployment["spec"]["template"]["metadata"]["labels"])
    target = container_ports(deployment["spec"]["template"]["spec"])[grpc["targetPort"]]
    assert target == GRPC_PORTS[role]
    seen = set()
    for obj, spec in pod_specs(objs):
        if obj["metadata"].get("labels", {}).get("app.kubernetes.io/part-of") != "xmppd":
            continue
        (container,) = spec["containers"]
        env = process_environment(objs, container)
        name = obj["metadata"]["name"]
        address = f"xmppd-{role}:{grpc['port']}"
        assert env.get(setting) == address, name
        assert getattr(settings_from_env(env), f"{role}_addrs") == [address], name
        seen.add(obj["metadata"]["labels"].get("app.kubernetes.io/component"))
    assert set(ROLES) <= seen
    policies = kinds(objs, "NetworkPolicy")
    role_labels = deployment["spec"]["template"]["metadata"]["labels"]
    callers = ("router", "presence", "edge", "admin", *(r for r in SHARED_ROLES if r != role))
    for caller in callers:
        d = named(objs, "Deployment", f"xmppd-{caller}")
        labels = d["spec"]["template"]["metadata"]["labels"]
        out = _allowed(policies, labels, role_labels, target, "egress", "to")
        into = _allowed(policies, role_labels, labels, target, "ingress", "from")
        assert out and into, f"{caller} -> {role}:{target} allowed by the NetworkPolicies"


@pytest.mark.parametrize("overlay", OVERLAYS)
def test_service_monitor_scrapes_every_process(overlay: str, built: dict[str, list[Obj]]) -> None:
    objs = built[overlay]
    (sm,) = kinds(objs, "ServiceMonitor")
    (endpoint,) = sm["spec"]["endpoints"]
    assert endpoint["port"] == "ops" and endpoint["path"] == "/metrics"
    relabel = {r["targetLabel"]: r for r in endpoint["relabelings"]}
    assert relabel["job"]["replacement"] == "xmppd"
    assert relabel["role"]["sourceLabels"] == [
        "__meta_kubernetes_service_label_app_kubernetes_io_component"
    ]
    scraped = [
        s
        for s in kinds(objs, "Service")
        if label_selector_matches(sm["spec"]["selector"], s["metadata"].get("labels", {}))
    ]
    assert all("ops" in {p["name"] for p in s["spec"]["ports"]} for s in scraped)
    components = {s["metadata"]["labels"]["app.kubernetes.io/component"] for s in scraped}
    assert components == set(ROLES)
    assert len(scraped) == len(ROLES), "each process scraped through exactly one Service"


@pytest.mark.parametrize("overlay", OVERLAYS)
def test_prometheus_rule_is_rules_yml(overlay: str, built: dict[str, list[Obj]]) -> None:
    (rule,) = kinds(built[overlay], "PrometheusRule")
    rules = load_yaml(ROOT / "deploy" / "prometheus" / "rules.yml")
    assert rule["spec"]["groups"] == rules["groups"]


@pytest.mark.parametrize("overlay", OVERLAYS)
def test_namespaced_and_labelled(overlay: str, built: dict[str, list[Obj]]) -> None:
    objs = built[overlay]
    (ns,) = kinds(objs, "Namespace")
    name = ns["metadata"]["name"]
    assert ns["metadata"]["labels"]["pod-security.kubernetes.io/enforce"] == "restricted"
    for o in objs:
        if o["kind"] not in CLUSTER_SCOPED:
            assert o["metadata"].get("namespace") == name, f"{o['kind']} {o['metadata']['name']}"


def test_production_ships_no_example_secrets_and_pins_the_image(
    built: dict[str, list[Obj]],
) -> None:
    objs = built["production"]
    assert not kinds(objs, "Secret"), "create production Secrets yourself"
    docs = (ROOT / "docs" / "operations.md").read_text()
    referenced: set[str] = set()
    for _, spec in pod_specs(objs):
        for c in spec["containers"]:
            assert not c["image"].endswith(":latest") and ":" in c["image"], c["image"]
            referenced |= {e["secretRef"]["name"] for e in c.get("envFrom", []) if "secretRef" in e}
        referenced |= {v["secret"]["secretName"] for v in spec.get("volumes", []) if "secret" in v}
    assert referenced == {"xmppd-secrets", "xmppd-admin", "xmppd-tls"}
    for secret in referenced:
        assert re.search(rf"create secret \w+ {secret}\b", docs), f"docs: how to create {secret}"


def test_dashboards_are_shipped_as_configmaps(built: dict[str, list[Obj]]) -> None:
    shipped = {
        key: json.loads(value)
        for cm in kinds(built["production"], "ConfigMap")
        if cm["metadata"].get("labels", {}).get("grafana_dashboard") == "1"
        for key, value in cm["data"].items()
    }
    files = sorted((ROOT / "deploy" / "grafana" / "dashboards").glob("*.json"))
    assert {f"xmppd-{f.stem}.json" for f in files} == set(shipped)
    for f in files:
        assert shipped[f"xmppd-{f.stem}.json"] == json.loads(f.read_text())


# --- network policies ------------------------------------------------------------------


def _allows_from_outside(rule: Obj) -> str | None:
    """None when a rule admits only this namespace's pods, else who it admits."""
    peers = rule.get("from")
    if not peers:
        return "anyone"
    outside = [p for p in peers if "ipBlock" in p or "namespaceSelector" in p]
    if not outside:
        return None
    return json.dumps(outside, sort_keys=True)


def _ports(rule: Obj) -> set[int]:
    out: set[int] = set()
    for p in rule.get("ports", []):
        out |= set(range(p["port"], p.get("endPort", p["port"]) + 1))
    return out


@pytest.mark.parametrize("overlay", OVERLAYS)
def test_network_policies(overlay: str, built: dict[str, list[Obj]]) -> None:
    objs = built[overlay]
    policies = kinds(objs, "NetworkPolicy")
    deny = [
        p
        for p in policies
        if p["spec"]["podSelector"] == {}
        and set(p["spec"]["policyTypes"]) == {"Ingress", "Egress"}
        and not p["spec"].get("ingress")
        and not p["spec"].get("egress")
    ]
    assert deny, "a default-deny policy for the namespace"
    monitoring = json.dumps(
        [{"namespaceSelector": {"matchLabels": {"kubernetes.io/metadata.name": "monitoring"}}}],
        sort_keys=True,
    )
    ingress_controller = json.dumps(
        [{"namespaceSelector": {"matchLabels": {"kubernetes.io/metadata.name": "ingress-nginx"}}}],
        sort_keys=True,
    )
    expected_public = {"edge": {5222, 5223}, "admin": {8080}}
    # the web port is plain HTTP the edge trusts as secure: the controller only
    expected_from_ingress = {"edge": {5280}}
    for d in kinds(objs, "Deployment"):
        labels = d["spec"]["template"]["metadata"]["labels"]
        role = labels.get("app.kubernetes.io/component", labels.get("app.kubernetes.io/name"))
        public: set[int] = set()
        from_ingress: set[int] = set()
        egress: set[int] = set()
        for p in policies:
            if not label_selector_matches(p["spec"]["podSelector"], labels):
                continue
            for rule in p["spec"].get("ingress", []):
                who = _allows_from_outside(rule)
                ports = _ports(rule)
                assert ports, f"{p['metadata']['name']}: an ingress rule without ports"
                if who == monitoring:
                    assert ports == {9100}, "monitoring only scrapes the ops port"
                elif who == ingress_controller:
                    from_ingress |= ports
                elif who is not None:
                    public |= ports
            for rule in p["spec"].get("egress", []):
                egress |= _ports(rule)
        assert public == expected_public.get(role, set()), f"{role} reachable from outside"
        assert from_ingress == expected_from_ingress.get(role, set()), role
        if labels.get("app.kubernetes.io/part-of") == "xmppd":
            assert {53, 5432, 6379, *GRPC_PORTS.values()} <= egress, role
            grpc = range(min(GRPC_PORTS.values()), max(GRPC_PORTS.values()) + 1)
            assert egress <= {53, 5432, 6379, *grpc}, role


def test_kustomizations_reference_existing_files() -> None:
    """kustomize fails on a missing file anyway; this names the file."""
    for kfile in (ROOT / "k8s").rglob("kustomization.yaml"):
        k = load_yaml(kfile)
        for entry in k.get("resources", []):
            assert (kfile.parent / entry).exists(), f"{kfile}: {entry}"
        for patch in k.get("patches", []):
            if "path" in patch:
                assert (kfile.parent / patch["path"]).is_file(), f"{kfile}: {patch['path']}"
    assert load_yaml_all((ROOT / "k8s" / "base" / "monitoring.yaml").read_text())
