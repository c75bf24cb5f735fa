"""Group chat over two muc replicas: each room is held by one replica (a
lease in Redis), and kill -9 of the replica holding a busy persistent room
brings the room back on the other one, with its configuration, affiliations
and every message the room had acknowledged (echoed) before the kill."""

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
    (a,) = await users("alice")
    alice = await login(a, plugins=PLUGINS)
    holders = set()
    for i in range(8):
        room = f"spread{i}-{a.split('@')[0]}@conference.localhost"
        await _join(alice, room, "alice")
        holders.add(await _holder(cluster, room))
    # rendezvous hashing over two live replicas: 8 rooms all on one has p = 2/256
    assert holders == {"muc1", "muc2"}


async def test_replica_stopping_tells_occupants_and_hands_over_at_once(
    cluster: LocalCluster, users: Any, login: Any
) -> None:
    """SIGTERM (a rolling update): occupants get status 332 and join again;
    the other replica takes the room without waiting for node_ttl."""
    a, b = await users("alice", "bob")
    room = f"calm-{a.split('@')[0]}@conference.localhost"
    alice = await login(a, edge=0, plugins=PLUGINS)
    bob = await login(b, edge=1, plugins=PLUGINS)
    await _join(alice, room, "alice")
    await alice.plugin["xep_0045"].set_room_config(
        room, await alice.plugin["xep_0045"].get_room_config(room)
    )
    await _join(bob, room, "bob")
    holder = await _holder(cluster, room)
    out = asyncio.get_running_loop().create_future()

    def on_presence(p: Any) -> None:
        if str(p["from"]) == f"{room}/bob" and p["type"] == "unavailable" and not out.done():
            out.set_result(p)

    # every <presence/>: slixmpp raises no "presence" event for some occupant presences
    bob.register_handler(
        Callback("all presences", MatchXPath("{jabber:client}presence"), on_presence)
    )
    proc = cluster.proc(holder)
    stopped_at = time.monotonic()
    await proc.stop()
    p = await asyncio.wait_for(out, 10)
    assert "332" in str(p) and "110" in str(p)
    # a temporary room ended with its holder; joining makes it anew, elsewhere
    await _join(bob, room, "bob")
    back = time.monotonic() - stopped_at
    assert await _holder(cluster, room) != holder
    assert back < 3, f"took {back:.2f} s: the stopped replica's heartbeat was not removed"
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

    # the room answers again once the lease can be taken; a client that finds
    # itself out of the room (not-acceptable) joins again, as XEP-0410 has it
    async def rejoin_and_speak() -> float:
        while True:
            try:
                await _join(owner, room, "owner", timeout=2)
                body = f"msg after {time.monotonic()}"
                echoed = asyncio.get_running_loop().create_future()

                def on_echo(m: Any, body: str = body, echoed: Any = echoed) -> None:
                    if m["body"] == body and not echoed.done():
                        echoed.set_result(time.monotonic())

                owner.add_event_handler("groupchat_message", on_echo)
                owner.send_message(mto=room, mbody=body, mtype="groupchat")
                try:
                    return await asyncio.wait_for(echoed, 2)
                finally:
                    owner.del_event_handler("groupchat_message", on_echo)
            except (PresenceError, TimeoutError):
                await asyncio.sleep(0.2)

    back_at = await asyncio.wait_for(rejoin_and_speak(), 30)
    recovery = back_at - killed_at
    new_holder = await _holder(cluster, room)
    assert new_holder != holder

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
        f"(node_ttl 3 s); {holder} -> {new_holder}"
    )
    assert not lost, sorted(lost)[:5]
    assert recovery < 3 * 3 + 5  # within a few node_ttl
