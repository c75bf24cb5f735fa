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

#: the values of Settings.http_secure
HTTP_SECURE = ("always", "loopback", "never")
#: XEP-0313 default archiving modes (the "default" attribute of <prefs/>)
MAM_DEFAULTS = ("always", "roster", "never")


class ConfigError(ValueError):
    pass


class StartupError(RuntimeError):
    """The server cannot start because of what a setting names (a folder it
    cannot write, a port in use, a database it cannot open): one line for
    the operator, naming the setting, instead of a traceback."""

    def __init__(self, setting: str, value: object, reason: object) -> None:
        super().__init__(f"{setting} = {value!s}: {reason}")
        self.setting = setting


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
    preauth_stanza_size: int = _f(
        16384, "Largest element accepted before authentication, bytes (policy-violation past it)"
    )
    max_auth_failures: int = _f(
        3, "Failed SASL attempts on one connection before it is closed (policy-violation)"
    )
    offline_quota: int = _f(1000, "Offline messages kept per user (service-unavailable past it)")
    ping_interval: float = _f(60.0, "Seconds of client silence before the server pings (XEP-0199)")
    ping_timeout: float = _f(30.0, "Seconds to wait for the ping reply before dropping the session")
    negotiation_timeout: float = _f(
        30.0,
        "Seconds a client has to complete the TLS handshake, authenticate and bind "
        "(connection-timeout)",
    )
    # ---- limits (docs/operations.md, "Limits") ----
    max_unauthenticated_per_ip: int = _f(
        20,
        "Connections from one IP address not yet bound; past it new ones get a "
        "policy-violation stream error (0: no limit)",
    )
    connection_rate_per_ip: float = _f(
        20.0, "New connections per second from one IP address (policy-violation past it; 0: off)"
    )
    connection_burst_per_ip: int = _f(
        40, "New connections one IP address may open at once before connection_rate_per_ip holds"
    )
    shaper_rate: int = _f(
        50000, "Bytes per second read from each client; past it reading pauses (0: no shaper)"
    )
    shaper_rate_admin: int = _f(
        500000, "Bytes per second read from an account listed in admins (0: no shaper)"
    )
    shaper_burst: float = _f(
        2.0, "Seconds of a client's shaper rate it may send at once before being paused"
    )
    max_output_buffer: int = _f(
        16 * 1024 * 1024,
        "Bytes of unread output kept for a bound client; past it the stream is closed "
        "with resource-constraint",
    )
    max_output_buffer_unauthenticated: int = _f(
        256 * 1024, "The same limit before the client has bound a resource"
    )
    csi_max_held: int = _f(
        256,
        "Presence and chat-state stanzas held back for a client that said it is inactive "
        "(XEP-0352), one per sender and kind; past it (or past max_output_buffer bytes) "
        "all are sent (0: hold nothing)",
    )
    sm_resume_timeout: float = _f(
        300.0,
        "Seconds a client session with resumable stream management (XEP-0198) is kept after "
        "its connection is lost, for the client to resume it; a client may ask for less "
        "(0: no resumption)",
    )
    sm_max_unacked: int = _f(
        1000,
        "Stanzas sent to a client with stream management (XEP-0198) and not acknowledged; "
        "past it the stream is closed with policy-violation (a resumable session is kept, "
        "a detached one ends)",
    )
    sm_request_every: int = _f(
        5,
        "Stanzas sent to a client with stream management (XEP-0198) before the server asks "
        "for an acknowledgement; fewer are asked for at the next keepalive tick (0: only then)",
    )
    admins: list[str] = _f(
        [], "Bare JIDs of server administrators (higher shaper rate), comma separated"
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
    # ---- password guessing and registration limits (services/security/throttle.py) ----
    auth_ip_max_failures: int = _f(
        10,
        "Failed authentications from one IP address within auth_failure_window that block "
        "the address for auth_ip_block_time (policy-violation); 0: never",
    )
    auth_failure_window: float = _f(
        600.0, "Seconds failed authentications are counted over, per IP address and per account"
    )
    auth_ip_block_time: float = _f(600.0, "Seconds a blocked IP address stays blocked")
    auth_account_delay: float = _f(
        0.5,
        "Seconds the next attempt on an account waits after a failed one, doubling with each "
        "further failure, reset by a success (0: no delay)",
    )
    auth_account_delay_max: float = _f(8.0, "Longest per-account delay, seconds")
    registration_limit_per_hour: int = _f(
        5, "In-band registrations from one IP address per hour (0: unlimited)"
    )
    # ---- cluster mode ----
    redis_url: str = _f("redis://127.0.0.1:6379/0", "Redis for the session registry (cluster mode)")
    redis_prefix: str = _f("xmppd:", "Prefix of every Redis key (clusters may share a Redis)")
    redis_pool_size: int = _f(32, "Redis connections per process (callers wait for a free one)")
    grpc_listen: str = _f("127.0.0.1:0", "host:port the gRPC server of this process binds")
    router_addrs: list[str] = _f(["127.0.0.1:50052"], "Router replicas' gRPC addresses")
    presence_addrs: list[str] = _f(["127.0.0.1:50053"], "Presence replicas' gRPC addresses")
    storage_addrs: list[str] = _f(["127.0.0.1:50054"], "Storage replicas' gRPC addresses")
    muc_addrs: list[str] = _f(["127.0.0.1:50055"], "Group chat (muc role) replicas' gRPC addresses")
    pubsub_addrs: list[str] = _f(
        ["127.0.0.1:50056"], "Publish-subscribe (pubsub role) replicas' gRPC addresses"
    )
    edge_advertise: str = _f("", "Where others reach this edge's gRPC; empty: the bound address")
    node_ttl: float = _f(
        10.0, "Seconds without heartbeat before an edge, a muc or a pubsub replica counts as dead"
    )
    grpc_advertise: str = _f(
        "",
        "Where other processes reach this muc or pubsub replica's gRPC; empty: the bound address",
    )
    route_timeout: float = _f(10.0, "Seconds an edge holds stanzas while no router answers")
    direct_delivery: bool = _f(
        True, "Edges send messages and IQs for a full JID straight to the recipient's edge"
    )
    features_extra: list[str] = _f(
        [],
        "Import paths of further feature modules to load (each exports FEATURE), comma separated",
    )
    # ---- external components (XEP-0114) ----
    components: list[str] = _f(
        [],
        "External components as DOMAIN:SECRET (XEP-0114), comma separated; "
        "the listener is open while one is configured",
    )
    component_host: str = _f("127.0.0.1", "Address the component listener binds to")
    component_port: int = _f(
        5347, "Port of the component listener (-1 disables, 0 picks a free port)"
    )
    # ---- web transports: WebSocket (RFC 7395), BOSH (XEP-0124/0206), XEP-0156 ----
    http_host: str = _f("0.0.0.0", "Address the web listener (WebSocket, BOSH, host-meta) binds to")
    http_port: int = _f(
        5280,
        "Port of the web listener: /xmpp-websocket, /http-bind, /.well-known/host-meta "
        "(-1 disables, 0 picks a free port)",
    )
    http_secure: str = _f(
        "loopback",
        "Whether plain HTTP on the web listener counts as secure, so clients may "
        "authenticate over it: always (behind a TLS-terminating proxy or Ingress), "
        "loopback (only clients on 127.0.0.1 and ::1), never",
    )
    http_public_url: str = _f(
        "",
        "Base URL browsers reach the web listener at, for host-meta (https://chat.example.com); "
        "empty: from each request's Host header",
    )
    http_cors_origins: list[str] = _f(
        ["*"],
        "Origins whose pages may use BOSH and host-meta (CORS), comma separated; * for any",
    )
    http_trusted_proxies: list[str] = _f(
        [],
        "Addresses or networks (CIDR) of proxies in front of the web listener whose "
        "X-Forwarded-For and X-Forwarded-Proto are believed, comma separated; * for any. "
        "Per-IP limits then count the client, not the proxy",
    )
    bosh_max_wait: int = _f(
        60, "Longest a BOSH request is held, seconds (a longer 'wait' is lowered to it)"
    )
    bosh_max_hold: int = _f(1, "Most BOSH requests held at once (a larger 'hold' is lowered)")
    bosh_inactivity: int = _f(60, "Seconds a BOSH session may go without a request before it ends")
    # ---- multi-user chat (XEP-0045) ----
    muc_subdomain: str = _f(
        "conference",
        "Group chat service of each host at <muc_subdomain>.<host> (empty: no group chat)",
    )
    muc_max_occupants: int = _f(200, "Most occupants of one room (owners and admins may exceed it)")
    muc_max_history: int = _f(50, "Most messages of history a room keeps and sends on join")
    muc_max_rooms_per_user: int = _f(100, "Most rooms one user may own")
    pubsub_subdomain: str = _f(
        "pubsub",
        "Publish-subscribe service of each host at <pubsub_subdomain>.<host> (empty: PEP only,"
        " and no entity capabilities asked, so no +notify)",
    )
    pubsub_max_items: int = _f(1000, "Most items a pubsub or PEP node keeps (its max_items cap)")
    pubsub_max_payload: int = _f(65536, "Largest item payload, in bytes")
    pubsub_max_nodes: int = _f(1000, "Most nodes of one pubsub service or PEP account")
    # ---- message archives (XEP-0313) ----
    mam_default: str = _f(
        "always",
        "Archive a user's messages by default: always, roster (only with contacts), never;"
        " each user can change it (MAM preferences)",
    )
    mam_retention_days: float = _f(
        0.0, "Archived messages older than this are deleted (0 keeps them for ever)"
    )
    mam_max_page: int = _f(250, "Most messages one archive query answers (RSM max above is cut)")
    # ---- push notifications (XEP-0357) ----
    push_max_registrations: int = _f(
        10,
        "Push registrations (app server and node) one user may enable; past it enable is"
        " refused with not-acceptable (0: no limit)",
    )
    push_include_body: bool = _f(
        False,
        "Put the message body in push notifications (last-message-body); off by default, since"
        " the app server and the phone vendor's push service would read it",
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
    ops_host: str = _f(
        "127.0.0.1",
        "Address the /metrics, /healthz and /readyz HTTP server binds to "
        "(the container image and manifests set 0.0.0.0 for Prometheus)",
    )
    ops_port: int = _f(
        9100,
        "Port of the /metrics, /healthz and /readyz HTTP server (-1 disables, 0 picks a free port)",
    )

    def component_secrets(self) -> dict[str, str]:
        """domain -> shared secret of each configured external component."""
        out: dict[str, str] = {}
        for entry in self.components:
            domain, _sep, secret = entry.partition(":")
            out[domain.strip().lower()] = secret
        return out

    def component_domains(self) -> dict[str, str]:
        """domain -> name shown in disco#items, of each configured component."""
        return {d: d for d in self.component_secrets()}

    @property
    def default_host(self) -> str:
        return self.hosts[0]

    def resolved_database_url(self) -> str:
        # the database module reads everything after "sqlite://" as the path,
        # so a relative data_dir must be made absolute here, or "./data"
        # would become "/data" at the filesystem root
        return self.database_url or f"sqlite://{Path(self.data_dir).absolute() / 'xmppd.db'}"

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
        settings.admins = _bare_jids("admins", settings.admins)
        if settings.http_secure not in HTTP_SECURE:
            raise ConfigError(
                f"http_secure: {settings.http_secure!r} is not one of {', '.join(HTTP_SECURE)}"
            )
        if settings.mam_default not in MAM_DEFAULTS:
            raise ConfigError(
                f"mam_default: {settings.mam_default!r} is not one of {', '.join(MAM_DEFAULTS)}"
            )
        if settings.mam_max_page < 1:
            raise ConfigError("mam_max_page: at least 1")
        if settings.push_max_registrations < 0:
            raise ConfigError("push_max_registrations: at least 0")
        if settings.bosh_max_wait < 1 or settings.bosh_max_hold < 1 or settings.bosh_inactivity < 1:
            raise ConfigError("bosh_max_wait, bosh_max_hold, bosh_inactivity: at least 1")
        for entry in settings.components:
            domain, sep, secret = entry.partition(":")
            if not sep or not domain.strip() or not secret:
                raise ConfigError(f"components: {entry!r} is not DOMAIN:SECRET")
            if domain.strip().lower() in settings.hosts:
                raise ConfigError(f"components: {domain!r} is a host of this server")
        return settings


def _bare_jids(name: str, values: list[str]) -> list[str]:
    """Normalized the way bound JIDs print, so a membership test is exact."""
    from ..xmpp.jid import JID, JIDError

    try:
        return [str(JID.parse(v).bare) for v in values]
    except JIDError as exc:
        raise ConfigError(f"setting {name!r}: {exc}") from None


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
