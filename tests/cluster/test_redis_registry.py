"""The Redis session registry against the machine's real Redis, each test under
its own key prefix (removed afterwards). Not marked slow: no processes start."""

from __future__ import annotations

import asyncio
from typing import Any

from services.cluster.events import EventBus
from services.cluster.redis_registry import RedisRegistry
from services.core.routing import Session
from services.xmpp.jid import JID


class CountingRedis:
    """The real client, counting the commands that reach Redis."""

    def __init__(self, r: Any) -> None:
        self._r = r
        self.calls: list[str] = []

    def __getattr__(self, name: str) -> Any:
        attr = getattr(self._r, name)
        if name in ("hget", "hgetall", "get"):

            async def counted(*a: Any, **kw: Any) -> Any:
                self.calls.append(name)
                return await attr(*a, **kw)

            return counted
        return attr


def _session(jid: str, node: str = "edge1", sid: str = "s1") -> Session:
    return Session(jid=JID.parse(jid), node=node, sid=sid, available=True)


async def _wait(pred: Any, timeout: float = 3.0) -> None:
    deadline = asyncio.get_running_loop().time() + timeout
    while not pred():
        assert asyncio.get_running_loop().time() < deadline, "condition not reached"
        await asyncio.sleep(0.01)


async def test_online_users_counts_bare_jids(redis: tuple[Any, str]) -> None:
    r, prefix = redis
    reg = RedisRegistry(r, prefix)
    await reg.add(_session("a@localhost/one"))
    await reg.add(_session("a@localhost/two"))
    await reg.add(_session("b@localhost/one"))
    await reg.add(_session("b@localhost/one", sid="s2"))  # a replacement: no new user
    assert await reg.count() == 3
    assert await reg.online_users() == 2
    await reg.remove(JID.parse("a@localhost/one"))
    assert await reg.online_users() == 2
    await reg.remove(JID.parse("a@localhost/two"), sid="other")  # not that stream: kept
    assert await reg.online_users() == 2
    await reg.remove(JID.parse("a@localhost/two"))
    await reg.remove(JID.parse("a@localhost/two"))  # twice: no double decrement
    assert await reg.online_users() == 1
    assert await reg.count() == 1
    await reg.remove(JID.parse("b@localhost/one"))
    assert (await reg.online_users(), await reg.count()) == (0, 0)


async def test_full_jid_lookups_hit_redis_once_per_user(redis: tuple[Any, str]) -> None:
    """Routing to a full JID used to cost a Redis round trip per stanza."""
    r, prefix = redis
    counting = CountingRedis(r)
    bus = EventBus(r, prefix, "router-a")
    reg = RedisRegistry(counting, prefix)
    reg.attach_bus(bus)
    await bus.start()
    other_bus = EventBus(r, prefix, "router-b")
    other = RedisRegistry(r, prefix)
    other.attach_bus(other_bus)
    try:
        await other.add(_session("c@localhost/phone"))
        await other.add(_session("c@localhost/desk", node="edge2"))
        for _ in range(50):
            s = await reg.get(JID.parse("c@localhost/desk"))
            assert s is not None and s.node == "edge2"
        assert len(await reg.resources(JID.parse("c@localhost"))) == 2
        assert counting.calls == ["hgetall"]
        # not in the cache: asked again, since a bind elsewhere may be on its way
        assert await reg.get(JID.parse("c@localhost/gone")) is None
        assert counting.calls == ["hgetall"] * 2

        # a change made by another process drops the entry here
        await other.remove(JID.parse("c@localhost/desk"))
        await _wait(lambda: JID.parse("c@localhost") not in reg._cache)
        assert (await reg.get(JID.parse("c@localhost/phone"))) is not None
        assert (await reg.get(JID.parse("c@localhost/phone"))) is not None
        assert counting.calls == ["hgetall"] * 3
    finally:
        await bus.stop()


async def test_a_bind_elsewhere_is_seen_before_its_announcement(redis: tuple[Any, str]) -> None:
    """The presence storm once lost two logins' presence: the presence process
    had "no sessions" cached for a user whose bind a router had just written,
    and the gRPC call about the user's presence overtook the event."""
    r, prefix = redis
    reg = RedisRegistry(r, prefix)
    reg.attach_bus(EventBus(r, prefix, "slow"))  # never started: no event arrives
    other = RedisRegistry(r, prefix)
    assert await reg.resources(JID.parse("e@localhost")) == []  # "none" cached
    assert await reg.get(JID.parse("e@localhost/x")) is None
    await other.add(_session("e@localhost/x"))
    got = await reg.get(JID.parse("e@localhost/x"))
    assert got is not None and got.node == "edge1"
    assert [s.jid for s in await reg.resources(JID.parse("e@localhost"))] == [got.jid]


async def test_fresh_gets_for_the_presence_service(redis: tuple[Any, str]) -> None:
    r, prefix = redis
    heard: list[str] = []
    listener = EventBus(r, prefix, "listener")
    listener.on("sess", lambda ev: heard.append(ev["jid"]))
    await listener.start()
    counting = CountingRedis(r)
    reg = RedisRegistry(counting, prefix)
    reg.attach_bus(EventBus(r, prefix, "presence"), cache_gets=False)
    try:
        s = _session("f@localhost/x")
        await reg.add(s)
        await reg.get(s.jid)
        await reg.get(s.jid)
        assert counting.calls == ["hget", "hget"]  # never a cached copy
        await reg.resources(s.jid.bare)
        await reg.resources(s.jid.bare)
        assert counting.calls == ["hget", "hget", "hgetall"]  # user lookups are cached
        await reg.update(s)
        await _wait(lambda: heard.count("f@localhost") == 2)  # add and update
    finally:
        await listener.stop()


async def test_without_a_bus_nothing_is_cached(redis: tuple[Any, str]) -> None:
    """No invalidation, no cache: every lookup asks Redis."""
    r, prefix = redis
    counting = CountingRedis(r)
    reg = RedisRegistry(counting, prefix)
    await reg.add(_session("d@localhost/x"))
    assert await reg.get(JID.parse("d@localhost/x")) is not None
    await reg.remove(JID.parse("d@localhost/x"))
    assert await reg.get(JID.parse("d@localhost/x")) is None
    assert counting.calls == ["hget", "hget"]
