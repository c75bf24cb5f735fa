"""The session registry in Redis, shared by every process of a cluster.

Keys (all under the configured prefix ``P``):

- ``P:s:<bare JID>``: hash resource -> Session (codec JSON)
- ``P:n:<node>``: set of full JIDs bound on an edge node (for reaping)
- ``P:count``: number of bound sessions
- ``P:users``: number of bare JIDs with at least one bound session
- ``P:edges``: hash node -> gRPC address of live edges
- ``P:hb:<node>``: an edge's heartbeat, expiring after ``node_ttl`` seconds

Changes that must be atomic (add/replace, remove-if-same-stream, update) are
Lua scripts, so two edges binding the same resource at once cannot both win.

An update writes the fields its caller changed, not the whole session: the
presence service (availability, priority), the router's features (roster
interest, per-session flags such as carbons) read a session, change their
own fields and write it back, from different processes and, on a router,
from a cached copy that may predate another process's write. Writing the
whole session would put the stale fields back (a carbons enable undoing the
initial presence that landed a moment before). So the registry remembers,
per session object it decoded, the form it was read in; :meth:`update`
merges the fields that differ from it into what Redis holds now, with a
compare-and-set that retries when someone wrote in between.
"""

from __future__ import annotations

import contextlib
import dataclasses
import time
from typing import Any

from ..core.routing import Session
from ..xmpp.jid import JID
from . import codec

_ADD = """
local old = redis.call('HGET', KEYS[1], ARGV[1])
redis.call('HSET', KEYS[1], ARGV[1], ARGV[2])
redis.call('SADD', ARGV[4] .. 'n:' .. ARGV[5], ARGV[3])
if old then
  local d = cjson.decode(old)
  if d['node'] ~= ARGV[5] then redis.call('SREM', ARGV[4] .. 'n:' .. d['node'], ARGV[3]) end
else
  redis.call('INCR', KEYS[2])
  if redis.call('HLEN', KEYS[1]) == 1 then redis.call('INCR', KEYS[3]) end
end
return old
"""

_REMOVE = """
local cur = redis.call('HGET', KEYS[1], ARGV[1])
if not cur then return false end
local d = cjson.decode(cur)
if ARGV[2] ~= '' and d['sid'] ~= ARGV[2] then return false end
redis.call('HDEL', KEYS[1], ARGV[1])
redis.call('SREM', ARGV[4] .. 'n:' .. d['node'], ARGV[3])
redis.call('DECR', KEYS[2])
if redis.call('HLEN', KEYS[1]) == 0 then redis.call('DECR', KEYS[3]) end
return cur
"""

_UPDATE = """
local cur = redis.call('HGET', KEYS[1], ARGV[1])
if not cur then return 0 end
local d = cjson.decode(cur)
if d['sid'] ~= ARGV[2] then return 0 end
redis.call('HSET', KEYS[1], ARGV[1], ARGV[3])
return 1
"""

# compare-and-set: written (1) only if the entry is still exactly ARGV[2];
# otherwise what is there now (to merge into and try again), false if gone
_CAS = """
local cur = redis.call('HGET', KEYS[1], ARGV[1])
if not cur then return false end
if cur ~= ARGV[2] then return cur end
redis.call('HSET', KEYS[1], ARGV[1], ARGV[3])
return 1
"""

_FIELDS = tuple(f.name for f in dataclasses.fields(Session))
#: session objects whose read form is remembered for :meth:`RedisRegistry.update`;
#: past it the oldest are forgotten (their update writes the whole session)
_MAX_READ = 10_000
#: compare-and-set attempts before an update gives up on merging
_CAS_TRIES = 8


class RedisRegistry:
    consistent_reads = False

    def __init__(self, redis: Any, prefix: str, metrics: Any = None) -> None:
        self.redis = redis
        self.metrics = metrics
        self.p = prefix if prefix.endswith(":") else prefix + ":"
        self._add = redis.register_script(_ADD)
        self._remove = redis.register_script(_REMOVE)
        self._update = redis.register_script(_UPDATE)
        self._cas = redis.register_script(_CAS)
        # id(session) -> (the session, its JSON when last synced with Redis
        # (what its caller's changes are measured against), the JSON Redis
        # held then). The session is held too, so its id is not reused while
        # the entry lives.
        self._read: dict[int, tuple[Session, bytes, bytes]] = {}
        self._count_key = self.p + "count"
        self._users_key = self.p + "users"
        # bare JID -> its sessions, kept while an event bus tells of changes
        self._cache: dict[JID, list[Session]] = {}
        self._bus: Any = None  # attached: changes are announced and lookups cached
        self._cache_gets = False

    def attach_bus(self, bus: Any, cache_gets: bool = True) -> None:
        """Announce every change on ``bus``, and cache lookups, each entry
        dropped when a change anywhere is announced. A stanza routed in the
        moment between a change and its announcement may see the old
        sessions: a delivery to a session that is gone fails at its edge and
        falls back (other resources, offline storage), so nothing is lost;
        a session or user the cache has none of is looked up again in Redis.

        ``cache_gets=False``: :meth:`get` of one full JID always reads Redis.
        The presence service reads a session, changes it and writes it back
        (the write is refused if the stream id differs), so it must not start
        from a cached copy of an older session."""
        self._bus = bus
        self._cache_gets = cache_gets
        bus.on("sess", self._on_change)

    def _on_change(self, ev: dict[str, Any]) -> None:
        if ev.get("jid") == "*":
            self._cache.clear()
        else:
            self._cache.pop(JID.parse(ev["jid"]), None)

    async def _changed(self, bare: JID) -> None:
        self._cache.pop(bare, None)
        if self._bus is not None:
            await self._bus.publish("sess", jid=str(bare))

    def _timed(self, op: str) -> Any:
        m = self.metrics
        if m is None:
            return contextlib.nullcontext()
        return m.redis_latency.labels(op).time()

    async def ping(self) -> bool:
        with self._timed("ping"):
            return bool(await self.redis.ping())

    async def lease(self, name: str, holder: str, ttl: float) -> bool:
        """Hold ``name`` for ``ttl`` seconds; True while ``holder`` has it."""
        key = self.p + "lease:" + name
        with self._timed("lease"):
            if await self.redis.set(key, holder, nx=True, px=int(ttl * 1000)):
                return True
            cur = await self.redis.get(key)
            if cur is not None and (cur.decode() if isinstance(cur, bytes) else cur) == holder:
                await self.redis.pexpire(key, int(ttl * 1000))
                return True
            return False

    def _hash(self, bare: JID) -> str:
        return f"{self.p}s:{bare}"

    async def add(self, s: Session) -> Session | None:
        assert s.jid.resource is not None
        with self._timed("add"):
            old = await self._add(
                keys=[self._hash(s.jid.bare), self._count_key, self._users_key],
                args=[s.jid.resource, codec.dumps(s), str(s.jid), self.p, s.node],
            )
        await self._changed(s.jid.bare)
        return codec.loads(old) if old else None

    async def remove(self, jid: JID, sid: str | None = None) -> Session | None:
        if jid.resource is None:
            return None
        with self._timed("remove"):
            cur = await self._remove(
                keys=[self._hash(jid.bare), self._count_key, self._users_key],
                args=[jid.resource, sid or "", str(jid), self.p],
            )
        if cur:
            await self._changed(jid.bare)
        return codec.loads(cur) if cur else None

    def _decoded(self, raw: bytes) -> Session:
        """A session read from Redis, remembered for :meth:`update`."""
        s: Session = codec.loads(raw)
        self._remember(s, raw, raw)
        return s

    def _remember(self, s: Session, synced: bytes, stored: bytes) -> None:
        read = self._read
        read.pop(id(s), None)
        if len(read) >= _MAX_READ:
            del read[next(iter(read))]  # the oldest: dicts keep insertion order
        read[id(s)] = (s, synced, stored)

    async def update(self, s: Session, broadcast: bool = False) -> None:
        # broadcast_seq is not kept: each process reads through a cache that
        # the event bus refreshes a moment after a write, so consistent_reads
        # is False and the presence service does not use it
        assert s.jid.resource is not None
        key, res = self._hash(s.jid.bare), s.jid.resource
        known = self._read.get(id(s))
        if known is None or known[0] is not s:
            # not read here (made by the caller, or forgotten): all of it
            with self._timed("update"):
                await self._update(keys=[key], args=[res, s.sid, codec.dumps(s)])
            await self._changed(s.jid.bare)
            return
        _, synced, stored = known
        base: Session = codec.loads(synced)
        changed = {f: getattr(s, f) for f in _FIELDS if getattr(s, f) != getattr(base, f)}
        if not changed:
            return
        with self._timed("update"):
            for _ in range(_CAS_TRIES):
                cur: Session = codec.loads(stored)
                if cur.sid != s.sid:
                    return  # replaced by a newer stream: not this caller's session
                for name, value in changed.items():
                    setattr(cur, name, value)
                new = codec.dumps(cur)
                got = await self._cas(keys=[key], args=[res, stored, new])
                if got == 1:
                    self._remember(s, codec.dumps(s), new)
                    break
                if not got:
                    self._read.pop(id(s), None)
                    return  # the session is gone
                stored = got if isinstance(got, bytes) else str(got).encode()
            else:
                # written over again and again meanwhile: this caller's
                # fields win, as they did before updates were merged
                await self._update(keys=[key], args=[res, s.sid, new])
                self._remember(s, codec.dumps(s), new)
        await self._changed(s.jid.bare)

    async def get(self, jid: JID) -> Session | None:
        if jid.resource is None:
            return None
        if self._cache_gets:
            # One HGETALL fills the cache for every resource of the user: the
            # profile had a Redis round trip per message to a full JID
            # dominating the router (41 % of its time) while only bare-JID
            # lookups were cached. A miss is asked again: another process's
            # bind reaches this cache a moment later, over the event bus, and
            # until then "no such session" would be wrong.
            cached = self._cache.get(jid.bare)
            if cached is not None:
                found = next((s for s in cached if s.jid == jid), None)
                if found is not None:
                    return found
            return next((s for s in await self._load(jid.bare) if s.jid == jid), None)
        with self._timed("get"):
            raw = await self.redis.hget(self._hash(jid.bare), jid.resource)
        return self._decoded(raw) if raw else None

    async def resources(self, bare: JID) -> list[Session]:
        cached = self._cache.get(bare)
        if not cached:  # none cached, or "none bound" that a bind may have ended
            cached = await self._load(bare)
        return list(cached)

    async def _load(self, bare: JID) -> list[Session]:
        with self._timed("resources"):
            raw = await self.redis.hgetall(self._hash(bare))
        sessions = [self._decoded(v) for v in raw.values()]
        if self._bus is not None:
            if len(self._cache) > 100_000:
                self._cache.clear()
            self._cache[bare] = sessions
        return sessions

    async def all(self) -> list[Session]:
        out: list[Session] = []
        async for key in self.redis.scan_iter(match=self.p + "s:*", count=500):
            out.extend(codec.loads(v) for v in (await self.redis.hgetall(key)).values())
        return out

    async def count(self) -> int:
        return int(await self.redis.get(self._count_key) or 0)

    async def online_users(self) -> int:
        return int(await self.redis.get(self._users_key) or 0)

    # ---- edge membership --------------------------------------------------

    async def edge_alive(self, node: str, address: str, ttl: float) -> None:
        pipe = self.redis.pipeline(transaction=False)
        pipe.hset(self.p + "edges", node, address)
        pipe.set(self.p + "hb:" + node, str(time.time()), px=int(ttl * 1000))
        await pipe.execute()

    async def edge_gone(self, node: str) -> None:
        pipe = self.redis.pipeline(transaction=False)
        pipe.hdel(self.p + "edges", node)
        pipe.delete(self.p + "hb:" + node)
        await pipe.execute()

    async def edges(self) -> dict[str, tuple[str, bool]]:
        """node -> (address, heartbeat still fresh)."""
        members = await self.redis.hgetall(self.p + "edges")
        if not members:
            return {}
        nodes = [n.decode() if isinstance(n, bytes) else n for n in members]
        pipe = self.redis.pipeline(transaction=False)
        for n in nodes:
            pipe.exists(self.p + "hb:" + n)
        alive = await pipe.execute()
        out = {}
        for n, a in zip(nodes, alive, strict=True):
            addr = members[n.encode()] if n.encode() in members else members[n]
            out[n] = (addr.decode() if isinstance(addr, bytes) else addr, bool(a))
        return out

    async def node_sessions(self, node: str) -> list[JID]:
        return [
            JID.parse(j.decode() if isinstance(j, bytes) else j)
            for j in await self.redis.smembers(self.p + "n:" + node)
        ]

    async def claim_reap(self, node: str, ttl: float = 30.0) -> bool:
        """Only one router replica reaps a dead edge."""
        return bool(await self.redis.set(self.p + "reap:" + node, "1", nx=True, px=int(ttl * 1000)))

    async def forget_node(self, node: str) -> None:
        pipe = self.redis.pipeline(transaction=False)
        pipe.hdel(self.p + "edges", node)
        pipe.delete(self.p + "n:" + node)
        await pipe.execute()
