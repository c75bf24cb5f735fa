"""The edge node: client listeners, the local session table, keepalives.

It implements :class:`~services.core.routing.EdgeLink` so the router can
deliver stanzas to the sessions it holds.

XEP-0198 resumption stays on this edge: ``resumable`` maps each resumable
stream management session's id to its ClientSession, connected or detached
(the rules are in :mod:`.session`). A detached session is in ``local`` and
``resumable`` but not in ``sessions`` (no keepalive, no transport), and its
own timer ends it; :meth:`EdgeServer.stop` ends it at once. What is
delivered to a detached session is also handed to the features'
``detached_delivery`` hooks, in the background, through :attr:`context`:
what else to do about it (wake the client's device) is theirs to decide.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import socket
import ssl
import time
from typing import TYPE_CHECKING

from ..core.feature import Context
from ..core.routing import Router
from ..core.storage import Storage
from ..router.domains import ComponentDirectory, LocalComponents
from ..security.throttle import AuthThrottle, Limits, MemoryThrottle
from ..xmpp import c2s, component
from ..xmpp.errors import StreamCondition, StreamError
from ..xmpp.jid import JID
from .component import ComponentConnection
from .connection import C2SConnection
from .session import ClientSession

if TYPE_CHECKING:
    from ..platform.asgi import AsgiServer
    from ..platform.config import Settings
    from ..platform.metrics import Metrics

log = logging.getLogger("xmppd.edge")


class EdgeServer:
    def __init__(
        self,
        settings: Settings,
        router: Router,
        storage: Storage,
        ssl_context: ssl.SSLContext,
        cb_data: bytes | None,
        node_id: str,
        metrics: Metrics | None = None,
        throttle: AuthThrottle | None = None,
        components: ComponentDirectory | None = None,
        *,
        context: Context,
    ) -> None:
        self.settings = settings
        #: where client stanzas go (the RouterService, or a cluster edge's DirectRouter)
        self.router = router
        #: the feature context in-band registration and the caps hash read: the
        #: RouterService in-process, the edge's own RouterService in a cluster
        self.context = context
        self.storage = storage
        self.ssl_context = ssl_context
        self.cb_data = cb_data
        self.node_id = node_id
        #: every client session of this edge, bound or not, whatever its transport
        self.sessions: set[ClientSession] = set()
        #: bound sessions by full JID (detached resumable ones included)
        self.local: dict[JID, ClientSession] = {}
        #: XEP-0198: sessions that may be resumed, by resumption id: connected
        #: ones (a <resume/> takes over from a stream still open) and detached
        #: ones, each until its resumption time runs out
        self.resumable: dict[str, ClientSession] = {}
        #: sessions whose unbind (unavailable presence, last activity) is under way
        self.unbinding = 0
        #: set when the last session's teardown is over (what stop() waits for)
        self._idle = asyncio.Event()
        self.servers: list[asyncio.Server] = []
        #: where external components are connected (XEP-0114): shared with the
        #: router (in-process) or in Redis (cluster)
        self.components: ComponentDirectory = (
            components if components is not None else LocalComponents()
        )
        self.component_connections: set[ComponentConnection] = set()
        #: domain -> the component connection holding it on this edge
        self.local_components: dict[str, ComponentConnection] = {}
        self._claiming: set[str] = set()
        self._component_config: component.ComponentConfig | None = None
        #: the bound component listener, None when not listening
        self.component_address: tuple[str, int] | None = None
        self._housekeeping: asyncio.Task[None] | None = None
        #: the web listener (WebSocket, BOSH, host-meta) and its bound address
        self.web: AsgiServer | None = None
        self.http_address: tuple[str, int] | None = None
        self._extra_features: list[bytes] | None = None
        #: detached_delivery hooks running (kept referenced until they finish)
        self._hooks: set[asyncio.Task[None]] = set()
        #: per IP: connections admitted and not yet bound
        self._unauthenticated: dict[str, int] = {}
        #: per IP: the new-connection token bucket, (tokens, when last counted)
        self._conn_rate: dict[str, tuple[float, float]] = {}
        #: bare JIDs (normalized by Settings.load) shaped at shaper_rate_admin
        self.admins = frozenset(settings.admins)
        if metrics is None:
            from ..platform.metrics import Metrics

            metrics = Metrics()  # a private registry nobody scrapes: no-op
        self.metrics = metrics
        #: failed-login and registration counts; in a cluster, shared through Redis
        self.throttle: AuthThrottle = (
            throttle if throttle is not None else MemoryThrottle(Limits.from_settings(settings))
        )

    def stream_config(self, direct_tls: bool, *, tls_available: bool = True) -> c2s.StreamConfig:
        """How a client stream negotiates. ``direct_tls``: the transport is
        secure already (TLS, or a web listener trusted as secure);
        ``tls_available``: STARTTLS can be offered (TCP only)."""
        if self._extra_features is None:
            from ..features import disco

            self._extra_features = [
                *self.context.features.stream_features(),
                disco.caps_feature(self.context),
            ]
        s = self.settings
        return c2s.StreamConfig(
            hosts=frozenset(s.hosts),
            tls_available=tls_available,
            require_tls=s.require_tls,
            direct_tls=direct_tls,
            allow_plain=s.allow_plain,
            registration=s.registration,
            max_stanza_size=s.max_stanza_size,
            preauth_stanza_size=s.preauth_stanza_size,
            max_auth_failures=s.max_auth_failures,
            # channel binding names our TLS certificate: only where the
            # stream runs over our own TLS (never a web listener's proxy)
            cb_data=self.cb_data if tls_available else None,
            extra_features=self._extra_features,
        )

    def component_config(self) -> component.ComponentConfig:
        if self._component_config is None:
            s = self.settings
            self._component_config = component.ComponentConfig(
                secrets=s.component_secrets(),
                max_stanza_size=s.max_stanza_size,
                preauth_stanza_size=s.preauth_stanza_size,
            )
        return self._component_config

    @property
    def component_port(self) -> int:
        """The bound component listener's port; -1 when not listening."""
        return self.component_address[1] if self.component_address is not None else -1

    # ---- EdgeLink ------------------------------------------------------------

    async def deliver(self, jid: JID, data: bytes) -> bool:
        conn = self.local.get(jid)
        if conn is None:
            # not a client session: a component's domain held here (XEP-0114)
            if self.local_components and jid.local is None and jid.resource is None:
                comp = self.local_components.get(jid.domain)
                if comp is not None:
                    return comp.deliver(data)
            return False
        conn.deliver(data)
        if conn.detached and self.context.features.detached_delivery:
            self._detached_delivery(jid, data)
        return True

    def _detached_delivery(self, jid: JID, data: bytes) -> None:
        # a task: the deliverer (a router's stream, one-hop delivery) must not
        # wait on a feature's storage reads and sends
        task = asyncio.get_running_loop().create_task(self._run_detached_hooks(jid, data))
        self._hooks.add(task)
        task.add_done_callback(self._hooks.discard)

    async def _run_detached_hooks(self, jid: JID, data: bytes) -> None:
        ctx = self.context
        try:
            await ctx.features.detached(ctx, jid, data)
        except Exception:  # the stanza is queued whatever a hook does
            log.exception("edge: a detached_delivery hook failed for %s", jid)

    async def close_session(self, jid: JID, condition: str, text: str | None = None) -> bool:
        conn = self.local.pop(jid, None)
        if conn is None:
            return False
        if condition == "conflict":
            conn.replaced = True
        conn.no_resume = True  # replaced or kicked: not to be resumed (XEP-0198)
        conn.close(StreamError(StreamCondition(condition), text))
        return True

    # ---- external components ------------------------------------------------------

    async def claim_component(self, domain: str, conn: ComponentConnection) -> bool:
        """Record ``domain`` as connected here, in the directory too; False
        when it is connected already (here or at another edge)."""
        if domain in self.local_components or domain in self._claiming:
            return False
        self._claiming.add(domain)
        try:
            if not await self.components.claim(domain, self.node_id):
                return False
            self.local_components[domain] = conn
            return True
        finally:
            self._claiming.discard(domain)

    async def release_component(self, domain: str, conn: ComponentConnection) -> None:
        if self.local_components.get(domain) is conn:
            del self.local_components[domain]
            await self.components.release(domain, self.node_id)

    # ---- per-IP limits ------------------------------------------------------------

    def admit(self, ip: str) -> str | None:
        """Count a new connection from ``ip``: why it is refused, or None.

        An admitted connection holds one unauthenticated slot of its address
        until :meth:`release_unauthenticated` (it bound, or it closed)."""
        s = self.settings
        if s.connection_rate_per_ip > 0:
            now = time.monotonic()
            burst = float(s.connection_burst_per_ip)
            tokens, last = self._conn_rate.get(ip, (burst, now))
            tokens = min(burst, tokens + (now - last) * s.connection_rate_per_ip)
            if tokens < 1.0:
                self._conn_rate[ip] = (tokens, now)
                self.metrics.limited["connection_rate"].inc()
                return "too many new connections from your address"
            self._conn_rate[ip] = (tokens - 1.0, now)
        n = self._unauthenticated.get(ip, 0)
        if 0 < s.max_unauthenticated_per_ip <= n:
            self.metrics.limited["unauthenticated_per_ip"].inc()
            return "too many unauthenticated connections from your address"
        self._unauthenticated[ip] = n + 1
        return None

    def release_unauthenticated(self, ip: str) -> None:
        n = self._unauthenticated.get(ip, 0) - 1
        if n > 0:
            self._unauthenticated[ip] = n
        else:
            self._unauthenticated.pop(ip, None)

    def _forget_full_buckets(self, now: float) -> None:
        """Drop the rate buckets that have refilled: absent means full, so the
        table only holds addresses that connected in the last few seconds."""
        s = self.settings
        if s.connection_rate_per_ip <= 0:
            self._conn_rate.clear()
            return
        burst = s.connection_burst_per_ip
        full = [
            ip
            for ip, (tokens, last) in self._conn_rate.items()
            if tokens + (now - last) * s.connection_rate_per_ip >= burst
        ]
        for ip in full:
            del self._conn_rate[ip]

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
                # a client that connects and sends nothing must not hold a
                # half-open TLS handshake longer than the whole negotiation
                ssl_handshake_timeout=s.negotiation_timeout if direct else None,
                reuse_address=True,
                backlog=1024,
            )
            for sock in server.sockets:
                sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
            self.servers.append(server)
            bound.append(server.sockets[0].getsockname()[:2])
        if s.components and s.component_port >= 0:
            await self._start_component_listener()
        if s.http_port >= 0:
            await self._start_web_listener()
        self._housekeeping = loop.create_task(self._keepalive_loop())
        return bound

    async def _start_component_listener(self) -> None:
        """XEP-0114's listener; loopback unless component_host says otherwise."""
        from ..platform.config import StartupError

        s = self.settings
        loop = asyncio.get_running_loop()
        try:
            server = await loop.create_server(
                lambda: ComponentConnection(self),
                host=s.component_host,
                port=s.component_port,
                reuse_address=True,
            )
        except OSError as exc:
            where = f"{s.component_host}:{s.component_port}"
            raise StartupError("component_port", where, exc.strerror or exc) from None
        self.servers.append(server)
        host, port = server.sockets[0].getsockname()[:2]
        self.component_address = (str(host), int(port))

    async def _start_web_listener(self) -> None:
        """RFC 7395 and BOSH on one HTTP port, served by uvicorn in this loop."""
        from ..platform.config import StartupError
        from .web import web_server

        s = self.settings
        web = web_server(self)
        try:
            port = await web.start(s.http_host, s.http_port)
        except OSError as exc:
            raise StartupError(
                "http_port", f"{s.http_host}:{s.http_port}", exc.strerror or exc
            ) from None
        self.web = web
        self.http_address = (s.http_host, port)

    @property
    def http_port(self) -> int:
        """The bound web listener's port; -1 when not listening."""
        return self.http_address[1] if self.http_address is not None else -1

    async def stop(self) -> None:
        """Stop listening and close every stream with system-shutdown."""
        for server in self.servers:
            server.close()
        if self._housekeeping is not None:
            self._housekeeping.cancel()
        detached = [s for s in self.resumable.values() if s.detached]
        for sess in [*self.sessions, *detached]:
            sess.no_resume = True  # nobody will be here to resume it
            sess.close(StreamError(StreamCondition.SYSTEM_SHUTDOWN))
        for comp in list(self.component_connections):
            comp.close(StreamError(StreamCondition.SYSTEM_SHUTDOWN))
        # let teardown run (unavailable presence, last activity) before the
        # caller closes storage under it; bounded, so a stuck one cannot
        # hold the shutdown
        await asyncio.sleep(0.05)
        if self.sessions or self.unbinding or any(s.detached for s in self.resumable.values()):
            self._idle.clear()
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(self._idle.wait(), 5.0)
        if self._hooks:  # before the caller closes storage under them; bounded too
            await asyncio.wait(set(self._hooks), timeout=2.0)
        if self.web is not None:
            await self.web.stop()
            self.web = None
        for server in self.servers:
            await server.wait_closed()

    def session_ended(self) -> None:
        """A session's teardown is over: wake stop() once none is left."""
        if not self.sessions and not self.unbinding:
            self._idle.set()

    async def _keepalive_loop(self) -> None:
        s = self.settings
        tick = max(
            0.2, min(5.0, s.ping_timeout / 3, s.negotiation_timeout / 3, s.ping_interval / 3)
        )
        while True:
            await asyncio.sleep(tick)
            now = time.monotonic()
            self._forget_full_buckets(now)
            for conn in list(self.sessions):
                if conn.jid is None:
                    if now - conn.opened > s.negotiation_timeout:
                        conn.close(StreamError(StreamCondition.CONNECTION_TIMEOUT))
                    continue
                if conn.ping_id is not None:
                    if now - conn.ping_sent > s.ping_timeout:
                        conn.close(StreamError(StreamCondition.CONNECTION_TIMEOUT))
                        continue
                elif now - conn.last_rx > s.ping_interval:
                    conn.send_ping()
                if conn.sm is not None:
                    conn.sm_tick()
