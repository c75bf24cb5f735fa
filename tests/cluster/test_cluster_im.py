"""Two users on different edges of a real cluster."""

from __future__ import annotations

import asyncio

from .conftest import CLUSTER_MARKS, befriend, routed

pytestmark = CLUSTER_MARKS


async def test_messages_both_ways_across_edges(cluster, users, login):
    a, b = await users("alice", "bob")
    alice = await login(a, edge=0)
    bob = await login(b, edge=1)
    alice.send_message(mto=b, mbody="hi from edge1", mtype="chat")
    m = await bob.next_message(10)
    assert m["body"] == "hi from edge1" and m["from"].bare == a
    bob.send_message(mto=str(alice.boundjid), mbody="hi from edge2", mtype="chat")
    m = await alice.next_message(10)
    assert m["body"] == "hi from edge2"


async def test_order_kept_across_edges(cluster, users, login):
    a, b = await users("alice", "bob")
    alice = await login(a, edge=0)
    bob = await login(b, edge=1)
    alice.send_raw(
        "".join(f"<message to='{b}' type='chat'><body>{i}</body></message>" for i in range(500))
    )
    got = [int((await bob.next_message(10))["body"]) for _ in range(500)]
    assert got == list(range(500))


async def test_subscription_presence_and_roster_push_across_edges(cluster, users, login):
    a, b = await users("alice", "bob")
    alice = await login(a, edge=0)
    alice2 = await login(a, edge=1)
    bob = await login(b, edge=1)
    await alice2.get_roster()  # interested in pushes from now on
    pushed = asyncio.get_running_loop().create_future()
    alice2.add_event_handler("roster_update", lambda iq: pushed.done() or pushed.set_result(iq))
    await befriend(alice, bob, a, b)
    assert alice.client_roster[b]["subscription"] == "both"
    # the roster push reached alice's resource on the other edge
    iq = await asyncio.wait_for(pushed, 10)
    assert b in iq["roster"]["items"]
    bob.send_presence(pstatus="busy over here", pshow="dnd")
    for c in (alice, alice2):
        p = await c.next_presence(10, pred=lambda p: p["status"] == "busy over here")
        assert p["from"] == bob.boundjid


async def test_offline_storage_and_delivery_across_nodes(cluster, users, login):
    a, b = await users("alice", "bob")
    alice = await login(a, edge=0)
    alice.send_message(mto=b, mbody="kept for later", mtype="chat")
    await routed(alice)  # stored by now
    bob = await login(b, edge=1)
    m = await bob.next_message(10)
    assert m["body"] == "kept for later"
    assert m.xml.find("{urn:xmpp:delay}delay") is not None


async def test_resource_conflict_across_nodes(cluster, users, login):
    (a,) = await users("alice")
    first = await login(a, edge=0, resource="same")
    closed = asyncio.get_running_loop().create_future()
    first.add_event_handler("disconnected", lambda _e: closed.done() or closed.set_result(True))
    errors = []
    first.add_event_handler("stream_error", errors.append)
    second = await login(a, edge=1, resource="same")
    await asyncio.wait_for(closed, 10)
    assert errors and errors[0]["condition"] == "conflict"
    assert str(second.boundjid) == f"{a}/same"
    # the surviving session still receives
    (b,) = await users("bob")
    bob = await login(b, edge=0)
    bob.send_message(mto=f"{a}/same", mbody="to the new one", mtype="chat")
    assert (await second.next_message(10))["body"] == "to the new one"
