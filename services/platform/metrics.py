"""Prometheus metrics of one server process.

:class:`Metrics` holds every metric object on one ``CollectorRegistry``: the
embedded server makes one registry per server instance (tests run several
servers in one process), never the global one, and passes the ``Metrics`` to
the edge, the router and the database wrapper. Without a registry,
``Metrics()`` records into a private registry nobody reads: the no-op default
of the services' ``metrics`` parameter.

The exported names are a contract with ``deploy/metrics.txt``, the
dashboards and the alert rules:

==========================================  ==================================================
``xmppd_connections{transport}``            open client sockets (tcp = STARTTLS port,
                                            tls = direct TLS, websocket, bosh)
``xmppd_auth_total{mechanism,outcome}``     SASL attempts; outcome success|failure, unknown
                                            mechanisms counted as ``other``
``xmppd_auth_throttled_total{action}``      password-guessing defences: blocked (an IP address
                                            was blocked), refused (a blocked address asked to
                                            authenticate), delayed (an account's attempt waited)
``xmppd_limited_total{limit}``              the edge's limits acting: connections refused
                                            (unauthenticated_per_ip, connection_rate),
                                            streams closed for unread output (output_buffer),
                                            reads paused by the traffic shaper (shaper)
``xmppd_stanzas_in_total{kind}``            stanzas read from clients: message|presence|iq,
                                            error for any stanza of type="error"
``xmppd_stanzas_out_total{kind}``           stanzas written to clients (same kinds)
``xmppd_routing_latency_seconds``           edge to edge: sender's edge parsed the stanza →
                                            recipient's edge wrote it (see ``Envelope.t0``)
``xmppd_direct_deliveries_total{outcome}``  stanzas an edge sent straight to the recipient's
                                            edge (cluster); failure: handed to a router after
``xmppd_grpc_call_seconds{method}``         gRPC client call latency (cluster)
``xmppd_grpc_errors_total{method,code}``    gRPC calls that failed, by status code (cluster)
``xmppd_redis_latency_seconds{op}``         Redis command latency (cluster)
``xmppd_db_latency_seconds{op}``            SQL latency by verb: select|insert|update|delete|other
``xmppd_offline_messages_stored_total``     messages put into offline storage
``xmppd_offline_queue_messages``            offline messages waiting, all users
``xmppd_registered_users{host}``            accounts per virtual host (refreshed every few s)
``xmppd_online_users``                      distinct users with a bound session (idem)
``xmppd_sessions{node}``                    sessions bound on an edge node
``xmppd_muc_rooms{domain}``                 group chat rooms in memory (the muc role, embedded)
``xmppd_muc_occupants{domain}``             occupants of those rooms
``xmppd_muc_messages_total{domain}``        groupchat messages broadcast by rooms
``xmppd_muc_fanout_total{domain}``          stanzas rooms sent (each copy of a broadcast)
``xmppd_pubsub_published_total``            items published to pubsub and PEP nodes
``xmppd_pubsub_notifications_total``        pubsub and PEP notifications sent (each copy)
``xmppd_edge_up{node}``                     1 for every edge node seen alive
==========================================  ==================================================

plus prometheus-client's process, platform and GC collectors (``process_*``,
``python_*``). ``deploy/metrics.txt`` is the list dashboards and alerts are
checked against; ``tests/platform/test_metrics.py`` checks the code against it.

Cluster-wide figures come from one process each so they are never summed
twice: ``xmppd_registered_users`` from storage, ``xmppd_online_users`` from the
router (:class:`ServerStats` with only the source that process has), and
``xmppd_sessions``/``xmppd_edge_up`` from whoever the launcher gives them to
(the services themselves do not set them; in the embedded default the one
process does). The offline queue gauge is kept by +/- in the router that
stores/delivers and recounted by the process running :class:`ServerStats` with
a database: in the cluster give the gauge to one process only.

Hot path: per-stanza counters are label children bound once here
(``in_message``, ``out_iq``, ...), so the edge does no ``.labels()`` lookup per
stanza.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
from collections.abc import Awaitable, Callable, Iterable, Sequence
from typing import TYPE_CHECKING, Protocol

from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram
from prometheus_client.core import GaugeMetricFamily, Metric
from prometheus_client.gc_collector import GCCollector
from prometheus_client.platform_collector import PlatformCollector
from prometheus_client.process_collector import ProcessCollector

from ..xmpp import ns
from ..xmpp.sasl import MECHANISMS
from .db import SQL_OPS

if TYPE_CHECKING:
    from .db import Connection

__all__ = [
    "KINDS",
    "LATENCY_BUCKETS",
    "METRIC_NAMES",
    "TRANSPORTS",
    "Metrics",
    "ServerStats",
    "mechanism_label",
]

log = logging.getLogger("xmppd.metrics")

PREFIX = "xmppd"
TRANSPORTS = ("tcp", "tls", "websocket", "bosh")
KINDS = ("message", "presence", "iq", "error")
OUTCOMES = ("success", "failure")
#: what the authentication throttle did (services/security/throttle.py)
THROTTLE_ACTIONS = ("blocked", "refused", "delayed")
#: the edge's limits (docs/operations.md, "Limits")
LIMITS = ("unauthenticated_per_ip", "connection_rate", "output_buffer", "shaper")
#: SASL mechanisms get their own label value; anything else a client names is "other"
AUTH_MECHANISMS = (*MECHANISMS, "other")
#: seconds; from 100 µs (in-process routing) to 10 s
LATENCY_BUCKETS = (
    0.0001,
    0.00025,
    0.0005,
    0.001,
    0.0025,
    0.005,
    0.01,
    0.025,
    0.05,
    0.1,
    0.25,
    0.5,
    1.0,
    2.5,
    5.0,
    10.0,
)

#: every exported family name, as it appears in the exposition (not the process collectors)
METRIC_NAMES = (
    "xmppd_connections",
    "xmppd_auth_total",
    "xmppd_auth_throttled_total",
    "xmppd_limited_total",
    "xmppd_stanzas_in_total",
    "xmppd_stanzas_out_total",
    "xmppd_routing_latency_seconds",
    "xmppd_direct_deliveries_total",
    "xmppd_grpc_call_seconds",
    "xmppd_grpc_errors_total",
    "xmppd_redis_latency_seconds",
    "xmppd_db_latency_seconds",
    "xmppd_offline_messages_stored_total",
    "xmppd_offline_queue_messages",
    "xmppd_registered_users",
    "xmppd_online_users",
    "xmppd_sessions",
    "xmppd_edge_up",
)

_MESSAGE = ns.q(ns.CLIENT, "message")
_PRESENCE = ns.q(ns.CLIENT, "presence")
_IQ = ns.q(ns.CLIENT, "iq")
_KNOWN_MECHS = frozenset(MECHANISMS)


def mechanism_label(mechanism: str) -> str:
    """The label value for a client-chosen mechanism name: bounded cardinality."""
    return mechanism if mechanism in _KNOWN_MECHS else "other"


class Metrics:
    """Every metric of one server process, on one registry.

    ``wall_clock``: how :meth:`stamp` and :meth:`routed` measure the routing
    latency. In one process (embedded) ``Envelope.t0`` is ``time.perf_counter()``
    seconds; across processes (cluster) it is wall-clock nanoseconds
    (``time.time_ns()``), the only clock two hosts share.
    """

    def __init__(
        self,
        registry: CollectorRegistry | None = None,
        *,
        process: bool | None = None,
        wall_clock: bool = False,
    ) -> None:
        exported = registry is not None
        r = registry if registry is not None else CollectorRegistry()
        self.registry = r

        self.connections = Gauge(
            "xmppd_connections", "Open client connections by transport", ["transport"], registry=r
        )
        self.conn_tcp = self.connections.labels("tcp")
        self.conn_tls = self.connections.labels("tls")
        self.conn_websocket = self.connections.labels("websocket")
        self.conn_bosh = self.connections.labels("bosh")

        self.auth = Counter(
            "xmppd_auth",
            "SASL authentication attempts by mechanism and outcome",
            ["mechanism", "outcome"],
            registry=r,
        )
        self._auth = {(m, o): self.auth.labels(m, o) for m in AUTH_MECHANISMS for o in OUTCOMES}
        throttled = Counter(
            "xmppd_auth_throttled",
            "Password-guessing defences: IP addresses blocked, attempts refused because their"
            " address was blocked, attempts delayed for their account's failures",
            ["action"],
            registry=r,
        )
        #: action -> counter: blocked, refused, delayed
        self.auth_throttled = {a: throttled.labels(a) for a in THROTTLE_ACTIONS}
        limited = Counter(
            "xmppd_limited",
            "Times an edge limit acted: connections refused (unauthenticated_per_ip,"
            " connection_rate), streams closed for unread output (output_buffer), reads"
            " paused by the traffic shaper (shaper)",
            ["limit"],
            registry=r,
        )
        #: limit -> counter (LIMITS)
        self.limited = {k: limited.labels(k) for k in LIMITS}

        self.stanzas_in = Counter(
            "xmppd_stanzas_in", "Stanzas received from clients by kind", ["kind"], registry=r
        )
        self.in_message = self.stanzas_in.labels("message")
        self.in_presence = self.stanzas_in.labels("presence")
        self.in_iq = self.stanzas_in.labels("iq")
        self.in_error = self.stanzas_in.labels("error")
        self.stanzas_out = Counter(
            "xmppd_stanzas_out", "Stanzas written to clients by kind", ["kind"], registry=r
        )
        self.out_message = self.stanzas_out.labels("message")
        self.out_presence = self.stanzas_out.labels("presence")
        self.out_iq = self.stanzas_out.labels("iq")
        self.out_error = self.stanzas_out.labels("error")

        self.routing_latency = Histogram(
            "xmppd_routing_latency_seconds",
            "Edge to edge: from the sender's edge parsing a stanza to the recipient's edge"
            " writing it",
            buckets=LATENCY_BUCKETS,
            registry=r,
        )
        self._route_observe = self.routing_latency.observe
        direct = Counter(
            "xmppd_direct_deliveries",
            "Stanzas an edge sent straight to the recipient's edge; failure: the session"
            " was gone and a router took the stanza",
            ["outcome"],
            registry=r,
        )
        self.direct_ok = direct.labels("success")
        self.direct_failed = direct.labels("failure")
        self.grpc_call = Histogram(
            "xmppd_grpc_call_seconds",
            "gRPC client call latency by method",
            ["method"],
            buckets=LATENCY_BUCKETS,
            registry=r,
        )
        self.grpc_errors = Counter(
            "xmppd_grpc_errors",
            "gRPC client calls that failed, by method and status code",
            ["method", "code"],
            registry=r,
        )
        self.redis_latency = Histogram(
            "xmppd_redis_latency_seconds",
            "Redis command latency by operation",
            ["op"],
            buckets=LATENCY_BUCKETS,
            registry=r,
        )
        self.db_latency = Histogram(
            "xmppd_db_latency_seconds",
            "SQL statement latency by verb",
            ["op"],
            buckets=LATENCY_BUCKETS,
            registry=r,
        )
        #: the database wrapper's timers, one per SQL verb (see db.timed_database)
        self.db_timers = {op: self.db_latency.labels(op) for op in SQL_OPS}

        self.offline_stored = Counter(
            "xmppd_offline_messages_stored", "Messages put into offline storage", registry=r
        )
        self.offline_queue = Gauge(
            "xmppd_offline_queue_messages", "Offline messages waiting for delivery", registry=r
        )
        self._offline_gen = 0  # bumped on every +/-, so a recount can tell it raced one

        self.sessions = Gauge(
            "xmppd_sessions", "Sessions bound on an edge node", ["node"], registry=r
        )
        self.edge_up = Gauge(
            "xmppd_edge_up", "1 while the edge node's client listeners are up", ["node"], registry=r
        )
        self.muc_rooms = Gauge(
            "xmppd_muc_rooms", "Group chat rooms in memory", ["domain"], registry=r
        )
        self.muc_occupants = Gauge(
            "xmppd_muc_occupants", "Occupants of the group chat rooms", ["domain"], registry=r
        )
        self.muc_messages = Counter(
            "xmppd_muc_messages", "Groupchat messages broadcast by rooms", ["domain"], registry=r
        )
        self.pubsub_published = Counter(
            "xmppd_pubsub_published", "Items published to pubsub and PEP nodes", registry=r
        )
        self.pubsub_notifications = Counter(
            "xmppd_pubsub_notifications", "Pubsub and PEP notifications sent", registry=r
        )
        self.muc_fanout = Counter(
            "xmppd_muc_fanout", "Stanzas sent by group chat rooms", ["domain"], registry=r
        )

        if process if process is not None else exported:
            ProcessCollector(registry=r)
            PlatformCollector(registry=r)
            GCCollector(registry=r)

        if wall_clock:
            self._clock: Callable[[], float] = time.time_ns
            self._scale = 1e-9
        else:
            self._clock = time.perf_counter
            self._scale = 1.0

    # ---- the hot path ---------------------------------------------------------

    def stamp(self) -> float:
        """The routing start time to put in ``Envelope.t0``."""
        return self._clock()

    def routed(self, t0: float) -> None:
        """A stanza stamped ``t0`` was written to its recipient (0: not stamped, ignored)."""
        if t0:
            self._route_observe((self._clock() - t0) * self._scale)

    def stanza_in(self, tag: object, type_: str | None) -> None:
        """Count a stanza read from a client by its (namespaced) tag and type."""
        if type_ == "error":
            self.in_error.inc()
        elif tag == _MESSAGE:
            self.in_message.inc()
        elif tag == _PRESENCE:
            self.in_presence.inc()
        elif tag == _IQ:
            self.in_iq.inc()

    def stanza_out(self, data: bytes) -> None:
        """Count a serialized stanza written to a client (kind from its start tag).

        The bytes are lxml's serialization, which always quotes attributes with
        ``"`` (and escapes ``"`` in values), so ``type="error"`` in the start
        tag is the type attribute itself."""
        if data.find(b' type="error"', 0, data.find(b">")) >= 0:
            self.out_error.inc()
            return
        c = data[1] if len(data) > 1 else 0
        if c == 0x6D:  # <message
            self.out_message.inc()
        elif c == 0x70:  # <presence
            self.out_presence.inc()
        elif c == 0x69:  # <iq
            self.out_iq.inc()
        else:  # a prefixed tag such as <cl:message: rare
            head = data[1:64].split(b" ", 1)[0].split(b">", 1)[0].split(b"/", 1)[0]
            name = head.rsplit(b":", 1)[-1]
            if name == b"message":
                self.out_message.inc()
            elif name == b"presence":
                self.out_presence.inc()
            elif name == b"iq":
                self.out_iq.inc()

    # ---- authentication -----------------------------------------------------------

    def auth_result(self, mechanism: str, ok: bool) -> None:
        self._auth[mechanism_label(mechanism), "success" if ok else "failure"].inc()

    # ---- offline storage ------------------------------------------------------------

    def offline_added(self, new: bool = True) -> None:
        """One message went into offline storage (``new``: not a re-queued one)."""
        if new:
            self.offline_stored.inc()
        self.offline_queue.inc()
        self._offline_gen += 1

    def offline_removed(self, n: int) -> None:
        """``n`` messages left offline storage (delivered)."""
        if n:
            self.offline_queue.dec(n)
            self._offline_gen += 1

    async def recount_offline(self, count: Callable[[], Awaitable[int]]) -> None:
        """Set the offline queue gauge from a full count, unless a +/- raced it."""
        gen = self._offline_gen
        n = await count()
        if gen == self._offline_gen:
            self.offline_queue.set(n)


class AccountCounter(Protocol):
    """What the statistics need of storage (the Storage contract has it)."""

    async def count_accounts(self, host: str) -> int: ...


class OnlineCounter(Protocol):
    """What the statistics need of the session registry."""

    async def online_users(self) -> int: ...


async def count_offline_messages(db: Connection) -> int:
    """Every offline message waiting, all users and hosts."""
    return int(await db.fetchval("SELECT COUNT(*) FROM offline_messages") or 0)


class ServerStats:
    """Cluster-wide figures, computed off the scrape path.

    Scrapes are synchronous and storage is async, so a background task
    refreshes cached values every ``interval`` seconds and the collector
    serves the cache. Each figure is exported only by a process given its
    source: ``xmppd_registered_users{host}`` with ``storage``
    (``Storage.count_accounts`` per host) and ``xmppd_online_users`` with
    ``sessions`` (distinct bare JIDs in the session registry). With ``db`` it
    also recounts the offline queue now and then (``recount_every``), which
    corrects what the +/- bookkeeping cannot see (accounts deleted with their
    messages, another process's writes).
    """

    def __init__(
        self,
        metrics: Metrics,
        *,
        storage: AccountCounter | None = None,
        hosts: Sequence[str] = (),
        sessions: OnlineCounter | None = None,
        db: Connection | None = None,
        interval: float = 5.0,
        recount_every: float = 60.0,
    ) -> None:
        self.metrics = metrics
        self.storage = storage
        self.sessions = sessions
        self.hosts = list(hosts)
        self.db = db
        self.interval = interval
        self.recount_every = recount_every
        self.registered: dict[str, int] = dict.fromkeys(self.hosts, 0)
        self.online = 0
        self._task: asyncio.Task[None] | None = None
        self._last_recount = -float("inf")
        metrics.registry.register(self)

    # ---- the collector interface (called by generate_latest, synchronously) ----

    def describe(self) -> Iterable[Metric]:
        return self._families()

    def collect(self) -> Iterable[Metric]:
        return self._families()

    def _families(self) -> list[Metric]:
        out: list[Metric] = []
        if self.storage is not None:
            reg = GaugeMetricFamily(
                "xmppd_registered_users", "Registered accounts per virtual host", labels=["host"]
            )
            for host, n in self.registered.items():
                reg.add_metric([host], n)
            out.append(reg)
        if self.sessions is not None:
            out.append(
                GaugeMetricFamily(
                    "xmppd_online_users",
                    "Distinct users with at least one bound session",
                    self.online,
                )
            )
        return out

    # ---- refreshing -----------------------------------------------------------

    async def refresh(self) -> None:
        if self.storage is not None:
            storage = self.storage
            self.registered = {h: await storage.count_accounts(h) for h in self.hosts}
        if self.sessions is not None:
            self.online = await self.sessions.online_users()
        if self.db is not None and time.monotonic() - self._last_recount >= self.recount_every:
            db = self.db
            await self.metrics.recount_offline(lambda: count_offline_messages(db))
            self._last_recount = time.monotonic()

    async def start(self) -> None:
        """Refresh once (so the first scrape has values), then in the background."""
        await self.refresh()
        self._task = asyncio.get_running_loop().create_task(self._run())

    async def stop(self) -> None:
        if self._task is not None:
            self._task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._task
            self._task = None

    async def _run(self) -> None:
        while True:
            await asyncio.sleep(self.interval)
            try:
                await self.refresh()
            except Exception:  # keep serving the last values; say why
                log.warning("metrics: refreshing server statistics failed", exc_info=True)
