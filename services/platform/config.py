"""One typed settings object for every process.

Values come from defaults, then a TOML file (``XMPPD_CONFIG`` or ``--config``),
then environment variables ``XMPPD_<NAME>`` (upper case). Errors name the key.
The README's configuration table is generated from :data:`Settings` fields'
metadata by ``xmppctl config-doc`` so the two never drift apart.
"""

from __future__ import annotations

import dataclasses
import os
import tomllib
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any


class ConfigError(ValueError):
    pass


def _f(default: Any, doc: str, **kw: Any) -> Any:
    if isinstance(default, list | dict | set):
        return field(default_factory=lambda: type(default)(default), metadata={"doc": doc, **kw})
    return field(default=default, metadata={"doc": doc, **kw})


@dataclass(slots=True)
class Settings:
    hosts: list[str] = _f(["localhost"], "Domains served (virtual hosts), comma separated")
    data_dir: str = _f("./data", "Folder for the SQLite database, certificate and key")
    database_url: str = _f("", "Database URL; empty means sqlite:///<data_dir>/xmppd.db")
    c2s_host: str = _f("0.0.0.0", "Address the client listeners bind to")
    c2s_port: int = _f(5222, "Client port with STARTTLS (-1 disables, 0 picks a free port)")
    c2s_direct_tls_port: int = _f(
        5223, "Client port with direct TLS, XEP-0368 (-1 disables, 0 picks a free port)"
    )
    tls_cert: str = _f(
        "", "PEM certificate; empty means <data_dir>/cert.pem, self-signed on first start"
    )
    tls_key: str = _f("", "PEM private key; empty means <data_dir>/key.pem")
    require_tls: bool = _f(True, "Refuse authentication before TLS")
    allow_plain: bool = _f(True, "Offer SASL PLAIN (only ever over TLS)")
    registration: bool = _f(False, "Allow in-band registration (XEP-0077)")
    max_stanza_size: int = _f(262144, "Largest stanza accepted, bytes (policy-violation past it)")
    offline_quota: int = _f(1000, "Offline messages kept per user (service-unavailable past it)")
    ping_interval: float = _f(60.0, "Seconds of client silence before the server pings (XEP-0199)")
    ping_timeout: float = _f(30.0, "Seconds to wait for the ping reply before dropping the session")
    negotiation_timeout: float = _f(
        30.0, "Seconds a client has to authenticate and bind (connection-timeout)"
    )
    log_level: str = _f("INFO", "Logging level")
    log_json: bool = _f(False, "Log as JSON lines")
    gc_threshold: int = _f(
        20000, "Allocations between Python's young garbage collections (0: Python's default)"
    )
    contact_addresses: list[str] = _f(
        ["mailto:admin@localhost"], "XEP-0157 admin addresses in disco#info, comma separated"
    )
    server_name: str = _f("xmppd", "Software name reported by XEP-0092")
    node_id: str = _f("", "This node's name in the cluster; empty means hostname-pid")
    # ---- cluster mode ----
    redis_url: str = _f("redis://127.0.0.1:6379/0", "Redis for the session registry (cluster mode)")
    redis_prefix: str = _f("xmppd:", "Prefix of every Redis key (clusters may share a Redis)")
    redis_pool_size: int = _f(32, "Redis connections per process (callers wait for a free one)")
    grpc_listen: str = _f("127.0.0.1:0", "host:port the gRPC server of this process binds")
    router_addrs: list[str] = _f(["127.0.0.1:50052"], "Router replicas' gRPC addresses")
    presence_addrs: list[str] = _f(["127.0.0.1:50053"], "Presence replicas' gRPC addresses")
    storage_addrs: list[str] = _f(["127.0.0.1:50054"], "Storage replicas' gRPC addresses")
    edge_advertise: str = _f("", "Where others reach this edge's gRPC; empty: the bound address")
    node_ttl: float = _f(10.0, "Seconds without heartbeat before an edge counts as dead")
    route_timeout: float = _f(10.0, "Seconds an edge holds stanzas while no router answers")
    direct_delivery: bool = _f(
        True, "Edges send messages and IQs for a full JID straight to the recipient's edge"
    )
    # ---- REST admin API ----
    admin_host: str = _f("127.0.0.1", "Address the REST admin API binds to")
    admin_port: int = _f(-1, "REST admin API port (-1 disables, 0 picks a free port)")
    admin_tokens: list[str] = _f(
        [],
        "Admin API bearer tokens as TOKEN:scope,scope (scopes: read, write, admin); "
        "in the variable, scopes follow their token",
    )
    admin_tokens_file: str = _f(
        "", "File of admin API tokens, one TOKEN:scope,scope a line (a mounted secret)"
    )
    ops_host: str = _f("0.0.0.0", "Address the /metrics, /healthz and /readyz HTTP server binds to")
    ops_port: int = _f(
        9100,
        "Port of the /metrics, /healthz and /readyz HTTP server (-1 disables, 0 picks a free port)",
    )

    @property
    def default_host(self) -> str:
        return self.hosts[0]

    def resolved_database_url(self) -> str:
        return self.database_url or f"sqlite:///{Path(self.data_dir) / 'xmppd.db'}"

    def cert_paths(self) -> tuple[Path, Path]:
        d = Path(self.data_dir)
        return (
            Path(self.tls_cert) if self.tls_cert else d / "cert.pem",
            Path(self.tls_key) if self.tls_key else d / "key.pem",
        )

    @classmethod
    def load(
        cls, path: str | None = None, env: dict[str, str] | None = None, **overrides: Any
    ) -> Settings:
        env = dict(os.environ) if env is None else env
        values: dict[str, Any] = {}
        path = path or env.get("XMPPD_CONFIG")
        if path:
            try:
                with open(path, "rb") as fh:
                    values.update(tomllib.load(fh))
            except (OSError, tomllib.TOMLDecodeError) as exc:
                raise ConfigError(f"config file {path}: {exc}") from None
        names = {f.name: f for f in dataclasses.fields(cls)}
        for key in values:
            if key not in names:
                raise ConfigError(f"unknown setting {key!r} in {path}")
        for name in names:
            env_key = f"XMPPD_{name.upper()}"
            if env_key in env:
                values[name] = env[env_key]
        values.update(overrides)
        out: dict[str, Any] = {}
        for name, raw in values.items():
            out[name] = _coerce(name, names[name].type, raw)
        settings = cls(**out)
        if not settings.hosts:
            raise ConfigError("hosts: at least one domain is required")
        settings.hosts = [h.strip().lower() for h in settings.hosts]
        return settings


def _coerce(name: str, typ: Any, raw: Any) -> Any:
    t = str(typ)
    try:
        if t == "bool":
            if isinstance(raw, bool):
                return raw
            s = str(raw).strip().lower()
            if s in ("1", "true", "yes", "on"):
                return True
            if s in ("0", "false", "no", "off"):
                return False
            raise ValueError(raw)
        if t == "int":
            return int(raw)
        if t == "float":
            return float(raw)
        if t.startswith("list"):
            if isinstance(raw, list):
                return [str(x) for x in raw]
            return [p.strip() for p in str(raw).split(",") if p.strip()]
        return str(raw)
    except (TypeError, ValueError):
        raise ConfigError(f"setting {name!r}: cannot read {raw!r} as {t}") from None


def settings_table() -> str:
    """The README's configuration table, generated from the fields."""
    rows = ["| setting | environment variable | default | meaning |", "|---|---|---|---|"]
    for f in dataclasses.fields(Settings):
        default = f.default if f.default is not dataclasses.MISSING else f.default_factory()  # type: ignore[misc,operator]
        if isinstance(default, list):
            default = ",".join(default)
        rows.append(
            f"| `{f.name}` | `XMPPD_{f.name.upper()}` | `{default}` | {f.metadata['doc']} |"
        )
    return "\n".join(rows)
