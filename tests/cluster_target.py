"""The cluster as a test target for the server-core suite (tests/e2e).

A :class:`ClusterThread` runs a :class:`~services.app.local.LocalCluster`
in its own thread and event loop, so one cluster can serve many tests whose
event loops come and go. :class:`ClusterServer` is what a test sees as its
``server``: the same attributes the e2e tests use of an ``EmbeddedServer``.
"""

from __future__ import annotations

import asyncio
import secrets
import signal
import threading
from pathlib import Path
from typing import Any

from services.app.local import LocalCluster
from services.platform.db import Database, open_database
from services.storage.store import Store


class ClusterThread:
    def __init__(self, data_dir: Path, overrides: dict[str, Any] | None = None) -> None:
        tag = secrets.token_hex(4)
        env = {
            "XMPPD_NODE_TTL": "3",
            "XMPPD_ROUTE_TIMEOUT": "5",
            "XMPPD_REGISTRATION": "true",
            "XMPPD_LOG_LEVEL": "WARNING",
            "XMPPD_OPS_PORT": "-1",
            # the suite opens many connections from 127.0.0.1 (as make_settings)
            "XMPPD_MAX_UNAUTHENTICATED_PER_IP": "100000",
            "XMPPD_CONNECTION_RATE_PER_IP": "100000",
            "XMPPD_CONNECTION_BURST_PER_IP": "100000",
            "XMPPD_SHAPER_RATE": "100000000",
            # the suite fails logins and registers accounts on purpose
            "XMPPD_AUTH_IP_MAX_FAILURES": "0",
            "XMPPD_AUTH_ACCOUNT_DELAY": "0",
            "XMPPD_REGISTRATION_LIMIT_PER_HOUR": "0",
        }
        for k, v in (overrides or {}).items():
            if isinstance(v, list):
                v = ",".join(map(str, v))
            env[f"XMPPD_{k.upper()}"] = str(v).lower() if isinstance(v, bool) else str(v)
        self.cluster = LocalCluster(
            data_dir, database=f"xmppd_e2e_{tag}", redis_prefix=f"xmppd-e2e-{tag}:", extra_env=env
        )
        self.loop = asyncio.new_event_loop()
        self.thread = threading.Thread(target=self.loop.run_forever, daemon=True)
        self.thread.start()

    def _run(self, coro: Any, timeout: float = 120) -> Any:
        return asyncio.run_coroutine_threadsafe(coro, self.loop).result(timeout)

    def start(self) -> None:
        self._run(self.cluster.prepare_database(fresh=True))
        self._run(self.cluster.start())

    def stop(self) -> None:
        try:
            self._run(self.cluster.stop())
            self._run(self.cluster.clear_redis())
            self._run(self.cluster.drop_database())
        finally:
            self.loop.call_soon_threadsafe(self.loop.stop)
            self.thread.join(10)

    def edge_port(self, i: int = 0, direct_tls: bool = False) -> int:
        return self.cluster.edges[i].c2s_ports[1 if direct_tls else 0]

    def component_port(self, i: int = 0) -> int:
        """Edge ``i``'s XEP-0114 listener (-1 without configured components)."""
        return self.cluster.edges[i].component_port

    def http_port(self, i: int = 0) -> int:
        """Edge ``i``'s web listener (WebSocket, BOSH, host-meta)."""
        return self.cluster.edges[i].http_port


class ClusterServer:
    """The cluster seen through the EmbeddedServer attributes tests use."""

    def __init__(self, ct: ClusterThread) -> None:
        self.ct = ct
        self.c2s_port = ct.edge_port(0)
        self.direct_tls_port = ct.edge_port(0, direct_tls=True)
        self.db: Database | None = None
        self.store: Store | None = None

    @property
    def http_port(self) -> int:
        """The first edge's web listener, where browser clients connect."""
        return self.ct.http_port(0)

    @property
    def component_port(self) -> int:
        """The last edge's component listener: clients use the first edge, so
        stanzas between a client and a component cross edges."""
        return self.ct.component_port(len(self.ct.cluster.edges) - 1)

    async def open(self) -> None:
        self.db = await open_database(self.ct.cluster.database_url)
        self.store = Store(self.db)

    async def close(self) -> None:
        if self.db is not None:
            await self.db.close()

    async def session_count(self) -> int:
        import redis.asyncio as aioredis

        r = aioredis.from_url(self.ct.cluster.redis_url)
        try:
            return int(await r.get(self.ct.cluster.redis_prefix + "count") or 0)
        finally:
            await r.aclose()

    async def reset(self) -> None:
        """Between tests sharing a cluster: no sessions, empty tables, no caches."""
        import redis.asyncio as aioredis

        for _ in range(100):
            if await self.session_count() == 0:
                break
            await asyncio.sleep(0.05)
        assert self.db is not None
        tables = [
            r[0]
            for r in await self.db.fetch(
                "SELECT tablename FROM pg_tables WHERE schemaname = 'public' AND tablename <> 'schema_version'"
            )
        ]
        import asyncpg

        for attempt in range(5):
            try:
                await self.db.execute(
                    "TRUNCATE " + ", ".join(f'"{t}"' for t in tables) + " CASCADE"
                )
                break
            except asyncpg.exceptions.DeadlockDetectedError:
                # a session the test left is still ending (stream management
                # routes its unacknowledged messages to offline storage):
                # PostgreSQL broke the tie against TRUNCATE; it goes again
                if attempt == 4:
                    raise
                await asyncio.sleep(0.2)
        r = aioredis.from_url(self.ct.cluster.redis_url)
        try:
            for kind in ("blocks", "sess"):
                await r.publish(
                    self.ct.cluster.redis_prefix + "events", f'{{"t": "{kind}", "jid": "*"}}'
                )
            # every feature cache (Context.cache), every user
            await r.publish(
                self.ct.cluster.redis_prefix + "events",
                '{"t": "cache", "name": "*", "jid": "*"}',
            )
        finally:
            await r.aclose()

    async def shutdown_edge(self) -> None:
        """SIGTERM the edge the tests connect to (it drains with system-shutdown)."""
        p = self.ct.cluster.edges[0].process
        assert p is not None
        p.send_signal(signal.SIGTERM)

    async def stop(self) -> None:
        await self.close()
