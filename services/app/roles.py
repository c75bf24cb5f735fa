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
from collections.abc import Awaitable, Callable, Coroutine
from typing import Any

import grpc
import redis.asyncio as aioredis
from prometheus_client import CollectorRegistry

from ..app.startup import load_tls, open_configured_database
from ..cluster.direct import DirectRouter
from ..cluster.edge_rpc import EdgeDirectory, EdgeServicer
from ..cluster.events import EventBus
from ..cluster.presence_rpc import PresenceClient, PresenceServicer
from ..cluster.redis_components import RedisComponents
from ..cluster.redis_registry import RedisRegistry
from ..cluster.redis_throttle import RedisThrottle
from ..cluster.router_rpc import RouterClient, RouterServicer
from ..cluster.rpc import SERVER_OPTIONS, Channels, pb2_grpc
from ..cluster.storage_rpc import StorageClient, StorageServicer
from ..core.feature import Context, FeatureSet
from ..core.presence import Presence
from ..core.storage import Storage
from ..features.catalog import load_configured
from ..platform.config import Settings
from ..platform.metrics import Metrics, ServerStats
from ..platform.ops_http import OpsHTTPServer
from ..router.service import RouterService
from ..security.throttle import Limits
from ..xmpp.jid import JID

log = logging.getLogger("xmppd.cluster")


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
    return StorageClient(settings.storage_addrs, channels)


def _presence(settings: Settings, channels: Channels) -> Presence:
    return PresenceClient(settings.presence_addrs, channels)


async def run_storage(settings: Settings) -> None:
    from ..platform.db import timed_database
    from ..storage.store import Store

    metrics = _metrics()
    raw_db = await open_configured_database(settings)
    db = timed_database(raw_db, metrics.db_timers)
    store = Store(db)
    server, _ = await _grpc_server(
        settings,
        lambda s: pb2_grpc.add_StorageServicer_to_server(StorageServicer(store), s),
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
    settings: Settings, role: str, metrics: Metrics, presence: str = "remote"
) -> tuple[RouterService, RedisRegistry, EdgeDirectory, Channels, EventBus]:
    """A RouterService on the cluster's registry, edges and storage: the
    router role's, and each other role's own for what it routes itself.
    ``presence``: "remote" (the presence role over gRPC), "local" (this is the
    presence role) or "none" (an edge decides nothing about presence)."""
    from ..presence.service import PresenceService

    channels = Channels(metrics)
    redis = _redis(settings)
    registry = RedisRegistry(redis, settings.redis_prefix, metrics)
    directory = EdgeDirectory(registry, channels)
    factory: Callable[[Context], Presence] | None = None
    if presence == "local":
        factory = PresenceService
    elif presence == "remote":
        remote = _presence(settings, channels)
        factory = lambda _ctx: remote  # noqa: E731
    router = RouterService(
        settings,
        _storage(settings, channels),
        registry,
        FeatureSet(load_configured(settings.features_extra)),
        metrics=metrics,
        edges=directory,
        presence=factory,
        components=RedisComponents(redis, settings.redis_prefix),
    )
    if role != "muc":
        # group chat domains go to the muc role (which registers its own rooms)
        from ..cluster.muc_rpc import MucClient
        from ..cluster.redis_muc import MucDirectory
        from ..muc.service import MucDomain, muc_domains

        domains = muc_domains(settings)
        if domains:
            live = MucDirectory(redis, settings.redis_prefix, ttl=settings.node_ttl)
            rooms = MucDomain(MucClient(settings.muc_addrs, channels, directory=live))
            for domain in domains:
                router.domains.register(domain, "Chatrooms", rooms)
    if role != "pubsub":
        # pubsub domains and PEP go to the pubsub role
        from ..cluster.pubsub_rpc import PubsubClient
        from ..cluster.redis_muc import MucDirectory
        from ..core.pubsub import CONTRACT as PUBSUB_CONTRACT
        from ..pubsub.service import PubsubDomain, pubsub_domains

        nodes = MucDirectory(redis, settings.redis_prefix, ttl=settings.node_ttl, kind="pubsub")
        pubsub = PubsubClient(settings.pubsub_addrs, channels, directory=nodes)
        router.contracts[PUBSUB_CONTRACT] = pubsub
        for domain in pubsub_domains(settings):
            router.domains.register(domain, "Publish-Subscribe", PubsubDomain(pubsub))
    bus = EventBus(redis, registry.p, node_name(settings, role))

    def publish_change(jid: JID) -> None:
        asyncio.get_running_loop().create_task(bus.publish("blocks", jid=str(jid)))

    router.blocks.subscribe(publish_change)

    def forget(ev: dict[str, Any]) -> None:
        if ev["jid"] == "*":
            router.blocks.clear()
        else:
            router.blocks.forget(JID.parse(ev["jid"]))

    bus.on("blocks", forget)

    def publish_cached(name: str, jid: JID) -> None:
        asyncio.get_running_loop().create_task(bus.publish("cache", name=name, jid=str(jid)))

    router.caches.subscribe(publish_cached)

    def forget_cached(ev: dict[str, Any]) -> None:
        jid = ev["jid"]
        router.caches.forget(ev["name"], None if jid == "*" else JID.parse(jid))

    bus.on("cache", forget_cached)
    # presence reads sessions, changes them and writes them back: fresh gets there
    registry.attach_bus(bus, cache_gets=role != "presence")
    await bus.start()
    await directory.refresh()
    return router, registry, directory, channels, bus


async def _heartbeat(settings: Settings, beat: Callable[[], Awaitable[None]], what: str) -> None:
    """``beat`` three times per ``node_ttl``: the process is alive as long
    as it beats (a failed beat is logged; the next one may succeed)."""
    while True:
        await asyncio.sleep(settings.node_ttl / 3)
        try:
            await beat()
        except Exception:
            log.exception("%s heartbeat failed", what)


async def _refresh_loop(directory: EdgeDirectory) -> None:
    while True:
        await asyncio.sleep(1.0)
        try:
            await directory.refresh()
        except Exception:
            log.exception("edge directory refresh failed")


async def run_presence(settings: Settings) -> None:
    metrics = _metrics()
    router, registry, directory, _, bus = await _router_core(
        settings, "presence", metrics, presence="local"
    )
    presence = router.presence
    server, _ = await _grpc_server(
        settings,
        lambda s: pb2_grpc.add_PresenceServicer_to_server(PresenceServicer(presence), s),
    )
    refresher = asyncio.get_running_loop().create_task(_refresh_loop(directory))
    ops = await _ops(settings, metrics, {"redis": registry.ping})
    announce("presence ready")
    await _until_signal()
    refresher.cancel()
    await bus.stop()
    await server.stop(5)
    await _stop_ops(ops)


async def run_muc(settings: Settings) -> None:
    """The group chat role: the rooms of every MUC domain. Replicas announce
    themselves in Redis; each room is held by one replica at a time (a lease
    in Redis, services/cluster/redis_muc.py), and comes back on another one
    within node_ttl when its holder dies."""
    from ..cluster.muc_rpc import MucServicer
    from ..cluster.redis_muc import MucDirectory, RedisOwnership, RedisRoomMemory, shared_secret
    from ..muc.service import MucDomain, MucHost, muc_services

    metrics = _metrics()
    router, registry, directory, channels, bus = await _router_core(settings, "muc", metrics)
    node = node_name(settings, "muc")
    live = MucDirectory(registry.redis, settings.redis_prefix, ttl=settings.node_ttl)
    images = RedisRoomMemory(registry.redis, settings.redis_prefix)
    secret = await shared_secret(registry.redis, settings.redis_prefix)
    services = muc_services(settings, metrics, images, secret)
    host = MucHost(router, services, RedisOwnership(live, node, channels))
    for domain in services:
        router.domains.register(domain, "Chatrooms", MucDomain(host))
    server, bound = await _grpc_server(
        settings, lambda s: pb2_grpc.add_MucServicer_to_server(MucServicer(host), s)
    )
    advertise = settings.grpc_advertise or bound
    await live.alive(node, advertise)

    async def beat() -> None:
        await live.alive(node, advertise)
        await host.renew()

    loop = asyncio.get_running_loop()
    hb = loop.create_task(_heartbeat(settings, beat, "muc"))
    refresher = loop.create_task(_refresh_loop(directory))
    ops = await _ops(settings, metrics, {"redis": registry.ping})
    announce(f"muc {node} ready")
    await _until_signal()
    hb.cancel()
    refresher.cancel()
    # gone at once, so that callers move to the next replica, which takes
    # the rooms without waiting for node_ttl; the stanzas in flight are
    # handled (their rooms' images written) before the rooms are let go:
    # occupants stay in their rooms and see nothing
    await live.gone(node)
    await server.stop(5)
    await host.shutdown()
    await bus.stop()
    await _stop_ops(ops)


async def run_pubsub(settings: Settings) -> None:
    """The publish-subscribe role: pubsub domains and every account's PEP
    service. Nothing stays in memory between requests (storage has it), so
    replicas are interchangeable; a lease in Redis per node (per account
    for PEP) makes one replica at a time handle a node's requests, in
    order (services/cluster/leases.py)."""
    from ..cluster.leases import Leases
    from ..cluster.pubsub_rpc import PubsubClient, PubsubServicer
    from ..cluster.redis_muc import MucDirectory
    from ..cluster.redis_pubsub import RedisCaps
    from ..core.pubsub import CONTRACT as PUBSUB_CONTRACT
    from ..core.pubsub import Pubsub
    from ..pubsub.service import PubsubDomain, PubsubHost, pubsub_domains, pubsub_limits

    metrics = _metrics()
    router, registry, directory, channels, bus = await _router_core(settings, "pubsub", metrics)
    node = node_name(settings, "pubsub")
    live = MucDirectory(registry.redis, settings.redis_prefix, ttl=settings.node_ttl, kind="pubsub")
    domains = pubsub_domains(settings)
    leases: Leases[Pubsub] = Leases(live, node, channels, PubsubClient)
    host = PubsubHost(
        router,
        domains,
        pubsub_limits(settings),
        caps_store=RedisCaps(registry.redis, settings.redis_prefix),
        ownership=leases,
        metrics=metrics,
    )
    router.contracts[PUBSUB_CONTRACT] = host
    for domain in domains:
        router.domains.register(domain, "Publish-Subscribe", PubsubDomain(host))
    server, bound = await _grpc_server(
        settings, lambda s: pb2_grpc.add_PubsubServicer_to_server(PubsubServicer(host), s)
    )
    advertise = settings.grpc_advertise or bound
    await live.alive(node, advertise)

    loop = asyncio.get_running_loop()
    hb = loop.create_task(_heartbeat(settings, lambda: live.alive(node, advertise), "pubsub"))
    refresher = loop.create_task(_refresh_loop(directory))
    ops = await _ops(settings, metrics, {"redis": registry.ping})
    announce(f"pubsub {node} ready")
    await _until_signal()
    hb.cancel()
    refresher.cancel()
    await live.gone(node)
    await server.stop(5)
    await bus.stop()
    await _stop_ops(ops)


async def _reap_loop(
    router: RouterService, registry: RedisRegistry, directory: EdgeDirectory
) -> None:
    """Find edges whose heartbeat expired; end their sessions for everyone.

    Contacts get unavailable presence and later stanzas for those users go to
    offline storage, since the registry no longer lists the sessions; the
    external components it held count as away (service-unavailable).
    """
    components = RedisComponents(registry.redis, registry.p)
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
                    if s is not None:
                        await router.presence.session_gone(s, False)
                gone = await components.release_node(node)
                if gone:
                    log.warning("edge %s is dead: components %s are away", node, ", ".join(gone))
                await registry.forget_node(node)
                router.metrics.edge_up.remove(node)
        except Exception:
            log.exception("reaper pass failed")


async def run_router(settings: Settings) -> None:
    metrics = _metrics()
    router, registry, directory, _channels, bus = await _router_core(settings, "router", metrics)
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
    settings: Settings, metrics: Metrics, router: RouterService, registry: RedisRegistry
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
    local, registry, directory, channels, bus = await _router_core(
        settings, "edge", metrics, presence="none"
    )
    storage = local.storage

    async def bounce(jid: JID, data: bytes) -> bool:
        # a stanza no router took goes back to its sender, a session of this
        # edge: the link pinned below (the EdgeServer needs the router first)
        link = directory.get(node)
        return link is not None and await link.deliver(jid, data)

    remote = RouterClient(settings, channels, bounce)
    router = DirectRouter(local, remote, metrics, direct=settings.direct_delivery)
    # failed logins and registrations counted in Redis: a block holds on every edge
    throttle = RedisThrottle(registry.redis, settings.redis_prefix, Limits.from_settings(settings))
    components = RedisComponents(registry.redis, settings.redis_prefix)
    edge = EdgeServer(
        settings,
        router,
        storage,
        ctx,
        cb,
        node,
        metrics=metrics,
        throttle=throttle,
        components=components,
        context=local,
    )
    directory.pin(node, edge)
    metrics.sessions.labels(node).set_function(lambda: len(edge.local))
    server, bound = await _grpc_server(
        settings, lambda s: pb2_grpc.add_EdgeServicer_to_server(EdgeServicer(edge), s)
    )
    advertise = settings.edge_advertise or bound
    await registry.edge_alive(node, advertise, settings.node_ttl)
    await remote.start()
    refresher = asyncio.get_running_loop().create_task(_refresh_loop(directory))

    hb = asyncio.get_running_loop().create_task(
        _heartbeat(
            settings, lambda: registry.edge_alive(node, advertise, settings.node_ttl), "edge"
        )
    )
    for host, port in await edge.start():
        announce(f"listening on {host}:{port}")
    if edge.component_address is not None:
        announce("component listener on {}:{}".format(*edge.component_address))
    if edge.http_address is not None:
        announce("web listener on {}:{}".format(*edge.http_address))

    async def routers_reachable() -> bool:
        return bool(remote.healthy_routers > 0)

    ops = await _ops(settings, metrics, {"routers": routers_reachable, "redis": registry.ping})
    announce(f"edge {node} ready")
    await _until_signal()
    # drain: stop accepting, tell clients system-shutdown, unbind their sessions
    await edge.stop()
    for _ in range(50):
        if remote.unacked == 0 and router.inflight == 0:
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
    from ..cluster.muc_rpc import MucClient
    from ..core.pubsub import pubsub_of
    from ..muc.service import muc_domains
    from ..pubsub.service import pubsub_domains

    router, registry, directory, channels, bus = await _router_core(settings, "admin", metrics)
    refresher = asyncio.get_running_loop().create_task(_refresh_loop(directory))
    throttle = RedisThrottle(registry.redis, settings.redis_prefix, Limits.from_settings(settings))
    ctx = AdminContext(
        router.storage,
        settings.hosts,
        registry,
        directory,
        router=router,
        throttle=throttle,
        muc=MucClient(settings.muc_addrs, channels),
        muc_domains=muc_domains(settings),
        # the router's own PubsubClient (_router_core), on the pubsub replicas by node
        pubsub=pubsub_of(router),
        pubsub_domains=pubsub_domains(settings),
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
    "muc": run_muc,
    "pubsub": run_pubsub,
    "storage": run_storage,
}
