"""Offline messages are read, delivered, then deleted by id (issue 9, defect 7).

A flush that stops half-way (the session went away, the link to the edge
broke) leaves every undelivered message stored, in its original place in the
order, ahead of what arrived meanwhile.
"""

from __future__ import annotations

import time

import pytest
from lxml import etree

from services.features import offline
from services.xmpp.jid import JID
from tests.presence.conftest import HOST, World


def message(i: int | str) -> bytes:
    return (
        f"<message xmlns='jabber:client' to='alice@{HOST}' id='m{i}'><body>{i}</body></message>"
    ).encode()


async def stored_ids(world: World) -> list[str | None]:
    """The stanza ids of alice's stored messages, in delivery order."""
    return [
        etree.fromstring(m.stanza).get("id") for m in await world.store.fetch_offline(HOST, "alice")
    ]


async def test_undelivered_messages_keep_their_place(world: World) -> None:
    alice = await world.account("alice")
    for i in range(5):
        await world.store.store_offline(HOST, "alice", message(i), time.time(), f"key{i}")
    a = await world.bind(f"{alice}/pc")
    delivered: list[bytes] = []

    async def deliver(jid: JID, data: bytes) -> bool:
        if len(delivered) == 2:
            # the session went away; a message for alice arrives meanwhile
            await world.store.store_offline(HOST, "alice", message("late"), time.time(), "late")
            return False
        delivered.append(data)
        return True

    world.edge.deliver = deliver  # type: ignore[method-assign]
    n = await offline.flush(world.router, a)
    assert await stored_ids(world) == ["m2", "m3", "m4", "mlate"]
    assert [etree.fromstring(d).get("id") for d in delivered] == ["m0", "m1"]
    assert n == 2


async def test_a_broken_delivery_loses_nothing(world: World) -> None:
    alice = await world.account("alice")
    for i in range(4):
        await world.store.store_offline(HOST, "alice", message(i), time.time(), f"key{i}")
    a = await world.bind(f"{alice}/pc")
    delivered = 0

    async def deliver(jid: JID, data: bytes) -> bool:
        nonlocal delivered
        if delivered == 1:
            raise ConnectionError("the edge's stream broke")
        delivered += 1
        return True

    world.edge.deliver = deliver  # type: ignore[method-assign]
    with pytest.raises(ConnectionError):
        await offline.flush(world.router, a)
    assert await stored_ids(world) == ["m1", "m2", "m3"]

    # the next flush delivers the rest, in order, and empties the store
    got: list[bytes] = []

    async def works(jid: JID, data: bytes) -> bool:
        got.append(data)
        return True

    world.edge.deliver = works  # type: ignore[method-assign]
    assert await offline.flush(world.router, a) == 3
    assert [etree.fromstring(d).get("id") for d in got] == ["m1", "m2", "m3"]
    assert await world.store.count_offline(HOST, "alice") == 0
