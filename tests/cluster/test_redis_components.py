"""The Redis component directory (XEP-0114) against the machine's real Redis,
under a key prefix of the test's own. Not marked slow: no processes start."""

from __future__ import annotations

from services.cluster.redis_components import RedisComponents
from services.router.domains import ComponentDirectory, LocalComponents


async def test_claim_where_release(redis):
    r, prefix = redis
    d: ComponentDirectory = RedisComponents(r, prefix)
    assert await d.where("bot.example") is None
    assert await d.claim("bot.example", "edge1")
    assert await d.where("bot.example") == "edge1"
    assert not await d.claim("bot.example", "edge2")  # connected elsewhere
    await d.release("bot.example", "edge2")  # not edge2's: stays
    assert await d.where("bot.example") == "edge1"
    await d.release("bot.example", "edge1")
    assert await d.where("bot.example") is None
    assert await d.claim("bot.example", "edge2")
    assert await d.where("bot.example") == "edge2"


async def test_same_node_may_claim_again(redis):
    """A claim left behind by an earlier run of the same edge (the edge checks
    its own connections before it asks)."""
    r, prefix = redis
    d = RedisComponents(r, prefix)
    assert await d.claim("bot.example", "edge1")
    assert await d.claim("bot.example", "edge1")


async def test_release_node_forgets_what_a_dead_edge_held(redis):
    r, prefix = redis
    d = RedisComponents(r, prefix)
    assert await d.claim("a.example", "edge1")
    assert await d.claim("b.example", "edge1")
    assert await d.claim("c.example", "edge2")
    # a.example moved to edge2 meanwhile (released, then claimed there)
    await d.release("a.example", "edge1")
    assert await d.claim("a.example", "edge2")
    assert sorted(await d.release_node("edge1")) == ["b.example"]
    assert await d.where("a.example") == "edge2"
    assert await d.where("b.example") is None
    assert await d.where("c.example") == "edge2"
    assert await d.release_node("edge1") == []
    assert not [k async for k in r.scan_iter(match=prefix + "cn:edge1")]


async def test_local_components_contract():
    d = LocalComponents()
    assert await d.claim("bot.example", "n")
    assert not await d.claim("bot.example", "n")
    await d.release("bot.example", "other")
    assert await d.where("bot.example") == "n"
    await d.release("bot.example", "n")
    assert await d.where("bot.example") is None
