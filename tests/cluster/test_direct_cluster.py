"""One-hop delivery on a real cluster: a message to a full JID on another edge
goes edge to edge, with no router on its way, and what the direct way cannot
settle still reaches a router (blocking, sessions that just left)."""

from __future__ import annotations

import asyncio

from prometheus_client.parser import text_string_to_metric_families

from ..conftest import wait_until
from ..e2e.test_prometheus import http_get
from .conftest import CLUSTER_MARKS, routed

pytestmark = CLUSTER_MARKS


async def sample(proc, name: str, **labels: str) -> float:
    status, body = await http_get(f"http://127.0.0.1:{proc.ops_port}/metrics")
    assert status == 200
    total = 0.0
    for fam in text_string_to_metric_families(body.decode()):
        for s in fam.samples:
            if s.name == name and all(s.labels.get(k) == v for k, v in labels.items()):
                total += s.value
    return total


async def routed_by_routers(cluster) -> float:
    return sum([await sample(r, "xmppd_routing_latency_seconds_count") for r in cluster.routers])


async def test_full_jid_messages_go_edge_to_edge(cluster, users, login):
    a, b = await users("alice", "bob")
    alice = await login(a, edge=0)
    bob = await login(b, edge=1)
    edge0 = cluster.edges[0]
    direct0 = await sample(edge0, "xmppd_direct_deliveries_total", outcome="success")
    via_routers = await routed_by_routers(cluster)
    alice.send_raw(
        "".join(
            f"<message to='{bob.boundjid}' type='chat'><body>{i}</body></message>"
            for i in range(300)
        )
    )
    got = [int((await bob.next_message(10))["body"]) for _ in range(300)]
    assert got == list(range(300))  # in order (RFC 6120 10.1)

    async def acknowledged() -> bool:  # the acknowledgements follow the deliveries
        return (
            await sample(edge0, "xmppd_direct_deliveries_total", outcome="success") >= direct0 + 300
        )

    await wait_until(acknowledged, timeout=15, what="300 direct deliveries acknowledged")
    assert await sample(edge0, "xmppd_direct_deliveries_total", outcome="success") == direct0 + 300
    assert await routed_by_routers(cluster) == via_routers  # no router saw them
    # a reply from the other edge to a full JID goes the same way
    bob.send_message(mto=str(alice.boundjid), mbody="back", mtype="chat")
    assert (await alice.next_message(10))["body"] == "back"


async def test_a_block_command_then_a_message_is_refused(cluster, users, login):
    """The block goes through a router; the message right behind it must not
    slip past on the direct way, with the old (empty) block list cached."""
    a, b = await users("alice", "bob")
    alice = await login(a, edge=0)
    bob = await login(b, edge=1)
    alice.send_message(mto=str(bob.boundjid), mbody="before", mtype="chat")
    assert (await bob.next_message(10))["body"] == "before"  # caches warm on edge 0
    errors: asyncio.Queue = asyncio.Queue()
    alice.add_event_handler("message_error", errors.put_nowait)
    alice.send_raw(
        "<iq type='set' id='blk1'><block xmlns='urn:xmpp:blocking'>"
        f"<item jid='{b}'/></block></iq>"
        f"<message to='{bob.boundjid}' type='chat' id='m1'><body>after</body></message>"
    )
    err = await asyncio.wait_for(errors.get(), 10)
    assert err["id"] == "m1" and err["error"]["condition"] == "not-acceptable"
    alice.send_message(mto=str(bob.boundjid), mbody="later", mtype="chat")
    err = await asyncio.wait_for(errors.get(), 10)
    assert err["error"]["condition"] == "not-acceptable"
    with_body = [m async for m in _drain(bob)]
    assert with_body == []


async def _drain(client, wait: float = 0.5):
    while True:
        try:
            m = await client.next_message(wait)
        except TimeoutError:
            return
        yield m["body"]


async def test_a_message_to_a_session_that_just_left_is_not_lost(cluster, users, login):
    a, b = await users("alice", "bob")
    alice = await login(a, edge=0)
    bob = await login(b, edge=1, resource="desk")
    full = str(bob.boundjid)
    alice.send_message(mto=full, mbody="warm", mtype="chat")
    assert (await bob.next_message(10))["body"] == "warm"
    bob.disconnect(wait=False)
    # sent while edge 0 may still hold bob's session in its cache: delivered
    # directly and refused by edge 1, or sent to a router at once; either way
    # a router stores it offline (RFC 6121 8.5.3.2.1: no such resource)
    for i in range(5):
        alice.send_message(mto=full, mbody=f"late {i}", mtype="chat")
        await asyncio.sleep(0.02)  # spread over the time edge 0 may hold the cached session
    await routed(alice)  # a router has handled all five (the failed direct ones included)
    again = await login(b, edge=1, resource="desk")
    bodies = [(await again.next_message(10))["body"] for _ in range(5)]
    assert bodies == [f"late {i}" for i in range(5)]
