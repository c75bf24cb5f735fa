"""The per-role processes of cluster mode: ``xmppd edge|router|presence|storage``.

Each wires the same service classes as the embedded default, with gRPC
clients in place of in-process objects, the Redis registry in place of the
local one and PostgreSQL behind the storage service.
"""

from __future__ import annotations

import asyncio
import logging
import os
import signal
import socket
import sys
from collections.abc import Callable, Coroutine
from typing import Any, cast

import grpc
import redis.asyncio as aioredis
from prometheus_client import CollectorRegistry

from ..features.base import FeatureSet
from ..features.catalog import load_features
from ..platform.config import Settings
from ..platform.metrics import Metrics, ServerStats
from ..platform.ops_http import OpsHTTPServer
from ..platform.startup import load_tls, open_configured_database
from ..security.throttle import Limits
from ..storage.interface import Storage
from ..xmpp.jid import JID
from .direct import DirectRouter
from .edge_rpc import EdgeDirectory, EdgeServicer
from .events import EventBus
from .redis_registry import RedisRegistry
from .redis_throttle import RedisThrottle
from .router_rpc import RouterClient, RouterServicer
from .rpc import (
    SERVER_OPTIONS,
    CallServicer,
    Channels,
    RemoteProxy,
    idempotent_methods,
    pb2_grpc,
)

log = logging.getLogger("xmppd.cluster")

STORAGE_METHODS = tuple(
    name
    for name in dir(Storage)
    if not name.startswith("_") and callable(getattr(Storage, name, None))
)
PRESENCE_METHODS = ("outbound", "inbound", "session_gone", "roster_set", "roster_remove")

# Which remote methods RemoteProxy may send twice (a retry after a timeout, or
# on another replica): those that leave the same state and give the same answer
# when run again. Every method is listed with a decision (tests hold that), so
# a new one cannot be retried by default without anyone deciding it.
STORAGE_IDEMPOTENT: dict[str, bool] = {
    # reads
    "get_account": True,
    "list_accounts": True,
    "count_accounts": True,
    "get_credentials": True,
    "get_login": True,
    "get_roster": True,
    "get_roster_item": True,
    "roster_entries_for": True,
    "count_offline": True,
    "fetch_offline": True,
    "get_vcard": True,
    "get_private": True,
    "get_blocklist": True,
    "get_last_activity": True,
    # writes of a value, or of set membership: twice is once
    "set_credentials": True,
    "set_disabled": True,
    "store_offline": True,  # the caller's key: a second copy stores nothing
    "delete_offline": True,  # by id
    "set_vcard": True,
    "set_private": True,
    "add_blocks": True,
    "remove_blocks": True,
    "set_last_activity": True,
    # the second copy answers differently ("exists", "not found", a conflict
    # with the first copy's own write), or bumps the roster version again
    "create_account": False,
    "delete_account": False,
    "put_roster_item": False,
    "delete_roster_item": False,
    "update_roster_item": False,
}
PRESENCE_IDEMPOTENT: dict[str, bool] = {
    # each routes stanzas and changes rosters or sessions: twice sends twice
    "outbound": False,
    "inbound": False,
    "session_gone": False,
    "roster_set": True,  # sets a name and groups (the repeated push is harmless)
    "roster_remove": False,  # the second answers "no such item"
}


def announce(msg: str) -> None:
    """Lifecycle lines (addresses, readiness) go to stderr whatever the log
    level: launchers and orchestration scripts wait on them."""
    print(f"xmppd: {msg}", file=sys.stderr, flush=True)


def node_name(settings: Settings, role: str) -> str:
    return settings.node_id or f"{role}-{socket.gethostname()}-{os.getpid()}"


async def _grpc_server(settings: Settings, add: Callable[[Any], None]) -> tuple[Any, str]:
    server = grpc.aio.server(options=SERVER_OPTIONS)
    add(server)
    port = server.add_insecure_port(settings.grpc_listen)
    if port == 0:
        raise OSError(f"cannot bind gRPC on {settings.grpc_listen}")
    host = settings.grpc_listen.rsplit(":", 1)[0]
    await server.start()
    addr = f"{host}:{port}"
    announce(f"grpc listening on {addr}")
    return server, addr


async def _until_signal() -> None:
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGINT, signal.SIGTERM):
        loop.add_signal_handler(sig, stop.set)
    await stop.wait()


def _metrics() -> Metrics:
    # cluster processes compare clocks across hosts: wall-clock stamps
    return Metrics(CollectorRegistry(), wall_clock=True)


async def _ops(
    settings: Settings, metrics: Metrics, checks: dict[str, Any]
) -> OpsHTTPServer | None:
    """/metrics, /healthz and /readyz of this process (ops_port -1: none)."""
    if settings.ops_port < 0:
        return None
    ops = OpsHTTPServer(metrics.registry, checks)
    try:
        port = await ops.start(settings.ops_host, settings.ops_port)
    except OSError as exc:
        log.error("cannot serve /metrics on %s:%d: %s", settings.ops_host, settings.ops_port, exc)
        return None
    announce(f"ops listening on {settings.ops_host}:{port}")
    return ops


async def _stop_ops(ops: OpsHTTPServer | None) -> None:
    if ops is not None:
        await ops.stop()


def _redis(settings: Settings) -> Any:
    # a bounded pool that makes callers wait for a connection, rather than
    # failing with "Too many connections" under a burst of concurrent stanzas
    pool = aioredis.BlockingConnectionPool.from_url(
        settings.redis_url, max_connections=settings.redis_pool_size, timeout=10
    )
    return aioredis.Redis(connection_pool=pool)


def _storage(settings: Settings, channels: Channels) -> Storage:
    return cast(
        Storage,
        RemoteProxy(
            "Storage",
            settings.storage_addrs,
            channels,
            idempotent=idempotent_methods(STORAGE_IDEMPOTENT),
        ),
    )


def _presence(settings: Settings, channels: Channels) -> RemoteProxy:
    return RemoteProxy(
        "Presence",
        settings.presence_addrs,
        channels,
        idempotent=idempotent_methods(PRESENCE_IDEMPOTENT),
    )


async def run_storage(settings: Settings) -> None:
    from ..platform.db import timed_database
    from ..storage.store import Store

    metrics = _metrics()
    raw_db = await open_configured_database(settings)
    db = timed_database(raw_db, metrics.db_timers)
    store = Store(db)
    server, _ = await _grpc_server(
        settings,
        lambda s: pb2_grpc.add_StorageServicer_to_server(CallServicer(store, STORAGE_METHODS), s),
    )

    async def db_answers() -> bool:
        return bool(await db.fetchval("SELECT 1"))

    ops = await _ops(settings, metrics, {"database": db_answers})
    announce("storage ready")
    await _until_signal()
    await server.stop(5)
    await _stop_ops(ops)
    await raw_db.close()


async def _router_core(
    settings: Settings, role: str, metrics: Metrics
) -> tuple[Any, RedisRegistry, EdgeDirectory, Channels, EventBus]:
    from ..router.service import RouterService

    channels = Channels(metrics)
    redis = _redis(settings)
    registry = RedisRegistry(redis, settings.redis_prefix, metrics)
    directory = EdgeDirectory(registry, channels)
    router = RouterService(
        settings,
        _storage(settings, channels),
        registry,
        FeatureSet(load_features()),
        metrics=metrics,
    )
    router.edges = directory
    bus = EventBus(redis, registry.p, node_name(settings, role))

    def publish_change(jid: JID) -> None:
        asyncio.get_running_loop().create_task(bus.publish("blocks", jid=str(jid)))

    router.blocks.on_invalidate.append(publish_change)

    def forget(ev: dict[str, Any]) -> None:
        if ev["jid"] == "*":
            router.blocks.clear()
        else:
            router.blocks.forget(JID.parse(ev["jid"]))

    bus.on("blocks", forget)
    # presence reads sessions, changes them and writes them back: fresh gets there
    registry.attach_bus(bus, cache_gets=role != "presence")
    await bus.start()
    await directory.refresh()
    return router, registry, directory, channels, bus


async def _refresh_loop(directory: EdgeDirectory) -> None:
    while True:
        await asyncio.sleep(1.0)
        try:
            await directory.refresh()
        except Exception:
            log.exception("edge directory refresh failed")


async def run_presence(settings: Settings) -> None:
    from ..presence.service import PresenceService

    metrics = _metrics()
    router, registry, directory, _, bus = await _router_core(settings, "presence", metrics)
    presence = PresenceService(router)
    router.presence = presence
    server, _ = await _grpc_server(
        settings,
        lambda s: pb2_grpc.add_PresenceServicer_to_server(
            CallServicer(presence, PRESENCE_METHODS), s
        ),
    )
    refresher = asyncio.get_running_loop().create_task(_refresh_loop(directory))
    ops = await _ops(settings, metrics, {"redis": registry.ping})
    announce("presence ready")
    await _until_signal()
    refresher.cancel()
    await bus.stop()
    await server.stop(5)
    await _stop_ops(ops)


async def _reap_loop(router: Any, registry: RedisRegistry, directory: EdgeDirectory) -> None:
    """Find edges whose heartbeat expired; end their sessions for everyone.

    Contacts get unavailable presence and later stanzas for those users go to
    offline storage, since the registry no longer lists the sessions.
    """
    while True:
        await asyncio.sleep(1.0)
        try:
            edges = await directory.refresh()
            for node, (_addr, alive) in edges.items():
                router.metrics.edge_up.labels(node).set(1.0 if alive else 0.0)
                if alive or not await registry.claim_reap(node):
                    continue
                jids = await registry.node_sessions(node)
                log.warning("edge %s is dead: ending %d sessions", node, len(jids))
                for jid in jids:
                    s = await registry.remove(jid)
                    if s is not None and router.presence is not None:
                        await router.presence.session_gone(s, False)
                await registry.forget_node(node)
                router.metrics.edge_up.remove(node)
        except Exception:
            log.exception("reaper pass failed")


async def run_router(settings: Settings) -> None:
    metrics = _metrics()
    router, registry, directory, channels, bus = await _router_core(settings, "router", metrics)
    router.presence = _presence(settings, channels)
    servicer = RouterServicer(router, directory)
    server, _ = await _grpc_server(
        settings, lambda s: pb2_grpc.add_RouterServicer_to_server(servicer, s)
    )
    loop = asyncio.get_running_loop()
    reaper = loop.create_task(_reap_loop(router, registry, directory))
    stats = loop.create_task(_cluster_stats(settings, metrics, router, registry))
    ops = await _ops(settings, metrics, {"redis": registry.ping})
    announce("router ready")
    await _until_signal()
    reaper.cancel()
    stats.cancel()
    await bus.stop()
    await server.stop(5)
    await _stop_ops(ops)


async def _cluster_stats(
    settings: Settings, metrics: Metrics, router: Any, registry: RedisRegistry
) -> None:
    """Cluster-wide figures (registered and online users) come from one place:
    the router replica holding a short Redis lease exports them, no other."""
    stats = ServerStats(metrics, hosts=settings.hosts)
    node = node_name(settings, "router")
    await stats.start()
    try:
        while True:
            owner = await registry.lease("stats-owner", node, ttl=15.0)
            stats.storage = router.storage if owner else None
            stats.sessions = registry if owner else None
            if owner:
                try:
                    await stats.refresh()
                except Exception:
                    log.warning("refreshing cluster statistics failed", exc_info=True)
            await asyncio.sleep(5.0)
    finally:
        await stats.stop()


async def run_edge(settings: Settings) -> None:
    from ..edge.server import EdgeServer

    node = node_name(settings, "edge")
    ctx, cb = load_tls(settings)
    metrics = _metrics()
    # the edge's own RouterService, on the cluster's registry and caches, answers
    # "which edge holds this session" for one-hop delivery (services/cluster/direct.py)
    local, registry, directory, channels, bus = await _router_core(settings, "edge", metrics)
    storage = local.storage
    remote = RouterClient(settings, FeatureSet(load_features()), storage, channels)
    router: Any = DirectRouter(local, remote, metrics) if settings.direct_delivery else remote
    # failed logins and registrations counted in Redis: a block holds on every edge
    throttle = RedisThrottle(registry.redis, settings.redis_prefix, Limits.from_settings(settings))
    edge = EdgeServer(settings, router, storage, ctx, cb, node, metrics=metrics, throttle=throttle)
    directory.pin(node, edge)
    metrics.sessions.labels(node).set_function(lambda: len(edge.local))
    remote._local_bounce = edge.deliver
    server, bound = await _grpc_server(
        settings, lambda s: pb2_grpc.add_EdgeServicer_to_server(EdgeServicer(edge), s)
    )
    advertise = settings.edge_advertise or bound
    await registry.edge_alive(node, advertise, settings.node_ttl)
    await remote.start()
    refresher = asyncio.get_running_loop().create_task(_refresh_loop(directory))

    async def heartbeat() -> None:
        while True:
            await asyncio.sleep(settings.node_ttl / 3)
            try:
                await registry.edge_alive(node, advertise, settings.node_ttl)
            except Exception:
                log.exception("heartbeat failed")

    hb = asyncio.get_running_loop().create_task(heartbeat())
    for host, port in await edge.start():
        announce(f"listening on {host}:{port}")

    async def routers_reachable() -> bool:
        return bool(remote.healthy_routers > 0)

    ops = await _ops(settings, metrics, {"routers": routers_reachable, "redis": registry.ping})
    announce(f"edge {node} ready")
    await _until_signal()
    # drain: stop accepting, tell clients system-shutdown, unbind their sessions
    await edge.stop()
    for _ in range(50):
        if remote.unacked == 0 and getattr(router, "inflight", 0) == 0:
            break
        await asyncio.sleep(0.1)
    hb.cancel()
    refresher.cancel()
    await registry.edge_gone(node)
    await bus.stop()
    await remote.stop()
    await server.stop(2)
    await _stop_ops(ops)


async def run_admin(settings: Settings) -> None:
    """The REST admin API over the cluster: the same command layer, with the
    Redis registry, the edges' gRPC links and a local router for sending."""
    from ..admin.api import ApiServer, create_app
    from ..admin.auth import load_tokens
    from ..admin.commands import AdminContext

    metrics = _metrics()
    router, registry, directory, channels, bus = await _router_core(settings, "admin", metrics)
    router.presence = _presence(settings, channels)
    refresher = asyncio.get_running_loop().create_task(_refresh_loop(directory))
    throttle = RedisThrottle(registry.redis, settings.redis_prefix, Limits.from_settings(settings))
    ctx = AdminContext(
        router.storage, settings.hosts, registry, directory, router=router, throttle=throttle
    )
    api = ApiServer(create_app(lambda: ctx, load_tokens(settings)))
    port = await api.start(
        settings.admin_host, settings.admin_port if settings.admin_port >= 0 else 8080
    )
    announce(f"admin API listening on {settings.admin_host}:{port}")
    ops = await _ops(settings, metrics, {"redis": registry.ping})
    announce("admin ready")
    await _until_signal()
    refresher.cancel()
    await api.stop()
    await ctx.jobs.close()
    await bus.stop()
    await _stop_ops(ops)


ROLES: dict[str, Callable[[Settings], Coroutine[Any, Any, None]]] = {
    "admin": run_admin,
    "edge": run_edge,
    "router": run_router,
    "presence": run_presence,
    "storage": run_storage,
}
