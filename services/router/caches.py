"""The per-user caches features keep through ``Context.cache`` (the
``UserCache`` seam): one small dict per name, dropped per user when that
user's data changes here or, through the cluster's event bus, elsewhere."""

from __future__ import annotations

from collections.abc import Awaitable, Callable

from ..xmpp.jid import JID

__all__ = ["MAX_ENTRIES", "UserCaches"]

#: entries per cache before the oldest are dropped (one entry is a bare JID
#: and a short string: a few hundred bytes)
MAX_ENTRIES = 200_000


class _Cache:
    __slots__ = ("_announce", "_gen", "_limit", "_values", "name")

    def __init__(self, name: str, announce: Callable[[str, JID], None], limit: int) -> None:
        self.name = name
        self._announce = announce
        self._limit = limit
        self._values: dict[JID, str | None] = {}
        # bumped by every drop: a load that started before a drop must not
        # store what it read (the change may have come after the read)
        self._gen = 0

    async def get(self, user: JID, load: Callable[[], Awaitable[str | None]]) -> str | None:
        bare = user.bare
        try:
            return self._values[bare]
        except KeyError:
            pass
        gen = self._gen
        value = await load()
        if gen == self._gen:
            if len(self._values) >= self._limit:
                del self._values[next(iter(self._values))]
            self._values[bare] = value
        return value

    def forget(self, user: JID) -> None:
        self._gen += 1
        self._values.pop(user.bare, None)

    def clear(self) -> None:
        self._gen += 1
        self._values.clear()

    def invalidate(self, user: JID) -> None:
        self.forget(user)
        self._announce(self.name, user.bare)


class UserCaches:
    def __init__(self, limit: int = MAX_ENTRIES) -> None:
        self._caches: dict[str, _Cache] = {}
        self._limit = limit
        self._on_invalidate: list[Callable[[str, JID], None]] = []

    def subscribe(self, on_invalidate: Callable[[str, JID], None]) -> None:
        """Call ``on_invalidate(name, bare JID)`` after every local change
        (a cluster publishes it, so other processes drop their copy)."""
        self._on_invalidate.append(on_invalidate)

    def get(self, name: str) -> _Cache:
        cache = self._caches.get(name)
        if cache is None:
            cache = self._caches[name] = _Cache(name, self._announce, self._limit)
        return cache

    def forget(self, name: str, user: JID | None) -> None:
        """Drop a copy changed elsewhere (None: every user's; name "*":
        every cache's)."""
        for cache in self._caches.values() if name == "*" else [self._caches.get(name)]:
            if cache is not None:
                if user is None:
                    cache.clear()
                else:
                    cache.forget(user)

    def _announce(self, name: str, user: JID) -> None:
        for hook in self._on_invalidate:
            hook(name, user)
