"""The publish-subscribe service's contract (XEP-0060, and PEP, XEP-0163).

Routers hand it the stanzas addressed to a pubsub domain
(``pubsub.<host>``) and the pubsub IQs addressed to an account's bare JID
(PEP: every account is a pubsub service of its own); the in-process
:class:`~services.pubsub.service.PubsubHost` and the pubsub role's gRPC
client implement it."""

from __future__ import annotations

from dataclasses import dataclass
from typing import TYPE_CHECKING, Protocol, cast

from ..xmpp.jid import JID
from .routing import Envelope

if TYPE_CHECKING:
    from .feature import Context

__all__ = [
    "CONTRACT",
    "NodeOwnership",
    "NodeSummary",
    "Pubsub",
    "node_key",
    "pubsub_of",
    "request_key",
]

#: the name the Pubsub service is registered under in a router's contracts
CONTRACT = "pubsub"


def pubsub_of(ctx: Context) -> Pubsub:
    """The pubsub service ``ctx`` reaches (SERVICE_UNAVAILABLE if none)."""
    return cast("Pubsub", ctx.contract(CONTRACT))


@dataclass(frozen=True, slots=True)
class NodeSummary:
    """One node as operators see it (the admin API, ``xmppctl nodes``)."""

    service: JID
    node: str
    title: str = ""
    node_type: str = "leaf"
    access_model: str = "open"
    items: int = 0
    subscriptions: int = 0
    owners: tuple[str, ...] = ()


def node_key(service: JID, node: str | None) -> str:
    """What a node's stanzas are placed by in a cluster: a PEP service is
    one unit (all of an account's nodes together, as its notifications
    depend on its roster), a pubsub domain's nodes one each."""
    if service.local is not None or not node:
        return str(service.bare)
    return f"{service.bare}#{node}"


def request_key(service: JID, env: Envelope) -> str:
    """The placement key of a stanza to ``service``: the node its request
    names (on the pubsub verb, or on a disco query). Callers and replicas
    both place a request by it."""
    el = env.tree()
    payload = el[0] if env.kind == "iq" and len(el) else None
    node = None
    if payload is not None:
        node = payload[0].get("node") if len(payload) else payload.get("node")
    return node_key(service, node)


class Pubsub(Protocol):
    async def route(self, service: JID, env: Envelope) -> None:
        """A stanza to ``service`` (a pubsub domain, or an account's bare JID
        for PEP); the service answers IQs itself. A StanzaError raised is
        bounced to the sender."""
        ...

    async def available(self, jid: JID, presence: bytes) -> None:
        """A local session ``jid`` sent available presence (``presence``, with
        its XEP-0115 caps): PEP sends it the last items of the nodes it asks
        for (+notify) among those of its contacts it may see (XEP-0163 6.3)."""
        ...

    async def legacy_bookmarks(self, user: JID, storage: bytes) -> None:
        """``user`` stored XEP-0048 bookmarks (``<storage/>``) in private XML:
        the PEP bookmark nodes follow (XEP-0411, XEP-0402 8.1), their
        subscribers notified. (The other way round happens by itself: a
        publish to a bookmark node rewrites private XML.)"""
        ...

    async def vcard_changed(self, user: JID, vcard: bytes) -> None:
        """``user`` stored a vCard (XEP-0054): its photo becomes the PEP
        avatar (XEP-0398), contacts notified. (A PEP avatar published becomes
        the vCard's photo by itself.)"""
        ...

    # ---- administration (the admin API and xmppctl) ----

    async def nodes(self, service: JID) -> list[NodeSummary]: ...

    async def delete_node(self, service: JID, node: str) -> bool:
        """Delete a node (subscribers are told); False if there was none."""
        ...

    async def purge_node(self, service: JID, node: str) -> bool:
        """Remove every item of a node; False if there was no such node."""
        ...


class NodeOwnership(Protocol):
    """Which pubsub replica holds each node (a cluster), by
    :func:`node_key`; the embedded default has none."""

    async def elsewhere(self, key: str) -> Pubsub | None:
        """None when this replica holds ``key``; else the replica that does."""
        ...

    async def release(self, key: str) -> None: ...
