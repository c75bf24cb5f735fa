"""The presence service over gRPC: :class:`PresenceClient`, the typed client
of the :class:`~services.core.presence.Presence` contract routers use, and
:class:`PresenceServicer`, which serves the presence role's PresenceService."""

from __future__ import annotations

from ..core.presence import Presence
from ..core.routing import Envelope, Session
from ..xmpp.jid import JID
from .rpc import CallServicer, ContractClient

__all__ = ["PRESENCE_IDEMPOTENT", "PresenceClient", "PresenceServicer"]

#: Presence methods a client may send twice (see storage_rpc.STORAGE_IDEMPOTENT)
PRESENCE_IDEMPOTENT: dict[str, bool] = {
    # each routes stanzas and changes rosters or sessions: twice sends twice
    "outbound": False,
    "inbound": False,
    "session_gone": False,
    "roster_set": True,  # sets a name and groups (the repeated push is harmless)
    "roster_remove": False,  # the second answers "no such item"
}


class PresenceServicer(CallServicer):
    """``Presence.Call``: every method of the Presence contract, on ``impl``."""

    def __init__(self, impl: Presence) -> None:
        super().__init__(Presence, impl)


class PresenceClient(ContractClient):
    """The Presence contract on the presence role's replicas, by the user a
    call is about (the sender of an envelope, the session's JID, the user)."""

    SERVICE = "Presence"
    CONTRACT = Presence
    IDEMPOTENT = PRESENCE_IDEMPOTENT

    async def outbound(self, env: Envelope) -> None:
        return await self._call(Presence.outbound, env)

    async def inbound(self, env: Envelope) -> None:
        return await self._call(Presence.inbound, env)

    async def session_gone(self, session: Session, replaced: bool) -> None:
        return await self._call(Presence.session_gone, session, replaced)

    async def roster_set(
        self, user: JID, contact: JID, name: str | None, groups: tuple[str, ...]
    ) -> None:
        return await self._call(Presence.roster_set, user, contact, name, groups)

    async def roster_remove(self, user: JID, contact: JID) -> bool:
        return await self._call(Presence.roster_remove, user, contact)


#: mypy proves the client implements the contract, method for method
_client: type[Presence] = PresenceClient
