"""Room ownership among muc replicas, against the real Redis: membership
with heartbeats, rendezvous order, and leases that a live holder keeps and a
dead one loses."""

from __future__ import annotations

import asyncio
import collections

from services.cluster.redis_muc import MucDirectory, rendezvous


def test_rendezvous_is_stable_and_moves_only_the_dead_nodes_rooms() -> None:
    nodes = ["muc1", "muc2", "muc3"]
    rooms = [f"room{i}@conference.localhost" for i in range(300)]
    first = {r: rendezvous(r, nodes)[0] for r in rooms}
    assert first == {r: rendezvous(r, list(reversed(nodes)))[0] for r in rooms}
    spread = collections.Counter(first.values())
    assert min(spread.values()) > 60, spread  # about a third each
    after = {r: rendezvous(r, ["muc1", "muc3"])[0] for r in rooms}
    moved = {r for r in rooms if after[r] != first[r]}
    assert moved == {r for r in rooms if first[r] == "muc2"}


async def test_membership_follows_heartbeats(redis) -> None:
    r, prefix = redis
    d = MucDirectory(r, prefix, ttl=0.5, refresh=0.0)
    await d.alive("muc1", "10.0.0.1:50055")
    await d.alive("muc2", "10.0.0.2:50055")
    assert await d.members() == {"muc1": "10.0.0.1:50055", "muc2": "10.0.0.2:50055"}
    order = await d.order("lobby@conference.localhost")
    assert sorted(order) == ["10.0.0.1:50055", "10.0.0.2:50055"]
    await d.gone("muc2")
    assert await d.members() == {"muc1": "10.0.0.1:50055"}
    await asyncio.sleep(0.7)  # muc1's heartbeat expires
    assert await d.members() == {}


async def test_leases(redis) -> None:
    r, prefix = redis
    d = MucDirectory(r, prefix, ttl=0.6, refresh=0.0)
    room = "lobby@conference.localhost"
    await d.alive("muc1", "a:1")
    await d.alive("muc2", "b:2")
    assert await d.claim(room, "muc1") == "muc1"
    assert await d.claim(room, "muc2") == "muc1"  # a live holder keeps it
    assert await d.claim(room, "muc1") == "muc1"  # and may claim it again
    assert await d.renew([room, "other@conference.localhost"], "muc2") == [room]
    assert await d.holder("other@conference.localhost") == "muc2"  # free: renewing took it
    await d.release(room, "muc2")  # not muc2's: nothing happens
    assert await d.holder(room) == "muc1"
    # muc1 dies: its heartbeat expires while muc2 keeps beating
    for _ in range(3):
        await asyncio.sleep(0.25)
        await d.alive("muc2", "b:2")
    assert await d.claim(room, "muc2") == "muc2"
    assert await d.address("muc2") == "b:2"
    await d.release(room, "muc2")
    assert await d.holder(room) is None
    # a lease still running whose holder's heartbeat is gone is taken at once
    await r.set(f"{prefix}muc:room:{room}", "muc1", px=60_000)
    await r.delete(f"{prefix}muc:hb:muc1")
    assert await d.claim(room, "muc2") == "muc2"


async def test_room_images(redis) -> None:
    """A room's image: occupants set and removed, a temporary room's state
    and bounded history, dropped when the room ends, given up when it
    becomes persistent (storage has it then)."""
    from services.cluster.redis_muc import RedisRoomMemory, shared_secret
    from services.core.muc import RoomChanges
    from services.xmpp.jid import JID

    r, prefix = redis
    m = RedisRoomMemory(r, prefix, image_ttl=60)
    room = JID.parse("lobby@conference.localhost")
    assert await m.read(room) is None
    await m.write(
        room,
        RoomChanges(
            occupants={"a": b"A", "b": b"B"}, state=b"S", history=[b"1", b"2", b"3"], keep=2
        ),
    )
    await m.write(room, RoomChanges(left=["a"], occupants={"c": b"C"}, history=[b"4"], keep=2))
    image = await m.read(room)
    assert image is not None
    assert image.occupants == {"b": b"B", "c": b"C"}
    assert image.state == b"S"
    assert image.history == [b"3", b"4"]
    assert 0 < await r.pttl(f"{prefix}muc:occ:{room}") <= 60_000
    await m.write(room, RoomChanges(persistent=True))
    image = await m.read(room)
    assert image is not None and image.state is None and image.history == []
    await m.drop(room)
    assert await m.read(room) is None
    assert await r.keys(f"{prefix}muc:*{room}") == []
    # every replica derives the same occupant ids
    assert await shared_secret(r, prefix) == await shared_secret(r, prefix)
    assert len(await shared_secret(r, prefix)) == 16
