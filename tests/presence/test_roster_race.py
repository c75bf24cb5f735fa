"""Roster writes racing across presence replicas and the admin API (issue 9, defect 6).

Two :class:`PresenceService` instances, as two replicas of ``xmppd presence``
run them, share one PostgreSQL :class:`Store`; every presence call goes to
either replica at random (in the cluster it is the *sender's* JID that picks
one, so both sides of a subscription meet on different replicas), each with
its own in-process lock. Storage calls get a little latency, as over gRPC, so
the read-modify-writes overlap. The final rosters must be what RFC 6121's
state machine gives whatever the interleaving: only the compare-and-set in
storage (``Storage.update_roster_item``) can make them so.
"""

from __future__ import annotations

import asyncio
import random
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any, cast

import pytest

from services.admin import commands
from services.core.feature import FeatureSet
from services.core.routing import Envelope, LocalEdges
from services.core.storage import RosterItem, Storage
from services.features import offline, roster
from services.features import presence as presence_feature
from services.platform.config import Settings
from services.presence.service import PresenceService
from services.router.registry import LocalRegistry
from services.router.service import RouterService
from services.storage.store import Store
from services.xmpp import stanza as st
from services.xmpp.jid import JID
from tests.platform import temp_database_url
from tests.presence.conftest import HOST, FakeEdge

ROUNDS = 12


class Latency:
    """A Storage whose every call first waits up to a millisecond (a gRPC hop)."""

    def __init__(self, store: Store, rng: random.Random) -> None:
        self._store = store
        self._rng = rng

    def __getattr__(self, name: str) -> Any:
        method = getattr(self._store, name)

        async def call(*args: Any, **kwargs: Any) -> Any:
            await asyncio.sleep(self._rng.random() / 1000)
            return await method(*args, **kwargs)

        return call


class Replicas:
    """What the routers' presence client does: each call goes to one of the
    replicas, here chosen at random so both meet every item."""

    def __init__(self, replicas: list[PresenceService], rng: random.Random) -> None:
        self._replicas = replicas
        self._rng = rng

    def __getattr__(self, name: str) -> Any:
        return getattr(self._rng.choice(self._replicas), name)


@pytest.fixture
async def cluster(tmp_path: Path) -> AsyncIterator[tuple[Store, list[RouterService], Replicas]]:
    rng = random.Random(6121)
    async with temp_database_url("postgres", tmp_path) as url:
        store = await Store.open(url)
        storage = cast(Storage, Latency(store, rng))
        settings = Settings.load(env={}, hosts=[HOST])
        registry, edge = LocalRegistry(), FakeEdge()
        routers: list[RouterService] = []
        replicas: list[PresenceService] = []
        # every router reaches the presence replicas at random, as over gRPC
        spread = Replicas(replicas, rng)
        features = FeatureSet([roster.FEATURE, presence_feature.FEATURE, offline.FEATURE])
        for _ in range(2):
            router = RouterService(
                settings,
                storage,
                registry,
                features,
                edges=LocalEdges({edge.node_id: edge}),
                presence=lambda _ctx: cast(PresenceService, spread),
            )
            routers.append(router)
            replicas.append(PresenceService(router))
        try:
            yield store, routers, spread
        finally:
            await store.close()


async def test_concurrent_subscriptions_across_replicas_and_admin(
    cluster: tuple[Store, list[RouterService], Replicas],
) -> None:
    store, routers, presence = cluster
    rng = random.Random(7)
    admin = commands.AdminContext(cast(Storage, store), [HOST], router=routers[0])

    async def send(frm: JID, to: JID, typ: str) -> None:
        """A client's subscription stanza, routed by either router."""
        el = st.make("presence", to=to, type_=typ)
        el.set("from", str(frm))
        await rng.choice(routers).route(Envelope.of(el, frm, to))

    for n in range(ROUNDS):
        names = (f"alice{n}", f"bob{n}", f"carol{n}")
        for name in names:
            assert await store.create_account(HOST, name, [])
        alice, bob, carol = (JID.parse(f"{name}@{HOST}") for name in names)
        a, b = JID.parse(f"{alice}/pc"), JID.parse(f"{bob}/pc")
        ops = [
            # both ask and both approve: approvals may come before the request
            # arrives (pre-approval, RFC 6121 3.4) or after (pending in)
            send(a, bob, "subscribe"),
            send(b, alice, "subscribe"),
            send(a, bob, "subscribed"),
            send(b, alice, "subscribed"),
            # alice names bob (the roster IQ) while the subscription changes
            presence.roster_set(alice, bob, "Bob", ("Friends",)),
            # an administrator subscribes alice and carol while alice renames carol
            commands.set_roster_item(
                admin, str(alice), str(carol), name="Carol", subscription="both"
            ),
            presence.roster_set(alice, carol, "C", ("G",)),
        ]
        rng.shuffle(ops)
        await asyncio.gather(*ops)

        assert await store.get_roster_item(HOST, f"alice{n}", str(bob)) == RosterItem(
            jid=str(bob), name="Bob", subscription="both", groups=("Friends",)
        ), f"round {n}"
        assert await store.get_roster_item(HOST, f"bob{n}", str(alice)) == RosterItem(
            jid=str(alice), subscription="both"
        ), f"round {n}"
        # whichever wrote last, the admin's subscription was not reverted
        to_carol = await store.get_roster_item(HOST, f"alice{n}", str(carol))
        assert to_carol is not None and to_carol.subscription == "both", f"round {n}"
        assert (to_carol.name, to_carol.groups) in (("Carol", ()), ("C", ("G",)))
