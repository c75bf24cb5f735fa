"""The routing types every layer shares: the envelope a stanza travels in,
a bound session, and the contracts of the session registry and of an edge
(what the router needs from the process holding a client's stream)."""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass, field
from typing import Protocol

from lxml import etree

from ..xmpp.jid import JID
from ..xmpp.tree import parse_element

__all__ = [
    "EdgeLink",
    "Edges",
    "Envelope",
    "LocalEdges",
    "Router",
    "Session",
    "SessionRegistry",
]


@dataclass(slots=True)
class Envelope:
    """A stanza on its way through the server: the routing header plus the
    serialized bytes, parsed once at the edge. ``element`` is the parsed form
    when it is at hand (in-process); :meth:`tree` parses lazily otherwise."""

    kind: str  # message | presence | iq
    type: str | None
    id: str | None
    frm: JID
    to: JID
    data: bytes
    element: etree._Element | None = None
    #: when the sender's edge parsed the stanza, for xmppd_routing_latency_seconds:
    #: time.perf_counter() seconds in one process (embedded), wall-clock nanoseconds
    #: (time.time_ns()) across processes (cluster); 0.0 = not stamped (server-made)
    t0: float = 0.0

    def tree(self) -> etree._Element:
        if self.element is None:
            self.element = parse_element(self.data)
        return self.element

    @staticmethod
    def of(el: etree._Element, frm: JID, to: JID) -> Envelope:
        return Envelope(
            kind=etree.QName(el).localname,
            type=el.get("type"),
            id=el.get("id"),
            frm=frm,
            to=to,
            data=etree.tostring(el, with_tail=False),
            element=el,
        )


@dataclass(slots=True)
class Session:
    """One bound resource as the registry knows it."""

    jid: JID
    node: str  # the edge node holding the stream
    priority: int = 0
    available: bool = False  # sent initial presence and not yet unavailable
    presence: bytes | None = None  # last broadcast presence, serialized
    interested: bool = False  # requested the roster (RFC 6121 2.1.1)
    directed: set[JID] = field(default_factory=set)  # directed presence sent to
    started: float = 0.0
    ip: str = ""
    sid: str = ""  # the stream id: tells a session from its replacement
    #: the registry's order of availability broadcasts (update(broadcast=True));
    #: 0 where the registry does not keep one
    broadcast_seq: int = 0
    #: per-session switches features set (carbons enabled, ...): state of one
    #: stream that a feature needs wherever the session is looked up, kept
    #: here so no feature needs a registry of its own
    flags: set[str] = field(default_factory=set)


class SessionRegistry(Protocol):
    #: True when a read sees every write made before it, in any task: the
    #: presence service may then rely on broadcast_seq (see PresenceService)
    consistent_reads: bool

    async def add(self, s: Session) -> Session | None: ...  # returns a replaced session
    async def remove(self, jid: JID, sid: str | None = None) -> Session | None: ...
    # persist changed fields of a bound session; broadcast=True: the session is
    # about to broadcast its presence, stamp broadcast_seq (where kept)
    async def update(self, s: Session, broadcast: bool = False) -> None: ...
    async def get(self, jid: JID) -> Session | None: ...
    async def resources(self, bare: JID) -> list[Session]: ...
    async def all(self) -> list[Session]: ...
    async def count(self) -> int: ...
    async def online_users(self) -> int: ...  # distinct bare JIDs with a bound session


class EdgeLink(Protocol):
    """What the router needs from an edge node. Deliveries are taken in the
    order of the calls (an implementation queues a stanza before its first
    await), so calls gathered at once still reach the client in order."""

    node_id: str

    async def deliver(self, jid: JID, data: bytes) -> bool: ...
    async def close_session(self, jid: JID, condition: str, text: str | None = None) -> bool: ...


class Router(Protocol):
    """What an edge needs of the router service: the in-process RouterService,
    or in a cluster the edge's RouterClient (and DirectRouter in front of it)."""

    async def route(self, env: Envelope, trusted: bool = False) -> None: ...
    # returns the user's XEP-0191 block list, which binding loads for routing
    async def bind(self, s: Session) -> frozenset[str]: ...
    async def unbind(self, jid: JID, sid: str) -> None: ...


class Edges(Protocol):
    """The edges a router can reach, by node name."""

    def get(self, node: str) -> EdgeLink | None: ...
    def __contains__(self, node: object) -> bool: ...
    def __iter__(self) -> Iterator[str]: ...

    async def ensure(self, node: str) -> None:
        """Look ``node`` up again (an edge that joined a moment ago)."""
        ...


class LocalEdges(dict[str, EdgeLink]):
    """The edges of one process: those attached, nothing to look up."""

    async def ensure(self, node: str) -> None:
        return None
