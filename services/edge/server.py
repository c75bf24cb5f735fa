"""The edge node: client listeners, the local session table, keepalives.

It implements :class:`~services.router.interface.EdgeLink` so the router can
deliver stanzas to the sessions it holds.
"""

from __future__ import annotations

import asyncio
import logging
import socket
import ssl
import time
from typing import TYPE_CHECKING

from ..storage.interface import Storage
from ..xmpp import c2s
from ..xmpp.errors import StreamCondition, StreamError
from ..xmpp.jid import JID
from .connection import C2SConnection

if TYPE_CHECKING:
    from ..platform.config import Settings
    from ..platform.metrics import Metrics
    from ..router.service import RouterService

log = logging.getLogger("xmppd.edge")


class EdgeServer:
    def __init__(
        self,
        settings: Settings,
        router: RouterService,
        storage: Storage,
        ssl_context: ssl.SSLContext,
        cb_data: bytes | None,
        node_id: str,
        metrics: Metrics | None = None,
    ) -> None:
        self.settings = settings
        self.router = router
        self.storage = storage
        self.ssl_context = ssl_context
        self.cb_data = cb_data
        self.node_id = node_id
        self.connections: set[C2SConnection] = set()
        self.local: dict[JID, C2SConnection] = {}
        self.servers: list[asyncio.Server] = []
        self._housekeeping: asyncio.Task[None] | None = None
        self._extra_features: list[bytes] | None = None
        if metrics is None:
            from ..platform.metrics import Metrics

            metrics = Metrics()  # a private registry nobody scrapes: no-op
        self.metrics = metrics

    def stream_config(self, direct_tls: bool) -> c2s.StreamConfig:
        if self._extra_features is None:
            from ..features import disco

            self._extra_features = [
                *self.router.features.stream_features(),
                disco.caps_feature(self.router),
            ]
        s = self.settings
        return c2s.StreamConfig(
            hosts=frozenset(s.hosts),
            tls_available=True,
            require_tls=s.require_tls,
            direct_tls=direct_tls,
            allow_plain=s.allow_plain,
            registration=s.registration,
            max_stanza_size=s.max_stanza_size,
            cb_data=self.cb_data,
            extra_features=self._extra_features,
        )

    # ---- EdgeLink ------------------------------------------------------------

    async def deliver(self, jid: JID, data: bytes) -> bool:
        conn = self.local.get(jid)
        if conn is None:
            return False
        conn.deliver(data)
        return True

    async def close_session(self, jid: JID, condition: str, text: str | None = None) -> bool:
        conn = self.local.pop(jid, None)
        if conn is None:
            return False
        if condition == "conflict":
            conn.replaced = True
        conn.close(StreamError(StreamCondition(condition), text))
        return True

    # ---- listeners -------------------------------------------------------------

    async def start(self) -> list[tuple[str, int]]:
        loop = asyncio.get_running_loop()
        s = self.settings
        bound: list[tuple[str, int]] = []
        for port, direct in ((s.c2s_port, False), (s.c2s_direct_tls_port, True)):
            if port < 0:
                continue  # disabled; 0 means "any free port" (tests)
            server = await loop.create_server(
                lambda direct=direct: C2SConnection(self, direct),  # type: ignore[misc]
                host=s.c2s_host,
                port=port,
                ssl=self.ssl_context if direct else None,
                reuse_address=True,
                backlog=1024,
            )
            for sock in server.sockets:
                sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
            self.servers.append(server)
            bound.append(server.sockets[0].getsockname()[:2])
        self._housekeeping = loop.create_task(self._keepalive_loop())
        return bound

    async def stop(self) -> None:
        """Stop listening and close every stream with system-shutdown."""
        for server in self.servers:
            server.close()
        if self._housekeeping is not None:
            self._housekeeping.cancel()
        for conn in list(self.connections):
            conn.close(StreamError(StreamCondition.SYSTEM_SHUTDOWN))
        # let teardown tasks run (unavailable presence, last activity)
        for _ in range(3):
            await asyncio.sleep(0.05)
        for server in self.servers:
            await server.wait_closed()

    async def _keepalive_loop(self) -> None:
        s = self.settings
        tick = max(
            0.2, min(5.0, s.ping_timeout / 3, s.negotiation_timeout / 3, s.ping_interval / 3)
        )
        while True:
            await asyncio.sleep(tick)
            now = time.monotonic()
            for conn in list(self.connections):
                if conn.jid is None:
                    if now - conn.opened > s.negotiation_timeout:
                        conn.close(StreamError(StreamCondition.CONNECTION_TIMEOUT))
                    continue
                if conn.ping_id is not None:
                    if now - conn.ping_sent > s.ping_timeout:
                        conn.close(StreamError(StreamCondition.CONNECTION_TIMEOUT))
                elif now - conn.last_rx > s.ping_interval:
                    conn.send_ping()
