"""Where external components (XEP-0114) are connected, in Redis: the
:class:`~services.router.domains.ComponentDirectory` of a cluster.

A component connects to any edge; the edge claims its domain here and the
routers look the domain up to send it stanzas. Keys (under the prefix ``P``):

- ``P:comp:<domain>``: the node name of the edge holding the component
- ``P:cn:<node>``: set of the domains an edge holds (for the reaper)

A claim succeeds when the domain is free or already recorded for the same
node: an edge checks its own connections before it asks, so the second case
is a claim left behind by an earlier run of that edge (a crash and a restart
under the same node name before the reaper noticed). Releases only remove
what the releasing node still holds, so a component that reconnected
elsewhere meanwhile stays. Each change is one Lua script.
"""

from __future__ import annotations

from typing import Any

__all__ = ["RedisComponents"]

_CLAIM = """
local cur = redis.call('GET', KEYS[1])
if cur and cur ~= ARGV[1] then return 0 end
redis.call('SET', KEYS[1], ARGV[1])
redis.call('SADD', KEYS[2], ARGV[2])
return 1
"""

_RELEASE = """
if redis.call('GET', KEYS[1]) == ARGV[1] then redis.call('DEL', KEYS[1]) end
redis.call('SREM', KEYS[2], ARGV[2])
return 0
"""

_RELEASE_NODE = """
local domains = redis.call('SMEMBERS', KEYS[1])
for _, d in ipairs(domains) do
  local k = ARGV[1] .. 'comp:' .. d
  if redis.call('GET', k) == ARGV[2] then redis.call('DEL', k) end
end
redis.call('DEL', KEYS[1])
return domains
"""


class RedisComponents:
    def __init__(self, redis: Any, prefix: str) -> None:
        self.redis = redis
        self.p = prefix if prefix.endswith(":") else prefix + ":"
        self._claim = redis.register_script(_CLAIM)
        self._release = redis.register_script(_RELEASE)
        self._release_node = redis.register_script(_RELEASE_NODE)

    def _key(self, domain: str) -> str:
        return f"{self.p}comp:{domain}"

    def _node_key(self, node: str) -> str:
        return f"{self.p}cn:{node}"

    async def claim(self, domain: str, node: str) -> bool:
        keys = [self._key(domain), self._node_key(node)]
        return bool(await self._claim(keys=keys, args=[node, domain]))

    async def release(self, domain: str, node: str) -> None:
        await self._release(keys=[self._key(domain), self._node_key(node)], args=[node, domain])

    async def where(self, domain: str) -> str | None:
        cur = await self.redis.get(self._key(domain))
        if cur is None:
            return None
        return cur.decode() if isinstance(cur, bytes) else str(cur)

    async def release_node(self, node: str) -> list[str]:
        """Forget every component a (dead) edge held; returns their domains."""
        out = await self._release_node(keys=[self._node_key(node)], args=[self.p, node])
        return [d.decode() if isinstance(d, bytes) else str(d) for d in out or []]
