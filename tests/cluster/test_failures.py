"""Node failure in a real cluster: kill -9 of an edge and of a router.

The figures (time until contacts see unavailable; sent/received/bounced
across a router crash) are printed so a CI log shows them.
"""

from __future__ import annotations

import asyncio
import time
import zlib

from .conftest import CLUSTER_MARKS, befriend

pytestmark = CLUSTER_MARKS


async def test_router_crash_loses_nothing_and_keeps_order(cluster, users, login):
    a, b = await users("alice", "bob")
    alice = await login(a, edge=0)
    bob = await login(b, edge=1)
    # the replica alice's edge sends her stanzas to
    victim = cluster.routers[zlib.crc32(a.encode()) % len(cluster.routers)]
    total, kill_at = 1500, 300
    for i in range(total):
        alice.send_message(mto=b, mbody=str(i), mtype="chat")
        if i == kill_at:
            victim.kill()
        if i % 50 == 0:
            await asyncio.sleep(0.02)
    received: list[int] = []
    bounced: list[int] = []

    async def drain(client, sink, pred, quiet: float) -> None:
        while True:
            try:
                m = await client.next_message(quiet)
            except TimeoutError:
                return
            if pred(m):
                sink.append(int(m["body"]))

    await asyncio.gather(
        drain(bob, received, lambda m: m["type"] != "error", 8.0),
        drain(alice, bounced, lambda m: m["type"] == "error", 8.0),
    )
    unique = list(dict.fromkeys(received))
    print(
        f"\nrouter kill -9: sent={total} received={len(received)} unique={len(unique)} "
        f"duplicates={len(received) - len(unique)} bounced={len(bounced)}"
    )
    assert victim.process is not None and victim.process.returncode == -9
    assert any("failing over" in line for line in cluster.edges[0].log), (
        "the edge never failed over"
    )
    assert set(unique) | set(bounced) == set(range(total)), "stanzas lost silently"
    assert unique == sorted(unique), "order broken"
    await victim.start(echo=False)
    await victim.wait_ready()


async def test_edge_crash_unavailable_and_offline(cluster, users, login):
    a, b = await users("alice", "bob")
    alice = await login(a, edge=0)
    bob = await login(b, edge=1)
    await befriend(alice, bob, a, b)
    await asyncio.sleep(0.3)
    edge2 = cluster.edges[1]
    t0 = time.monotonic()
    edge2.kill()
    p = await alice.next_presence(
        20, pred=lambda p: p["from"] == bob.boundjid and p["type"] == "unavailable"
    )
    took = time.monotonic() - t0
    print(f"\nedge kill -9: contacts saw unavailable after {took:.2f} s (node_ttl 3 s)")
    assert p is not None and took < 15
    # messages to the user of the dead edge now go to offline storage
    alice.send_message(mto=b, mbody="after the crash", mtype="chat")
    await asyncio.sleep(0.5)
    bob_again = await login(b, edge=0)
    m = await bob_again.next_message(10)
    assert m["body"] == "after the crash"
    await edge2.start(echo=False)
    await edge2.wait_ready()
