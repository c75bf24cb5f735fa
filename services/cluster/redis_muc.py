"""Where group chat rooms live in a cluster of muc replicas (Redis).

* Membership: each muc replica keeps ``P:muc:nodes`` (node -> gRPC address)
  and a heartbeat ``P:muc:hb:<node>`` that expires after ``node_ttl``.
* Preference: callers send a room's stanzas to the live replicas in
  rendezvous-hash order (:func:`rendezvous`): every caller agrees on the
  first choice while they see the same replicas, and when one dies only its
  rooms move.
* Ownership: the replica that holds a room in memory holds its lease
  ``P:muc:room:<room>`` (renewed while it holds the room). A replica asked
  about a room whose lease another live replica holds forwards the stanza
  there instead of taking the room, so two replicas never own one room,
  even while callers disagree about who is alive. A lease whose holder's
  heartbeat is gone can be taken at once: the room comes back on the next
  replica within ``node_ttl``.
* Images (:class:`RedisRoomMemory`): what the holder of a room has in memory
  and storage does not keep, written before the room's answers go out:
  ``P:muc:occ:<room>`` (nick -> occupant), and for a temporary room
  ``P:muc:tmp:<room>`` (its state) and ``P:muc:hist:<room>`` (its history).
  The replica that takes a room over reads them, so occupants stay in the
  room without joining again. They expire ``image_ttl`` after the last write
  or renewal, so a cluster stopped as a whole does not bring back ghosts
  days later.
"""

from __future__ import annotations

import hashlib
import secrets
import time
from typing import TYPE_CHECKING, Any

from ..core.muc import RoomChanges, RoomImage
from ..xmpp.jid import JID

if TYPE_CHECKING:
    from ..core.muc import Muc
    from .rpc import Channels

__all__ = ["MucDirectory", "RedisOwnership", "RedisRoomMemory", "rendezvous", "shared_secret"]

#: take the lease if it is free, ours, or held by a replica whose heartbeat is gone
_CLAIM = """
local cur = redis.call('GET', KEYS[1])
if (not cur) or cur == ARGV[1] or redis.call('EXISTS', ARGV[3] .. cur) == 0 then
  redis.call('SET', KEYS[1], ARGV[1], 'PX', ARGV[2])
  return ARGV[1]
end
return cur
"""

#: extend the leases we hold; report the rooms whose lease is not ours any more
_RENEW = """
local lost = {}
for i, key in ipairs(KEYS) do
  local cur = redis.call('GET', key)
  if cur == ARGV[1] then
    redis.call('PEXPIRE', key, ARGV[2])
  elseif not cur then
    redis.call('SET', key, ARGV[1], 'PX', ARGV[2])
  else
    table.insert(lost, i)
  end
end
return lost
"""

_RELEASE = """
if redis.call('GET', KEYS[1]) == ARGV[1] then
  return redis.call('DEL', KEYS[1])
end
return 0
"""


def rendezvous(room: str, nodes: list[str]) -> list[str]:
    """``nodes`` in the order a room's stanzas should try them."""
    return sorted(
        nodes,
        key=lambda n: hashlib.blake2b(f"{room}\0{n}".encode(), digest_size=8).digest(),
        reverse=True,
    )


def _s(v: Any) -> str:
    return v.decode() if isinstance(v, bytes) else str(v)


class MucDirectory:
    """The live muc replicas and the room leases, in Redis."""

    def __init__(
        self, redis: Any, prefix: str, ttl: float = 10.0, refresh: float = 1.0, kind: str = "muc"
    ) -> None:
        self.redis = redis
        #: the same scheme serves each role whose state is held by one
        #: replica at a time (``muc``: rooms; ``pubsub``: nodes and PEP services)
        self.p = f"{prefix}{kind}:"
        self.ttl_ms = int(ttl * 1000)
        self._refresh = refresh
        self._members: dict[str, str] = {}
        self._read = float("-inf")
        self._claim = redis.register_script(_CLAIM)
        self._renew = redis.register_script(_RENEW)
        self._release = redis.register_script(_RELEASE)

    # ---- membership -------------------------------------------------------------------

    async def alive(self, node: str, address: str) -> None:
        pipe = self.redis.pipeline(transaction=False)
        pipe.hset(self.p + "nodes", node, address)
        pipe.set(self.p + "hb:" + node, str(time.time()), px=self.ttl_ms)
        await pipe.execute()

    async def gone(self, node: str) -> None:
        pipe = self.redis.pipeline(transaction=False)
        pipe.hdel(self.p + "nodes", node)
        pipe.delete(self.p + "hb:" + node)
        await pipe.execute()

    async def members(self) -> dict[str, str]:
        """node -> address of the replicas whose heartbeat is fresh (read at
        most once per ``refresh`` seconds)."""
        now = time.monotonic()
        if now - self._read < self._refresh:
            return self._members
        members = await self.redis.hgetall(self.p + "nodes")
        nodes = {_s(k): _s(v) for k, v in members.items()}
        pipe = self.redis.pipeline(transaction=False)
        for n in nodes:
            pipe.exists(self.p + "hb:" + n)
        fresh = await pipe.execute() if nodes else []
        self._members = {n: a for (n, a), ok in zip(nodes.items(), fresh, strict=True) if ok}
        self._read = now
        return self._members

    async def order(self, room: str) -> list[str]:
        """The addresses to try for ``room``, best first."""
        members = await self.members()
        return [members[n] for n in rendezvous(room, list(members))]

    # ---- room leases --------------------------------------------------------------------

    async def claim(self, room: str, node: str) -> str:
        """Take or keep ``room``'s lease; the holder afterwards (``node`` if we have it)."""
        holder = await self._claim(
            keys=[self.p + "room:" + room], args=[node, self.ttl_ms, self.p + "hb:"]
        )
        return _s(holder)

    async def renew(self, rooms: list[str], node: str) -> list[str]:
        """Extend our leases of ``rooms``; the rooms another replica holds now."""
        if not rooms:
            return []
        lost = await self._renew(
            keys=[self.p + "room:" + r for r in rooms], args=[node, self.ttl_ms]
        )
        return [rooms[int(i) - 1] for i in lost]

    async def release(self, room: str, node: str) -> None:
        await self._release(keys=[self.p + "room:" + room], args=[node])

    async def holder(self, room: str) -> str | None:
        v = await self.redis.get(self.p + "room:" + room)
        return None if v is None else _s(v)

    async def address(self, node: str) -> str | None:
        v = await self.redis.hget(self.p + "nodes", node)
        return None if v is None else _s(v)


class RedisOwnership:
    """:class:`~services.core.muc.RoomOwnership` by leases in Redis
    (:class:`~services.cluster.leases.Leases` keyed by room JID); the
    replicas holding other rooms are reached over gRPC."""

    def __init__(self, directory: MucDirectory, node: str, channels: Channels) -> None:
        from .leases import Leases
        from .muc_rpc import MucClient

        self.leases: Leases[Muc] = Leases(directory, node, channels, MucClient)

    async def elsewhere(self, room: JID) -> Muc | None:
        return await self.leases.elsewhere(str(room))

    async def renew(self, rooms: list[JID]) -> list[JID]:
        lost = set(await self.leases.renew([str(r) for r in rooms]))
        return [r for r in rooms if str(r) in lost]

    async def release(self, room: JID) -> None:
        await self.leases.release(str(room))


class RedisRoomMemory:
    """:class:`~services.core.muc.RoomMemory` in Redis: one pipelined round
    trip per write."""

    def __init__(self, redis: Any, prefix: str, image_ttl: float = 86400.0) -> None:
        self.redis = redis
        self.p = prefix + "muc:"
        self.ttl_ms = int(image_ttl * 1000)

    def _keys(self, room: JID) -> tuple[str, str, str]:
        r = str(room)
        return self.p + "occ:" + r, self.p + "tmp:" + r, self.p + "hist:" + r

    def _list(self, domain: str) -> str:
        return self.p + "list:" + domain

    async def write(self, room: JID, changes: RoomChanges) -> None:
        occ, tmp, hist = self._keys(room)
        pipe = self.redis.pipeline(transaction=True)
        if changes.occupants:
            pipe.hset(occ, mapping=changes.occupants)
            pipe.pexpire(occ, self.ttl_ms)
        if changes.left:
            pipe.hdel(occ, *changes.left)
        if changes.persistent:
            pipe.delete(tmp, hist)
        if changes.listing:
            pipe.hset(self._list(room.domain), str(room), changes.listing)
        elif changes.listing is not None:
            pipe.hdel(self._list(room.domain), str(room))
        if changes.state is not None:
            pipe.set(tmp, changes.state, px=self.ttl_ms)
        if changes.history and changes.keep > 0:
            pipe.rpush(hist, *changes.history)
            pipe.ltrim(hist, -changes.keep, -1)
            pipe.pexpire(hist, self.ttl_ms)
        elif changes.history:
            pipe.delete(hist)  # the room keeps no history
        await pipe.execute()

    async def read(self, room: JID) -> RoomImage | None:
        occ, tmp, hist = self._keys(room)
        pipe = self.redis.pipeline(transaction=True)
        pipe.hgetall(occ)
        pipe.get(tmp)
        pipe.lrange(hist, 0, -1)
        occupants, state, history = await pipe.execute()
        if not occupants and state is None:
            return None
        return RoomImage(
            occupants={_s(k): bytes(v) for k, v in occupants.items()},
            state=None if state is None else bytes(state),
            history=[bytes(h) for h in history],
        )

    async def drop(self, room: JID) -> None:
        pipe = self.redis.pipeline(transaction=True)
        pipe.delete(*self._keys(room))
        pipe.hdel(self._list(room.domain), str(room))
        await pipe.execute()

    async def listed(self, domain: str) -> dict[str, str]:
        rooms = await self.redis.hgetall(self._list(domain))
        return {_s(k): _s(v) for k, v in rooms.items()}

    async def touch(self, rooms: list[JID]) -> None:
        if not rooms:
            return
        pipe = self.redis.pipeline(transaction=False)
        for room in rooms:
            for key in self._keys(room):
                pipe.pexpire(key, self.ttl_ms)
        await pipe.execute()


async def shared_secret(redis: Any, prefix: str) -> bytes:
    """The key of XEP-0421 occupant ids, the same on every muc replica, so an
    occupant keeps its id when its room moves."""
    key = prefix + "muc:secret"
    await redis.set(key, secrets.token_hex(16), nx=True)
    v = await redis.get(key)
    return bytes.fromhex(_s(v))
