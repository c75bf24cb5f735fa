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

from ..features.base import FeatureSet
from ..features.catalog import load_features
from ..platform.config import Settings
from ..storage.interface import Storage
from ..xmpp.jid import JID
from .edge_rpc import EdgeDirectory, EdgeServicer
from .events import EventBus
from .redis_registry import RedisRegistry
from .router_rpc import RouterClient, RouterServicer
from .rpc import SERVER_OPTIONS, CallServicer, Channels, RemoteProxy, pb2_grpc

log = logging.getLogger("xmppd.cluster")

STORAGE_METHODS = tuple(
    name
    for name in dir(Storage)
    if not name.startswith("_") and callable(getattr(Storage, name, None))
)
PRESENCE_METHODS = ("outbound", "inbound", "session_gone", "roster_set", "roster_remove")


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


def _redis(settings: Settings) -> Any:
    return aioredis.from_url(settings.redis_url)


def _storage(settings: Settings, channels: Channels) -> Storage:
    return cast(Storage, RemoteProxy("Storage", settings.storage_addrs, channels))


async def run_storage(settings: Settings) -> None:
    from ..platform.db import open_database
    from ..storage.store import Store

    db = await open_database(settings.resolved_database_url())
    store = Store(db)
    server, _ = await _grpc_server(
        settings,
        lambda s: pb2_grpc.add_StorageServicer_to_server(CallServicer(store, STORAGE_METHODS), s),
    )
    announce("storage ready")
    await _until_signal()
    await server.stop(5)
    await db.close()


async def _router_core(
    settings: Settings, role: str
) -> tuple[Any, RedisRegistry, EdgeDirectory, Channels, EventBus]:
    from ..router.service import RouterService

    channels = Channels()
    redis = _redis(settings)
    registry = RedisRegistry(redis, settings.redis_prefix)
    directory = EdgeDirectory(registry, channels)
    router = RouterService(
        settings, _storage(settings, channels), registry, FeatureSet(load_features())
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

    router, _, directory, _, bus = await _router_core(settings, "presence")
    presence = PresenceService(router)
    router.presence = presence
    server, _ = await _grpc_server(
        settings,
        lambda s: pb2_grpc.add_PresenceServicer_to_server(
            CallServicer(presence, PRESENCE_METHODS), s
        ),
    )
    refresher = asyncio.get_running_loop().create_task(_refresh_loop(directory))
    announce("presence ready")
    await _until_signal()
    refresher.cancel()
    await bus.stop()
    await server.stop(5)


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
                if alive or not await registry.claim_reap(node):
                    continue
                jids = await registry.node_sessions(node)
                log.warning("edge %s is dead: ending %d sessions", node, len(jids))
                for jid in jids:
                    s = await registry.remove(jid)
                    if s is not None and router.presence is not None:
                        await router.presence.session_gone(s, False)
                await registry.forget_node(node)
        except Exception:
            log.exception("reaper pass failed")


async def run_router(settings: Settings) -> None:
    router, registry, directory, channels, bus = await _router_core(settings, "router")
    router.presence = RemoteProxy("Presence", settings.presence_addrs, channels)
    servicer = RouterServicer(router, directory)
    server, _ = await _grpc_server(
        settings, lambda s: pb2_grpc.add_RouterServicer_to_server(servicer, s)
    )
    reaper = asyncio.get_running_loop().create_task(_reap_loop(router, registry, directory))
    announce("router ready")
    await _until_signal()
    reaper.cancel()
    await bus.stop()
    await server.stop(5)


async def run_edge(settings: Settings) -> None:
    from ..edge.server import EdgeServer
    from ..platform import tls
    from ..xmpp.sasl import tls_server_end_point

    node = node_name(settings, "edge")
    cert, key = settings.cert_paths()
    if tls.ensure_self_signed(cert, key, settings.hosts):
        log.info("created a self-signed certificate in %s", cert)
    ctx = tls.server_context(cert, key)
    cb = tls_server_end_point(tls.cert_der(cert))
    channels = Channels()
    redis = _redis(settings)
    registry = RedisRegistry(redis, settings.redis_prefix)
    storage = _storage(settings, channels)
    router = RouterClient(settings, FeatureSet(load_features()), storage, channels)
    edge = EdgeServer(settings, cast(Any, router), storage, ctx, cb, node)
    router._local_bounce = edge.deliver
    server, bound = await _grpc_server(
        settings, lambda s: pb2_grpc.add_EdgeServicer_to_server(EdgeServicer(edge), s)
    )
    advertise = settings.edge_advertise or bound
    await registry.edge_alive(node, advertise, settings.node_ttl)
    await router.start()

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
    announce(f"edge {node} ready")
    await _until_signal()
    # drain: stop accepting, tell clients system-shutdown, unbind their sessions
    await edge.stop()
    for _ in range(50):
        if router.unacked == 0:
            break
        await asyncio.sleep(0.1)
    hb.cancel()
    await registry.edge_gone(node)
    await router.stop()
    await server.stop(2)


ROLES: dict[str, Callable[[Settings], Coroutine[Any, Any, None]]] = {
    "edge": run_edge,
    "router": run_router,
    "presence": run_presence,
    "storage": run_storage,
}
