"""Roster changes through two presence processes and the admin commands at
once (issue 9, defect 6), against the real storage process and PostgreSQL.

The calls go to the presence replicas as a router sends them (PresenceClient,
by the sender's JID), for pairs of users mapped to different replicas: each
replica changes both users' rosters (its own user's outbound side, the
contact's inbound side), with nothing but storage's compare-and-set between
them.
"""

from __future__ import annotations

import asyncio
import random
import secrets
from collections.abc import AsyncIterator, Awaitable
from pathlib import Path
from typing import Any

import pytest
import pytest_asyncio

from services.admin import commands
from services.app.local import LocalCluster
from services.cluster.presence_rpc import PresenceClient
from services.cluster.rpc import Channels, affinity
from services.core.routing import Envelope
from services.core.storage import RosterItem
from services.platform.db import open_database
from services.storage.store import Store
from services.xmpp import stanza as st
from services.xmpp.jid import JID

from .conftest import CLUSTER_MARKS, running_cluster

pytestmark = CLUSTER_MARKS

HOST = "localhost"
PAIRS = 12


@pytest_asyncio.fixture(scope="module", loop_scope="module")
async def cluster(tmp_path_factory: pytest.TempPathFactory) -> AsyncIterator[LocalCluster]:
    async with running_cluster(
        Path(tmp_path_factory.mktemp("rosters")), edges=1, routers=1, presences=2
    ) as c:
        yield c


def split_pair(tag: str, n: int) -> tuple[JID, JID]:
    """Two users whose calls go to different presence replicas."""
    alice = JID.parse(f"alice{n}{tag}@{HOST}")
    for i in range(100):
        bob = JID.parse(f"bob{n}x{i}{tag}@{HOST}")
        if affinity((alice,), 2) != affinity((bob,), 2):
            return alice, bob
    raise AssertionError("no split pair")


async def test_subscriptions_through_two_presence_replicas(cluster: LocalCluster) -> None:
    assert len(cluster.presence_addrs) == 2
    channels = Channels()
    presence = PresenceClient(cluster.presence_addrs, channels)
    store = Store(await open_database(cluster.database_url))
    admin = commands.AdminContext(store, [HOST])
    rng = random.Random(6121)
    tag = secrets.token_hex(3)
    try:
        pairs = [split_pair(tag, n) for n in range(PAIRS)]
        ops: list[Awaitable[Any]] = []
        for n, (alice, bob) in enumerate(pairs):
            carol = JID.parse(f"carol{n}{tag}@{HOST}")
            for user in (alice, bob, carol):
                assert user.local is not None
                assert await store.create_account(HOST, user.local, [])

            def outbound(frm: JID, to: JID, typ: str) -> Awaitable[Any]:
                full = JID.parse(f"{frm}/pc")
                el = st.make("presence", to=to, type_=typ)
                el.set("from", str(full))
                call: Awaitable[Any] = presence.outbound(Envelope.of(el, full, to))
                return call

            ops += [
                outbound(alice, bob, "subscribe"),
                outbound(bob, alice, "subscribe"),
                outbound(alice, bob, "subscribed"),
                outbound(bob, alice, "subscribed"),
                presence.roster_set(alice, bob, "Bob", ("Friends",)),
                commands.set_roster_item(
                    admin, str(alice), str(carol), name="Carol", subscription="both"
                ),
                presence.roster_set(alice, carol, "C", ("G",)),
            ]
        rng.shuffle(ops)
        await asyncio.wait_for(asyncio.gather(*ops), 60)

        for n, (alice, bob) in enumerate(pairs):
            assert alice.local is not None and bob.local is not None
            assert await store.get_roster_item(HOST, alice.local, str(bob)) == RosterItem(
                jid=str(bob), name="Bob", subscription="both", groups=("Friends",)
            ), f"pair {n}"
            assert await store.get_roster_item(HOST, bob.local, str(alice)) == RosterItem(
                jid=str(alice), subscription="both"
            ), f"pair {n}"
            to_carol = await store.get_roster_item(HOST, alice.local, f"carol{n}{tag}@{HOST}")
            assert to_carol is not None and to_carol.subscription == "both", f"pair {n}"
    finally:
        await store.close()
        await channels.close()
