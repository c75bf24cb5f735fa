"""The in-process session registry of the embedded default.

The cluster swaps in a Redis-backed registry with the same Protocol.
"""

from __future__ import annotations

from ..core.routing import Session
from ..xmpp.jid import JID


class LocalRegistry:
    #: one process, shared Session objects: a read sees every earlier write
    consistent_reads = True

    def __init__(self) -> None:
        self._by_bare: dict[JID, dict[str, Session]] = {}
        self._count = 0
        self._broadcasts = 0

    async def add(self, s: Session) -> Session | None:
        assert s.jid.resource is not None
        res = self._by_bare.setdefault(s.jid.bare, {})
        old = res.get(s.jid.resource)
        res[s.jid.resource] = s
        if old is None:
            self._count += 1
        return old

    async def remove(self, jid: JID, sid: str | None = None) -> Session | None:
        res = self._by_bare.get(jid.bare)
        if not res or jid.resource is None:
            return None
        cur = res.get(jid.resource)
        if cur is None or (sid is not None and cur.sid != sid):
            return None  # already replaced by a newer session
        s = res.pop(jid.resource)
        if s is not None:
            self._count -= 1
        if not res:
            del self._by_bare[jid.bare]
        return s

    async def update(self, s: Session, broadcast: bool = False) -> None:
        """Sessions are shared objects here: nothing to write back."""
        if broadcast:
            self._broadcasts += 1
            s.broadcast_seq = self._broadcasts

    async def get(self, jid: JID) -> Session | None:
        res = self._by_bare.get(jid.bare)
        if res is None or jid.resource is None:
            return None
        return res.get(jid.resource)

    async def resources(self, bare: JID) -> list[Session]:
        res = self._by_bare.get(bare)
        return list(res.values()) if res else []

    async def all(self) -> list[Session]:
        return [s for res in self._by_bare.values() for s in res.values()]

    async def count(self) -> int:
        return self._count

    async def online_users(self) -> int:
        return len(self._by_bare)
