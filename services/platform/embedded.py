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

from ..admin import control
from ..admin.commands import AdminContext
from ..edge.server import EdgeServer
from ..features.base import FeatureSet
from ..features.catalog import load_features
from ..presence.service import PresenceService
from ..router.registry import LocalRegistry
from ..router.service import RouterService
from ..storage.store import Store
from ..xmpp.sasl import tls_server_end_point
from . import tls
from .config import Settings
from .db import Database, open_database
from .migrate import migrate

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

    @property
    def c2s_port(self) -> int:
        return self.addresses[0][1]

    @property
    def direct_tls_port(self) -> int:
        return self.addresses[1][1]

    async def start(self) -> None:
        s = self.settings
        Path(s.data_dir).mkdir(parents=True, exist_ok=True)
        cert, key = s.cert_paths()
        if tls.ensure_self_signed(cert, key, s.hosts):
            log.info("created a self-signed certificate for %s in %s", ",".join(s.hosts), cert)
        ctx = tls.server_context(cert, key)
        cb = tls_server_end_point(tls.cert_der(cert))
        self.db = await open_database(s.resolved_database_url())
        applied = await migrate(self.db)
        if applied:
            log.info("applied migrations: %s", ", ".join(applied))
        self.store = Store(self.db)
        registry = LocalRegistry()
        self.router = RouterService(s, self.store, registry, FeatureSet(load_features()))
        self.router.presence = PresenceService(self.router)
        node = s.node_id or f"{socket.gethostname()}-{os.getpid()}"
        self.edge = EdgeServer(s, self.router, self.store, ctx, cb, node)
        self.router.attach_edge(self.edge)
        self.addresses = await self.edge.start()
        self.control = await control.serve(
            AdminContext(self.store, s.hosts, registry, self.router.edges),
            control.socket_path(s.data_dir),
        )
        for host, port in self.addresses:
            log.info("listening on %s:%d", host, port)

    async def stop(self) -> None:
        if self.control is not None:
            self.control.close()
            control.socket_path(self.settings.data_dir).unlink(missing_ok=True)
        if self.edge is not None:
            await self.edge.stop()
        if self.db is not None:
            await self.db.close()

    async def serve_forever(self) -> None:
        import signal

        await self.start()
        stop = asyncio.Event()
        loop = asyncio.get_running_loop()
        for sig in (signal.SIGINT, signal.SIGTERM):
            loop.add_signal_handler(sig, stop.set)
        await stop.wait()
        log.info("shutting down")
        await self.stop()
