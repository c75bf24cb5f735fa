"""The publish-subscribe service over gRPC: :class:`PubsubClient`, the typed
client of the :class:`~services.core.pubsub.Pubsub` contract every other
role uses (for pubsub domains, and PEP through the feature's contract), and
:class:`PubsubServicer`, which serves the pubsub role's PubsubHost."""

from __future__ import annotations

from typing import Any

from ..core.pubsub import NodeSummary, Pubsub, node_key, request_key
from ..core.routing import Envelope
from ..xmpp.jid import JID
from .leases import KeyedClient
from .rpc import CallServicer

__all__ = ["PUBSUB_IDEMPOTENT", "PubsubClient", "PubsubServicer"]

#: Pubsub methods a client may send twice (see storage_rpc.STORAGE_IDEMPOTENT)
PUBSUB_IDEMPOTENT: dict[str, bool] = {
    # a publish twice is two notifications (and a second item without an id)
    "route": False,
    # the last items sent twice: a client sees a notification again, which
    # XEP-0163 clients take as the same state (the same item id)
    "available": True,
    # the stores end up the same; subscribers may be notified twice
    "legacy_bookmarks": True,
    "vcard_changed": True,
    "nodes": True,
    # each answers False the second time
    "delete_node": False,
    "purge_node": True,
}


class PubsubServicer(CallServicer):
    """``Pubsub.Call``: the Pubsub contract's methods, on ``impl``."""

    def __init__(self, impl: Pubsub) -> None:
        super().__init__(Pubsub, impl)


def _key(args: tuple[Any, ...]) -> str | None:
    """The placement key of a call: a node (or a PEP account), as the pubsub
    replicas' leases name it (core.pubsub.node_key)."""
    if not args:
        return None
    first = args[0]
    if not isinstance(first, JID):
        return None
    if len(args) > 1 and isinstance(args[1], Envelope):
        return request_key(first, args[1])
    if len(args) > 1 and isinstance(args[1], str):
        return node_key(first, args[1])
    return node_key(first, None)


class PubsubClient(KeyedClient):
    """The Pubsub contract on the pubsub role's replicas, by node: the
    requests of one node go to one replica, in order."""

    SERVICE = "Pubsub"
    CONTRACT = Pubsub
    IDEMPOTENT = PUBSUB_IDEMPOTENT

    def _key(self, args: tuple[Any, ...]) -> str | None:
        return _key(args)

    async def route(self, service: JID, env: Envelope) -> None:
        return await self._call(Pubsub.route, service, env)

    async def available(self, jid: JID, presence: bytes) -> None:
        return await self._call(Pubsub.available, jid, presence)

    async def legacy_bookmarks(self, user: JID, storage: bytes) -> None:
        return await self._call(Pubsub.legacy_bookmarks, user, storage)

    async def vcard_changed(self, user: JID, vcard: bytes) -> None:
        return await self._call(Pubsub.vcard_changed, user, vcard)

    async def nodes(self, service: JID) -> list[NodeSummary]:
        return await self._call(Pubsub.nodes, service)

    async def delete_node(self, service: JID, node: str) -> bool:
        return await self._call(Pubsub.delete_node, service, node)

    async def purge_node(self, service: JID, node: str) -> bool:
        return await self._call(Pubsub.purge_node, service, node)


#: mypy proves the client implements the contract, method for method
_client: type[Pubsub] = PubsubClient
