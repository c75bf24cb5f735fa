"""The embedded default: every service in one process, wired directly.

SQLite for storage, an in-process session registry instead of Redis, direct
calls instead of gRPC. The cluster launcher wires the same service classes
through gRPC adapters instead.
"""

from __future__ import annotations

import asyncio
import logging
import os
import socket
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING

from prometheus_client import CollectorRegistry

from ..admin import control
from ..admin.commands import AdminContext
from ..app.startup import load_tls, open_configured_database
from ..core.feature import FeatureSet
from ..core.pubsub import CONTRACT as PUBSUB_CONTRACT
from ..core.routing import LocalEdges
from ..edge.server import EdgeServer
from ..features.catalog import load_configured
from ..muc.service import MucHost, muc_services
from ..platform.config import Settings, StartupError
from ..platform.db import Database, timed_database
from ..platform.metrics import KINDS, Metrics, ServerStats
from ..platform.migrate import migrate
from ..platform.ops_http import OpsHTTPServer
from ..presence.service import PresenceService
from ..pubsub.service import PubsubDomain, PubsubHost, pubsub_domains, pubsub_limits
from ..router.domains import LocalComponents
from ..router.registry import LocalRegistry
from ..router.service import RouterService
from ..storage.store import Store

if TYPE_CHECKING:
    from ..admin.api import ApiServer
    from ..admin.auth import TokenStore

log = logging.getLogger("xmppd")


@dataclass
class EmbeddedServer:
    settings: Settings
    db: Database | None = None
    store: Store | None = None
    router: RouterService | None = None
    edge: EdgeServer | None = None
    addresses: list[tuple[str, int]] = field(default_factory=list)
    control: asyncio.AbstractServer | None = None
    metrics: Metrics | None = None  # on this server's own registry (not the global one)
    stats: ServerStats | None = None
    ops: OpsHTTPServer | None = None
    ops_port: int = -1  # the bound /metrics, /healthz, /readyz port; -1: not serving
    admin: AdminContext | None = None  # what the control socket and the admin API run on
    admin_api: ApiServer | None = None
    admin_port: int = -1  # the bound REST admin API port; -1: not serving

    @property
    def c2s_port(self) -> int:
        return self.addresses[0][1]

    @property
    def direct_tls_port(self) -> int:
        return self.addresses[1][1]

    @property
    def http_port(self) -> int:
        """The bound web listener's port (WebSocket, BOSH); -1 when not listening."""
        return self.edge.http_port if self.edge is not None else -1

    @property
    def component_port(self) -> int:
        """The bound XEP-0114 component listener's port; -1 when not listening."""
        return self.edge.component_port if self.edge is not None else -1

    async def start(self) -> None:
        s = self.settings
        admin_tokens = self._admin_tokens()  # a bad token entry fails before anything starts
        try:
            Path(s.data_dir).mkdir(parents=True, exist_ok=True)
        except OSError as exc:
            raise StartupError("data_dir", s.data_dir, exc.strerror or exc) from None
        ctx, cb = load_tls(s)
        self.metrics = metrics = Metrics(CollectorRegistry())
        self.db = await open_configured_database(s)
        applied = await migrate(self.db)
        if applied:
            log.info("applied migrations: %s", ", ".join(applied))
        self.db = timed_database(self.db, metrics.db_timers)
        self.store = Store(self.db)
        registry = LocalRegistry()
        edges = LocalEdges()
        components = LocalComponents()  # one directory for the router and the edge
        self.router = RouterService(
            s,
            self.store,
            registry,
            FeatureSet(load_configured(s.features_extra)),
            metrics=metrics,
            edges=edges,
            presence=PresenceService,
            components=components,
        )
        # group chat of each host (XEP-0045): rooms in this process
        muc = muc_services(s, metrics)
        for domain, service in muc.items():
            self.router.domains.register(domain, "Chatrooms", service)
        # publish-subscribe domains and every account's PEP service (XEP-0060/0163)
        pubsub = PubsubHost(self.router, pubsub_domains(s), pubsub_limits(s), metrics=metrics)
        self.router.contracts[PUBSUB_CONTRACT] = pubsub
        for domain in pubsub.domains:
            self.router.domains.register(domain, "Publish-Subscribe", PubsubDomain(pubsub))
        node = s.node_id or f"{socket.gethostname()}-{os.getpid()}"
        self.edge = edge = EdgeServer(
            s,
            self.router,
            self.store,
            ctx,
            cb,
            node,
            metrics=metrics,
            components=components,
            context=self.router,
        )
        edges[node] = edge
        try:
            self.addresses = await self.edge.start()
        except OSError as exc:
            ports = f"{s.c2s_host}:{s.c2s_port},{s.c2s_direct_tls_port}"
            raise StartupError("c2s_port", ports, exc.strerror or exc) from None
        self.admin = AdminContext(
            self.store,
            s.hosts,
            registry,
            self.router.edges,
            router=self.router,
            throttle=edge.throttle,
            muc=MucHost(self.router, muc),
            muc_domains=list(muc),
            pubsub=pubsub,
            pubsub_domains=pubsub_domains(s),
            stanza_count=lambda: int(
                sum(
                    metrics.registry.get_sample_value("xmppd_stanzas_in_total", {"kind": k}) or 0
                    for k in KINDS
                )
            ),
        )
        self.control = await control.serve(self.admin, control.socket_path(s.data_dir))
        if admin_tokens is not None:
            await self._start_admin_api(admin_tokens)
        for host, port in self.addresses:
            log.info("listening on %s:%d", host, port)
        if edge.component_address is not None:
            log.info("component listener on %s:%d", *edge.component_address)
        if edge.http_address is not None:
            host, port = edge.http_address
            log.info("web listener on %s:%d (/xmpp-websocket, /http-bind)", host, port)
        # the figures one process exports for the whole service (see metrics.py)
        metrics.sessions.labels(node).set_function(lambda: len(edge.local))
        metrics.edge_up.labels(node).set_function(lambda: float(self._edge_listening()))
        self.stats = ServerStats(
            metrics, storage=self.store, hosts=s.hosts, sessions=registry, db=self.db
        )
        await self.stats.start()  # also counts the offline queue once
        if s.ops_port >= 0:
            ops = OpsHTTPServer(
                metrics.registry, {"listeners": self._listeners_up, "database": self._db_answers}
            )
            try:
                self.ops_port = await ops.start(s.ops_host, s.ops_port)
            except OSError as exc:  # metrics and probes are not worth refusing XMPP service
                log.error("cannot serve /metrics on %s:%d: %s", s.ops_host, s.ops_port, exc)
            else:
                self.ops = ops
                log.info("metrics and health on http://%s:%d/", s.ops_host, self.ops_port)

    def _admin_tokens(self) -> TokenStore | None:
        if self.settings.admin_port < 0:
            return None
        from ..admin.auth import load_tokens

        tokens = load_tokens(self.settings)
        if not len(tokens):
            log.warning("the admin API has no tokens (admin_tokens): it will refuse every request")
        return tokens

    async def _start_admin_api(self, tokens: TokenStore) -> None:
        from ..admin.api import ApiServer, create_app

        s, admin = self.settings, self.admin
        assert admin is not None
        api = ApiServer(create_app(lambda: admin, tokens))
        try:
            self.admin_port = await api.start(s.admin_host, s.admin_port)
        except OSError as exc:  # like /metrics: not worth refusing XMPP service
            log.error("cannot serve the admin API on %s:%d: %s", s.admin_host, s.admin_port, exc)
        else:
            self.admin_api = api
            log.info("admin API on http://%s:%d/api/v1/docs", s.admin_host, self.admin_port)

    def _edge_listening(self) -> bool:
        servers = self.edge.servers if self.edge is not None else []
        return bool(servers) and all(x.is_serving() for x in servers)

    async def _listeners_up(self) -> bool:
        return self._edge_listening()

    async def _db_answers(self) -> bool:
        return self.db is not None and await self.db.fetchval("SELECT 1") == 1

    async def stop(self) -> None:
        if self.admin_api is not None:
            await self.admin_api.stop()
            self.admin_api = None
        if self.admin is not None:
            await self.admin.jobs.close()
        if self.stats is not None:
            await self.stats.stop()
        if self.control is not None:
            self.control.close()
            control.socket_path(self.settings.data_dir).unlink(missing_ok=True)
        if self.edge is not None:
            await self.edge.stop()
        if self.ops is not None:
            await self.ops.stop()
        if self.db is not None:
            await self.db.close()

    async def serve_forever(self) -> None:
        import signal

        # handlers first: a SIGTERM that arrives while starting (a supervisor
        # that gives up quickly) must still end in a clean stop, not a kill
        stop = asyncio.Event()
        loop = asyncio.get_running_loop()
        for sig in (signal.SIGINT, signal.SIGTERM):
            loop.add_signal_handler(sig, stop.set)
        await self.start()
        await stop.wait()
        log.info("shutting down")
        await self.stop()
