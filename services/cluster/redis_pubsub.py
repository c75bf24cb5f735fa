"""What the pubsub replicas share in Redis beyond node leases
(services/cluster/leases.py): the entity capabilities cache. A client's
caps ``ver`` is asked about once for the cluster; whichever replica gets the
answer checks it and keeps it here (``P:caps`` hash ver -> features, one
per line), and every replica reads it."""

from __future__ import annotations

from typing import Any

__all__ = ["RedisCaps"]


class RedisCaps:
    """:class:`~services.pubsub.caps.CapsStore` in Redis, with a copy in
    memory (what a ver stands for never changes: the hash says so)."""

    def __init__(self, redis: Any, prefix: str, limit: int = 10000) -> None:
        self.redis = redis
        self.key = prefix + "caps"
        self._known: dict[str, frozenset[str]] = {}
        self._limit = limit

    async def get(self, ver: str) -> frozenset[str] | None:
        known = self._known.get(ver)
        if known is not None:
            return known
        raw = await self.redis.hget(self.key, ver)
        if raw is None:
            return None
        text = raw.decode() if isinstance(raw, bytes) else str(raw)
        features = frozenset(f for f in text.split("\n") if f)
        self._remember(ver, features)
        return features

    async def put(self, ver: str, features: frozenset[str]) -> None:
        await self.redis.hset(self.key, ver, "\n".join(sorted(features)))
        self._remember(ver, features)

    def _remember(self, ver: str, features: frozenset[str]) -> None:
        if len(self._known) >= self._limit:
            self._known.pop(next(iter(self._known)))
        self._known[ver] = features
