"""Per-user block lists (XEP-0191), cached so routing needs no query per stanza."""

from __future__ import annotations

from collections.abc import Callable

from ..core.storage import Storage
from ..xmpp.jid import JID


class BlockCache:
    def __init__(self, storage: Storage) -> None:
        self._storage = storage
        self._cache: dict[JID, frozenset[str]] = {}
        #: called after a local change, so other nodes can drop their copy too
        self._on_invalidate: list[Callable[[JID], None]] = []

    def subscribe(self, on_invalidate: Callable[[JID], None]) -> None:
        """Call ``on_invalidate(bare JID)`` after every local change (a cluster
        publishes it, so other processes drop their copy)."""
        self._on_invalidate.append(on_invalidate)

    async def get(self, user: JID) -> frozenset[str]:
        bare = user.bare
        got = self._cache.get(bare)
        if got is None:
            assert bare.local is not None
            got = frozenset(await self._storage.get_blocklist(bare.domain, bare.local))
            self._cache[bare] = got
        return got

    def prime(self, user: JID, items: frozenset[str]) -> None:
        """Take a list another process just loaded (a router, at bind)."""
        self._cache[user.bare] = items

    def invalidate(self, user: JID) -> None:
        self.forget(user)
        for hook in self._on_invalidate:
            hook(user.bare)

    def clear(self) -> None:
        self._cache.clear()

    def forget(self, user: JID) -> None:
        """Drop the cached list (a change elsewhere)."""
        self._cache.pop(user.bare, None)

    async def blocks(self, user: JID, other: JID) -> bool:
        """Does ``user`` block ``other``? Matches full, bare and domain entries."""
        items = self._cache.get(user.bare)
        if items is None:  # not loaded yet (the router preloads it on bind)
            items = await self.get(user)
        if not items:
            return False
        return (
            str(other) in items
            or str(other.bare) in items
            or other.domain in items
            or (other.resource is not None and f"{other.domain}/{other.resource}" in items)
        )
