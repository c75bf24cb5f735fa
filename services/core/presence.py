"""The presence service's contract (RFC 6121 presence, subscriptions and the
roster's subscription state). The router and the roster feature use it; the
in-process PresenceService and the presence role's gRPC client implement it."""

from __future__ import annotations

from typing import Protocol

from ..xmpp.jid import JID
from .routing import Envelope, Session

__all__ = ["Presence"]


class Presence(Protocol):
    async def outbound(self, env: Envelope) -> None:
        """Presence a local user sent (broadcast, directed, subscriptions)."""
        ...

    async def inbound(self, env: Envelope) -> None:
        """Presence addressed to a local user."""
        ...

    async def session_gone(self, session: Session, replaced: bool) -> None: ...

    async def roster_set(
        self, user: JID, contact: JID, name: str | None, groups: tuple[str, ...]
    ) -> None: ...

    async def roster_remove(self, user: JID, contact: JID) -> bool: ...
