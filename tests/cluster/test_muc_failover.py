"""Group chat over two muc replicas: each room is held by one replica (a
lease in Redis). Stopping or killing (kill -9) the replica holding a busy
room brings the room back on the other one with its occupants (they do not
join again), and for a persistent room its configuration, affiliations and
every message the room had acknowledged (echoed) before the kill."""

from __future__ import annotations

import asyncio
import time
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import pytest
import pytest_asyncio
import redis.asyncio as aioredis
from slixmpp.exceptions import PresenceError
from slixmpp.xmlstream.handler import Callback
from slixmpp.xmlstream.matcher import MatchXPath

from services.app.local import LocalCluster
from services.cluster.redis_muc import rendezvous

from .conftest import CLUSTER_MARKS, running_cluster

pytestmark = CLUSTER_MARKS

OCCUPANTS = 50  # on two edges, as the issue asks
PLUGINS = ("xep_0030", "xep_0045", "xep_0004", "xep_0199")


@pytest_asyncio.fixture(scope="module", loop_scope="module")
async def cluster(tmp_path_factory: pytest.TempPathFactory) -> AsyncIterator[LocalCluster]:
    async with running_cluster(
        Path(tmp_path_factory.mktemp("muc")),
        mucs=2,
        extra_env={"XMPPD_MUC_MAX_HISTORY": "2000"},
    ) as c:
        yield c


async def _holder(cluster: LocalCluster, room: str) -> str:
    r = aioredis.from_url(cluster.redis_url)
    try:
        v = await r.get(f"{cluster.redis_prefix}muc:room:{room}")
    finally:
        await r.aclose()
    assert v is not None, "the room has no lease"
    return v.decode()


async def _join(c: Any, room: str, nick: str, timeout: float = 10) -> Any:
    return await c.plugin["xep_0045"].join_muc_wait(room, nick, maxstanzas=0, timeout=timeout)


async def test_rooms_spread_over_replicas(cluster: LocalCluster, users: Any, login: Any) -> None:
    """Each room is held by its first choice among the live replicas
    (rendezvous hashing), so rooms spread over both."""
    (a,) = await users("alice")
    alice = await login(a, plugins=PLUGINS)
    rooms = [f"spread{i}-{a.split('@')[0]}@conference.localhost" for i in range(8)]
    expected = {room: rendezvous(room, ["muc1", "muc2"])[0] for room in rooms}
    for room in rooms:
        await _join(alice, room, "alice")
    assert {room: await _holder(cluster, room) for room in rooms} == expected


async def _said(c: Any, room: str, body: str, timeout: float) -> Any:
    """Send ``body`` to ``room`` and wait for the room's echo of it."""
    echoed = asyncio.get_running_loop().create_future()

    def on_echo(m: Any) -> None:
        if m["body"] == body and not echoed.done():
            echoed.set_result(m)

    c.add_event_handler("groupchat_message", on_echo)
    try:
        c.send_message(mto=room, mbody=body, mtype="groupchat")
        return await asyncio.wait_for(echoed, timeout)
    finally:
        c.del_event_handler("groupchat_message", on_echo)


def _presences(c: Any, room: str) -> list[Any]:
    """Every presence ``c`` gets from ``room`` from now on (slixmpp raises no
    "presence" event for some occupant presences)."""
    seen: list[Any] = []
    c.register_handler(
        Callback(
            f"presences of {room}",
            MatchXPath("{jabber:client}presence"),
            lambda p: seen.append(p) if str(p["from"]).startswith(room) else None,
        )
    )
    return seen


async def test_replica_stopping_hands_over_a_temporary_room_unseen(
    cluster: LocalCluster, users: Any, login: Any
) -> None:
    """SIGTERM (a rolling update): the other replica takes the room at once,
    without waiting for node_ttl, and carries it on from its image in
    Redis: occupants stay in, the subject and history are still there, and
    nobody is told anything."""
    a, b = await users("alice", "bob")
    room = f"calm-{a.split('@')[0]}@conference.localhost"
    alice = await login(a, edge=0, plugins=PLUGINS)
    bob = await login(b, edge=1, plugins=PLUGINS)
    await _join(alice, room, "alice")
    muc = alice.plugin["xep_0045"]
    await muc.set_room_config(room, await muc.get_room_config(room))  # temporary
    await _join(bob, room, "bob")
    await _said(alice, room, "before the stop", 5)
    holder = await _holder(cluster, room)
    seen = _presences(bob, room)
    proc = cluster.proc(holder)
    stopped_at = time.monotonic()
    await proc.stop()
    got = asyncio.get_running_loop().create_future()

    def on_message(m: Any) -> None:
        if m["body"] == "after the stop" and not got.done():
            got.set_result(m)

    alice.add_event_handler("groupchat_message", on_message)
    await _said(bob, room, "after the stop", 5)  # bob never joined again
    back = time.monotonic() - stopped_at
    await asyncio.wait_for(got, 5)  # and alice, still in, hears him
    assert await _holder(cluster, room) != holder
    assert back < 3, f"took {back:.2f} s: the stopped replica's heartbeat was not removed"
    assert seen == [], [str(p) for p in seen]  # no 332, no unavailable
    # the temporary room's history came along
    (carol_jid,) = await users("carol")
    carol = await login(carol_jid, plugins=PLUGINS)
    joined = await carol.plugin["xep_0045"].join_muc_wait(room, "carol", maxstanzas=10, timeout=10)
    assert [m["body"] for m in joined[3]] == ["before the stop", "after the stop"]
    assert {str(p["from"]) for p in joined[2]} >= {f"{room}/alice", f"{room}/bob"}
    await proc.start(echo=False)
    await proc.wait_ready()


async def test_an_occupant_gone_meanwhile_leaves_the_room_it_comes_back(
    cluster: LocalCluster, users: Any, login: Any
) -> None:
    """An occupant whose session ends while no replica holds its room (its
    unavailable presence bounced) is taken out when the room comes back:
    the others see it leave."""
    a, b = await users("alice", "bob")
    room = f"ghost-{a.split('@')[0]}@conference.localhost"
    alice = await login(a, edge=0, plugins=PLUGINS)
    bob = await login(b, edge=1, plugins=PLUGINS)
    await _join(alice, room, "alice")
    muc = alice.plugin["xep_0045"]
    await muc.set_room_config(room, await muc.get_room_config(room))
    await _join(bob, room, "bob")
    holder = await _holder(cluster, room)
    seen = _presences(alice, room)
    proc = cluster.proc(holder)
    proc.kill()
    bob.disconnect()  # while nobody holds the room
    await asyncio.sleep(1.0)

    async def until_echoed() -> None:
        while True:
            try:
                await _said(alice, room, f"anyone? {time.monotonic()}", 1)
                return
            except TimeoutError:
                pass

    await asyncio.wait_for(until_echoed(), 20)
    for _ in range(50):
        if any(str(p["from"]) == f"{room}/bob" and p["type"] == "unavailable" for p in seen):
            break
        await asyncio.sleep(0.1)
    else:
        raise AssertionError(f"bob did not leave: {[str(p) for p in seen]}")
    await proc.start(echo=False)
    await proc.wait_ready()


async def test_kill_the_replica_holding_a_busy_room(
    cluster: LocalCluster, users: Any, login: Any
) -> None:
    names = await users(*(f"u{i}-" for i in range(OCCUPANTS)))
    owner_jid = names[0]
    room = f"busy-{owner_jid.split('@')[0]}@conference.localhost"
    clients = []
    for i, jid in enumerate(names):
        clients.append(await login(jid, edge=i % 2, presence=False, plugins=PLUGINS))
    owner = clients[0]
    muc = owner.plugin["xep_0045"]
    await _join(owner, room, "owner")
    form = await muc.get_room_config(room)
    form.field["muc#roomconfig_persistentroom"]["value"] = True
    form.field["muc#roomconfig_membersonly"]["value"] = True
    form.field["muc#roomconfig_historylength"]["value"] = "2000"
    await muc.set_room_config(room, form)
    for jid in names[1:]:
        await muc.set_affiliation(room, "member", jid=jid)
    await asyncio.gather(*(_join(c, room, f"n{i}") for i, c in enumerate(clients[1:], 1)))
    holder = await _holder(cluster, room)

    # a sender on each edge; every occupant counts what it receives
    acked: set[str] = set()
    sent: list[str] = []
    received = [0] * len(clients)
    for i, c in enumerate(clients):

        def on_message(m: Any, i: int = i, c: Any = c) -> None:
            if m["type"] == "groupchat" and m["body"].startswith("msg "):
                received[i] += 1
                if c is owner or c is clients[1]:
                    acked.add(m["body"])

        c.add_event_handler("groupchat_message", on_message)
    stop = asyncio.Event()

    async def send(c: Any, tag: str) -> None:
        n = 0
        while not stop.is_set():
            body = f"msg {tag} {n}"
            sent.append(body)
            c.send_message(mto=room, mbody=body, mtype="groupchat")
            n += 1
            await asyncio.sleep(0.05)

    senders = [asyncio.create_task(send(owner, "a")), asyncio.create_task(send(clients[1], "b"))]
    await asyncio.sleep(2.0)
    before = set(acked)
    assert len(before) >= 10, f"only {len(before)} messages acknowledged before the kill"

    killed_at = time.monotonic()
    cluster.proc(holder).kill()
    stop.set()
    await asyncio.gather(*senders)

    # the room answers again once the lease can be taken, with its
    # occupants: nobody joins again
    async def speak() -> float:
        while True:
            try:
                await _said(owner, room, f"probe {time.monotonic()}", 1)
                return time.monotonic()
            except TimeoutError:
                pass

    back_at = await asyncio.wait_for(speak(), 30)
    recovery = back_at - killed_at
    new_holder = await _holder(cluster, room)
    assert new_holder != holder
    # every occupant is still in: all of them hear the next message, and
    # XEP-0410 self-pings say they are joined
    heard = [asyncio.get_running_loop().create_future() for _ in clients]
    for c, f in zip(clients, heard, strict=True):
        c.add_event_handler(
            "groupchat_message",
            lambda m, f=f: f.done() or m["body"] != "after the kill" or f.set_result(True),
        )
    await _said(owner, room, "after the kill", 5)
    await asyncio.wait_for(asyncio.gather(*heard), 10)
    await clients[3].plugin["xep_0199"].send_ping(f"{room}/n3", timeout=5)

    # configuration and affiliations came back: a non-member is still refused
    (stranger,) = await users("stranger")
    s = await login(stranger, plugins=PLUGINS)
    with pytest.raises(PresenceError) as exc:
        await _join(s, room, "stranger")
    assert exc.value.condition == "registration-required"
    # every message the room had echoed before the kill is in its history
    bob = clients[2]
    joined = await bob.plugin["xep_0045"].join_muc_wait(room, "n2", maxstanzas=5000, timeout=15)
    history = {m["body"] for m in joined[3]}
    lost = before - history
    print(
        f"\nmuc failover: {OCCUPANTS} occupants on 2 edges; sent {len(sent)}, "
        f"acknowledged before the kill {len(before)}, delivered {sum(received)} copies, "
        f"lost {len(lost)}; room answering again {recovery:.2f} s after kill -9 "
        f"(node_ttl 3 s), all {OCCUPANTS} occupants still in; {holder} -> {new_holder}"
    )
    assert not lost, sorted(lost)[:5]
    assert recovery < 3 * 3 + 5  # within a few node_ttl
    await cluster.proc(holder).start(echo=False)  # for the tests after this one
    await cluster.proc(holder).wait_ready()


async def test_service_lists_public_rooms_of_every_replica(
    cluster: LocalCluster, users: Any, login: Any
) -> None:
    """disco#items of the service: the public temporary rooms held by either
    replica (their listing is part of the rooms' images in Redis); a room
    made non-public leaves the list, an ended one too."""
    (a,) = await users("alice")
    alice = await login(a, plugins=PLUGINS)
    muc = alice.plugin["xep_0045"]
    tag = a.split("@")[0]
    # three rooms whose first choice is each replica (rendezvous hashing)
    by_node: dict[str, list[str]] = {"muc1": [], "muc2": []}
    i = 0
    while min(len(v) for v in by_node.values()) < 3:
        room = f"listed{i}-{tag}@conference.localhost"
        first = rendezvous(room, list(by_node))[0]
        if len(by_node[first]) < 3:
            by_node[first].append(room)
        i += 1
    rooms = [r for pair in zip(by_node["muc1"], by_node["muc2"], strict=True) for r in pair]
    await asyncio.sleep(1.5)  # callers see a replica restarted by an earlier test
    for room in rooms:
        await _join(alice, room, "alice")
        await muc.set_room_config(room, await muc.get_room_config(room))  # instant, public
    assert {await _holder(cluster, r) for r in rooms} == {"muc1", "muc2"}
    hidden = await muc.get_room_config(rooms[0])
    hidden.field["muc#roomconfig_publicroom"]["value"] = False
    await muc.set_room_config(rooms[0], hidden)
    muc.leave_muc(rooms[1], "alice")
    await asyncio.sleep(0.5)

    async def listed() -> set[str]:
        items = await alice.plugin["xep_0030"].get_items(jid="conference.localhost", timeout=5)
        return {i[0] for i in items["disco_items"]["items"] if tag in i[0]}

    assert await listed() == set(rooms[2:])
