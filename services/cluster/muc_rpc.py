"""The group chat service over gRPC: :class:`MucClient`, the typed client of
the :class:`~services.core.muc.Muc` contract every other role's router uses
for MUC domains, and :class:`MucServicer`, which serves the muc role's
MucHost."""

from __future__ import annotations

from ..core.muc import Muc
from ..core.routing import Envelope
from ..xmpp.jid import JID
from .rpc import CallServicer, ContractClient

__all__ = ["MUC_IDEMPOTENT", "MucClient", "MucServicer"]

#: Muc methods a client may send twice (see storage_rpc.STORAGE_IDEMPOTENT)
MUC_IDEMPOTENT: dict[str, bool] = {
    # a stanza to a room is broadcast: twice would be said twice
    "route": False,
}


class MucServicer(CallServicer):
    """``Muc.Call``: the Muc contract's methods, on ``impl``."""

    def __init__(self, impl: Muc) -> None:
        super().__init__(Muc, impl)


class MucClient(ContractClient):
    """The Muc contract on the muc role's replicas, by room: the stanzas of
    one room go to one replica, in order."""

    SERVICE = "Muc"
    CONTRACT = Muc
    IDEMPOTENT = MUC_IDEMPOTENT

    async def route(self, room: JID, env: Envelope) -> None:
        return await self._call(Muc.route, room, env)


#: mypy proves the client implements the contract, method for method
_client: type[Muc] = MucClient
