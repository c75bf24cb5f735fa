"""The group chat service over gRPC: :class:`MucClient`, the typed client of
the :class:`~services.core.muc.Muc` contract every other role's router uses
for MUC domains, and :class:`MucServicer`, which serves the muc role's
MucHost."""

from __future__ import annotations

from ..core.muc import Muc, RoomSummary
from ..core.routing import Envelope
from ..xmpp.jid import JID
from .leases import KeyedClient
from .rpc import CallServicer

__all__ = ["MUC_IDEMPOTENT", "MucClient", "MucServicer"]

#: Muc methods a client may send twice (see storage_rpc.STORAGE_IDEMPOTENT)
MUC_IDEMPOTENT: dict[str, bool] = {
    # a stanza to a room is broadcast: twice would be said twice
    "route": False,
    "rooms": True,
    "room": True,
    # each answers False the second time: the first call's effect is kept,
    # but the answer would say otherwise
    "create_room": False,
    "destroy_room": False,
    "set_affiliation": True,  # sets a value; occupants may be told twice
}


class MucServicer(CallServicer):
    """``Muc.Call``: the Muc contract's methods, on ``impl``."""

    def __init__(self, impl: Muc) -> None:
        super().__init__(Muc, impl)


class MucClient(KeyedClient):
    """The Muc contract on the muc role's replicas, by room: the stanzas of
    one room go to one replica, in order."""

    SERVICE = "Muc"
    CONTRACT = Muc
    IDEMPOTENT = MUC_IDEMPOTENT

    async def route(self, room: JID, env: Envelope) -> None:
        return await self._call(Muc.route, room, env)

    async def rooms(self, domain: str) -> list[RoomSummary]:
        return await self._call(Muc.rooms, domain)

    async def room(self, room: JID) -> RoomSummary | None:
        return await self._call(Muc.room, room)

    async def create_room(self, room: JID, owner: JID, name: str, members_only: bool) -> bool:
        return await self._call(Muc.create_room, room, owner, name, members_only)

    async def destroy_room(self, room: JID, reason: str | None, alternate: JID | None) -> bool:
        return await self._call(Muc.destroy_room, room, reason, alternate)

    async def set_affiliation(
        self, room: JID, jid: JID, affiliation: str, reason: str | None
    ) -> bool:
        return await self._call(Muc.set_affiliation, room, jid, affiliation, reason)


#: mypy proves the client implements the contract, method for method
_client: type[Muc] = MucClient
