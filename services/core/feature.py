"""What a feature declares, the hook chain that runs it, and the context its
handlers get.

A feature (one module or folder under ``services/features/``) is data: a
:class:`Feature` naming its IQ handlers, its hooks, what it advertises, what
it depends on and what storage it needs. The router runs the hooks at fixed
points of RFC 6121's delivery rules; an edge that delivers one hop on its
own (``services/cluster/direct.py``) runs the same filters through the same
:class:`FeatureSet`, so a feature written once behaves the same on the
embedded default, through a router and on the direct path.

The hook points, in the order a stanza meets them:

``edge_iq``
    (payload tag, iq type) -> hook, run in the sender's process before the
    IQ is routed anywhere (a cache the next stanza must not trust, say).
``filters``
    every stanza a client sends, before delivery: may raise a StanzaError
    (bounced to the sender) or return :data:`DROP` (dropped silently, as
    XEP-0191 wants for blocked presence). The direct path takes the router's
    way for a stanza any filter would stop.
``presence_out`` / ``presence_in``
    presence from a local user (not yet routed) and presence to a local user:
    the first hook that returns True has handled it.
``message_arrive``
    every message to a local user, before it is delivered or kept (once,
    whether it then goes to a resource, to offline storage or nowhere): a
    hook may change the envelope (an archive stamps its XEP-0359
    stanza-id, so each copy carries it) and cannot stop it.
``message_in`` / ``message_out``
    observers of every message delivered to / sent by a local user (an
    archive, carbons): they see it and cannot stop it.
``undelivered``
    a message for a local user with no resource to take it: the first hook
    that returns True has kept it (offline storage, an archive); none did:
    service-unavailable to the sender.
``detached_delivery``
    a stanza was queued for a session whose connection is gone and which
    waits for XEP-0198 resumption (the edge holding it runs the chain, in
    the background, with its own context: the deliverer does not wait).
    Observers: the stanza is in the session's queue whatever they do (push
    notifications wake the client's device).
``session_available`` / ``session_gone``
    a session became available with a non-negative priority (its initial
    presence, or a priority raised from below zero: where XEP-0160 sends
    what was kept for the user) / a session ended.
``account_removed``
    an account and its data are being deleted: drop what the feature keeps.
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Protocol

from lxml import etree

from ..xmpp.jid import JID
from .routing import EdgeLink, Envelope, Session, SessionRegistry
from .storage import Storage

if TYPE_CHECKING:
    from ..platform.config import Settings
    from ..platform.metrics import Metrics
    from .presence import Presence

__all__ = [
    "DROP",
    "NO_REPLY",
    "BlockLists",
    "Context",
    "Drop",
    "Feature",
    "FeatureError",
    "FeatureSet",
    "IQHandler",
    "UserCache",
]


class BlockLists(Protocol):
    """XEP-0191 block lists as routing sees them (a cache over storage)."""

    async def blocks(self, user: JID, other: JID) -> bool: ...
    def invalidate(self, user: JID) -> None: ...  # changed here: tell every process
    def forget(self, user: JID) -> None: ...  # changed elsewhere: drop the local copy


class UserCache(Protocol):
    """A per-user value a feature derives from storage and needs on a hot
    path (the hash of a vCard photo for each available presence), kept in
    every process that asked for it; a change made anywhere drops every
    copy (in a cluster through the event bus)."""

    async def get(
        self, user: JID, load: Callable[[], Awaitable[str | None]]
    ) -> str | None: ...  # ``load()`` on a miss; what it returns is kept

    def invalidate(self, user: JID) -> None: ...  # changed here: tell every process


class Context(Protocol):
    """The server as feature handlers see it (the router implements it)."""

    settings: Settings
    storage: Storage
    sessions: SessionRegistry
    started_at: float
    features: FeatureSet
    metrics: Metrics

    @property
    def blocks(self) -> BlockLists: ...

    @property
    def presence(self) -> Presence: ...

    async def send(self, el: etree._Element) -> None:
        """Route a server-generated stanza (``from`` and ``to`` already set)."""
        ...

    async def route(self, env: Envelope, trusted: bool = False) -> None:
        """Route an envelope; ``trusted``: built by the server, no client rules."""
        ...

    async def deliver(self, jid: JID, data: bytes) -> bool:
        """Write bytes to one bound session, if it is there."""
        ...

    async def close_session(self, s: Session, condition: str, text: str | None = None) -> bool:
        """End a bound session's stream with a stream error condition."""
        ...

    async def edge(self, node: str) -> EdgeLink | None: ...

    async def user_exists(self, jid: JID) -> bool: ...

    def is_local(self, domain: str) -> bool: ...

    async def service_domains(self) -> list[tuple[str, str]]:
        """(domain, name) of the services and components this server routes to."""
        ...

    def cache(self, name: str) -> UserCache:
        """The per-user cache named ``name`` (made on first use): how a
        feature keeps a derived value without the router knowing it."""
        ...

    def contract(self, name: str) -> object:
        """The service registered as ``name`` this process reaches (the
        pubsub service for PEP, ...), in-process or a gRPC client: how a
        feature hands work to a service role without the router knowing
        either. SERVICE_UNAVAILABLE when the deployment has none. Each
        contract module has its typed accessor (core.pubsub.pubsub_of)."""
        ...


#: An IQ handler returns the payload of the result (or None for an empty
#: result), or raises StanzaError. Returning NO_REPLY means it answered itself.
IQHandler = Callable[[Context, Envelope, etree._Element], Awaitable[etree._Element | None]]

NO_REPLY = etree.Element("no-reply")


class Drop:
    """What a filter returns to drop a stanza without an error."""

    def __repr__(self) -> str:
        return "DROP"


DROP = Drop()

#: run in the sender's process before an IQ is routed
EdgeIQHook = Callable[[Context, Envelope], None]
#: None lets the stanza pass, DROP drops it; raising StanzaError bounces it
Filter = Callable[[Context, Envelope], Awaitable[Drop | None]]
#: True: handled, stop here
Handler = Callable[[Context, Envelope], Awaitable[bool]]
#: sees the stanza, cannot stop it
Observer = Callable[[Context, Envelope], Awaitable[None]]
SessionHook = Callable[[Context, Session], Awaitable[None]]
#: the full JID of a detached session and the stanza queued for it, serialized
DetachedHook = Callable[[Context, JID, bytes], Awaitable[None]]
AccountHook = Callable[[Context, JID], Awaitable[None]]


class FeatureError(ValueError):
    """Features that cannot be loaded together (a clash, a missing dependency)."""


@dataclass
class Feature:
    name: str
    xeps: tuple[str, ...] = ()
    #: names of the features this one needs loaded too
    depends: tuple[str, ...] = ()
    #: the storage tables it reads or writes (documentation and load checks)
    storage: tuple[str, ...] = ()
    #: features advertised in the server's disco#info
    disco_features: tuple[str, ...] = ()
    #: features advertised in an account's (bare JID's) disco#info
    account_disco_features: tuple[str, ...] = ()
    #: identities (category, type) an account's disco#info shows (PEP: pubsub/pep)
    account_identities: tuple[tuple[str, str], ...] = ()
    #: IQs addressed to the server domain: (payload tag, iq type) -> handler
    server_iq: dict[tuple[str, str], IQHandler] = field(default_factory=dict)
    #: IQs addressed to a local bare JID (own account or another's)
    account_iq: dict[tuple[str, str], IQHandler] = field(default_factory=dict)
    #: disco nodes of an account (XEP-0030 queries with a ``node``, to a local
    #: bare JID): (node, "info" | "items") -> the handler answering that query
    account_disco_nodes: dict[tuple[str, str], IQHandler] = field(default_factory=dict)
    #: stream features advertised after authentication (serialized)
    stream_features: tuple[bytes, ...] = ()
    # ---- hooks (see the module docstring for when each runs)
    edge_iq: dict[tuple[str, str], EdgeIQHook] = field(default_factory=dict)
    filters: tuple[Filter, ...] = ()
    presence_out: tuple[Handler, ...] = ()
    presence_in: tuple[Handler, ...] = ()
    message_arrive: tuple[Observer, ...] = ()
    message_in: tuple[Observer, ...] = ()
    message_out: tuple[Observer, ...] = ()
    undelivered: tuple[Handler, ...] = ()
    detached_delivery: tuple[DetachedHook, ...] = ()
    session_available: tuple[SessionHook, ...] = ()
    session_gone: tuple[SessionHook, ...] = ()
    account_removed: tuple[AccountHook, ...] = ()


def _merge(
    into: dict[tuple[str, str], IQHandler] | dict[tuple[str, str], EdgeIQHook],
    owners: dict[tuple[str, str], str],
    table: str,
    feature: Feature,
    items: dict[tuple[str, str], IQHandler] | dict[tuple[str, str], EdgeIQHook],
) -> None:
    for key, handler in items.items():
        if key in owners:
            raise FeatureError(
                f"{table} {key[0]} ({key[1]}) is claimed by both "
                f"{owners[key]!r} and {feature.name!r}"
            )
        owners[key] = feature.name
        into[key] = handler  # type: ignore[assignment]


@dataclass
class FeatureSet:
    """The loaded features, checked and merged into the tables the router runs."""

    features: list[Feature]

    def __post_init__(self) -> None:
        names = [f.name for f in self.features]
        dup = {n for n in names if names.count(n) > 1}
        if dup:
            raise FeatureError(f"features loaded twice: {sorted(dup)}")
        for f in self.features:
            missing = [d for d in f.depends if d not in names]
            if missing:
                raise FeatureError(f"feature {f.name!r} needs {missing}, which are not loaded")
        self.server_iq: dict[tuple[str, str], IQHandler] = {}
        self.account_iq: dict[tuple[str, str], IQHandler] = {}
        self.edge_iq: dict[tuple[str, str], EdgeIQHook] = {}
        self.account_disco_nodes: dict[tuple[str, str], IQHandler] = {}
        owners: dict[str, dict[tuple[str, str], str]] = {
            "server": {},
            "account": {},
            "edge": {},
            "node": {},
        }
        for f in self.features:
            _merge(self.server_iq, owners["server"], "server IQ", f, f.server_iq)
            _merge(self.account_iq, owners["account"], "account IQ", f, f.account_iq)
            _merge(self.edge_iq, owners["edge"], "edge IQ hook", f, f.edge_iq)
            _merge(
                self.account_disco_nodes,
                owners["node"],
                "account disco node",
                f,
                f.account_disco_nodes,
            )
        # the chains, in load order; empty tuples cost the hot path one loop
        # over nothing
        self.filters = tuple(h for f in self.features for h in f.filters)
        self.presence_out = tuple(h for f in self.features for h in f.presence_out)
        self.presence_in = tuple(h for f in self.features for h in f.presence_in)
        self.message_arrive = tuple(h for f in self.features for h in f.message_arrive)
        self.message_in = tuple(h for f in self.features for h in f.message_in)
        self.message_out = tuple(h for f in self.features for h in f.message_out)
        self.undelivered = tuple(h for f in self.features for h in f.undelivered)
        self.detached_delivery = tuple(h for f in self.features for h in f.detached_delivery)
        self.session_available = tuple(h for f in self.features for h in f.session_available)
        self.session_gone = tuple(h for f in self.features for h in f.session_gone)
        self.account_removed = tuple(h for f in self.features for h in f.account_removed)

    def names(self) -> list[str]:
        return [f.name for f in self.features]

    def storage_needs(self) -> list[str]:
        return sorted({t for f in self.features for t in f.storage})

    def disco_features(self) -> list[str]:
        return sorted({x for f in self.features for x in f.disco_features})

    def account_disco_features(self) -> list[str]:
        return sorted({x for f in self.features for x in f.account_disco_features})

    def account_identities(self) -> list[tuple[str, str]]:
        return sorted({x for f in self.features for x in f.account_identities})

    def stream_features(self) -> list[bytes]:
        return [x for f in self.features for x in f.stream_features]

    # ---- running the chains -------------------------------------------------

    async def filter(self, ctx: Context, env: Envelope) -> bool:
        """True if every filter lets ``env`` pass (a StanzaError propagates)."""
        for f in self.filters:
            if await f(ctx, env) is DROP:
                return False
        return True

    async def handle(self, chain: tuple[Handler, ...], ctx: Context, env: Envelope) -> bool:
        for h in chain:
            if await h(ctx, env):
                return True
        return False

    async def observe(self, chain: tuple[Observer, ...], ctx: Context, env: Envelope) -> None:
        for h in chain:
            await h(ctx, env)

    async def detached(self, ctx: Context, jid: JID, data: bytes) -> None:
        for h in self.detached_delivery:
            await h(ctx, jid, data)

    async def session_event(self, chain: tuple[SessionHook, ...], ctx: Context, s: Session) -> None:
        for h in chain:
            await h(ctx, s)

    async def remove_account(self, ctx: Context, user: JID) -> None:
        for h in self.account_removed:
            await h(ctx, user)
