"""Storage and presence replicas die; the other replica carries on."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from pathlib import Path

import pytest
import pytest_asyncio

from services.app.local import LocalCluster

from ..conftest import wait_until
from .conftest import CLUSTER_MARKS, routed, running_cluster

pytestmark = CLUSTER_MARKS


@pytest_asyncio.fixture(scope="module", loop_scope="module")
async def cluster(tmp_path_factory: pytest.TempPathFactory) -> AsyncIterator[LocalCluster]:
    async with running_cluster(
        Path(tmp_path_factory.mktemp("replicas")), edges=1, routers=1, storages=2, presences=2
    ) as c:
        yield c


async def test_storage_and_presence_replica_kill(cluster, users, login):
    a, b = await users("alice", "bob")
    alice = await login(a)
    bob = await login(b)
    for c in (alice, bob):
        c.roster.auto_authorize = True
        c.roster.auto_subscribe = True
        await c.get_roster()
    # kill the first replica of each: calls fail over to the second
    for name in ("storage1", "presence1"):
        victim = cluster.proc(name)
        victim.kill()
        assert victim.process is not None
        await asyncio.wait_for(victim.process.wait(), 10)  # dead before the calls below
    # logins read credentials through storage; subscriptions go through presence
    bob2 = await login(b)
    alice.send_presence_subscription(pto=b, ptype="subscribe")
    await wait_until(
        lambda: alice.client_roster[b]["subscription"] == "both", timeout=15, what="subscription"
    )
    # offline storage still works through the surviving storage replica
    alice.send_message(mto="nobody@localhost", mbody="x", mtype="chat")
    err = await alice.next_message(10)
    assert err["type"] == "error"
    # both of bob's sessions gone: alice, now subscribed, sees each unavailable,
    # sent once the session is out of the registry
    gone = {str(bob.boundjid), str(bob2.boundjid)}
    bob.disconnect()
    bob2.disconnect()
    while gone:
        p = await alice.next_presence(15, pred=lambda p: p["type"] == "unavailable")
        gone.discard(str(p["from"]))
    alice.send_message(mto=b, mbody="stored via replica 2", mtype="chat")
    await routed(alice)  # stored by now
    bob3 = await login(b)
    assert (await bob3.next_message(10))["body"] == "stored via replica 2"
