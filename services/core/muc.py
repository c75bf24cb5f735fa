"""The group chat service's contract (XEP-0045). Routers, and every role's
own router, hand it the stanzas addressed to a MUC domain; the in-process
:class:`~services.muc.service.MucHost` and the muc role's gRPC client
implement it."""

from __future__ import annotations

from typing import Protocol

from ..xmpp.jid import JID
from .routing import Envelope

__all__ = ["Muc"]


class Muc(Protocol):
    async def route(self, room: JID, env: Envelope) -> None:
        """A stanza to ``room`` (a room's bare JID, or the service's domain
        for the service itself); a StanzaError raised is bounced to the
        sender, from the address the stanza was sent to."""
        ...
